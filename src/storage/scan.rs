//! Recovery reporting and the CRC scan of sealed segments (docs/durability.md,
//! "What recovery does").
//!
//! Owns: [`RecoveryStats`] (what `Log::open` did: segments, bytes scanned and
//! truncated, indexes rebuilt, damage found) and its one-line summary;
//! [`check_segment`] (read every batch of a segment, CRC and offset sequence,
//! report each corrupt batch and carry on past it); and the background scan
//! of a partition's sealed segments ([`spawn_sealed_scan`]).
//!
//! Invariants: scanning never writes: a sealed segment is never truncated,
//! rewritten or deleted here; damage is only reported (fetches that reach it
//! get CorruptData from the read path, which CRC-checks every batch anyway).
//! At most one background scan runs per shard (thread) at a time, in a
//! low-share task queue, so a restart with many partitions does not flood
//! the disk or starve the data path.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use glommio::{Latency, Shares, TaskQueueHandle};
use tracing::{error, info, warn};

use super::segment::{Next, Segment};
use super::StorageError;

/// A batch that failed its checks in a sealed segment.
#[derive(Debug, Clone)]
pub struct CorruptBatch {
    pub file: PathBuf,
    /// Byte position of the batch in the file.
    pub position: u64,
    /// First offset the batch should hold (the offset after the last good
    /// batch before it).
    pub offset: u64,
    pub reason: String,
}

/// What recovery did to one partition's log at open.
#[derive(Debug, Clone, Default)]
pub struct RecoveryStats {
    /// Segment files found.
    pub segments: usize,
    /// Segments CRC-scanned at open (the active one, and sealed ones whose
    /// indexes had to be rebuilt).
    pub segments_scanned: usize,
    /// Bytes CRC-scanned at open.
    pub bytes_scanned: u64,
    /// Bytes cut off the active segment's tail (torn or corrupt).
    pub bytes_truncated: u64,
    /// Segments whose `.index`/`.timeindex` were missing or stale and were
    /// rebuilt by a scan.
    pub indexes_rebuilt: usize,
    /// Sealed segments whose rebuild scan stopped at invalid data (served
    /// only up to it, never truncated).
    pub sealed_damage: Vec<CorruptBatch>,
    /// Invalid data in the active segment below the recovery point (or a
    /// log that ends before it): acknowledged data is damaged or missing.
    /// Left in place, never truncated; the partition serves up to it and
    /// refuses appends (docs/storage.md, "Recovery").
    pub acked_damage: Option<CorruptBatch>,
    /// The recovery point read at open (0 without a checkpoint).
    pub recovery_point: u64,
    /// Places where one segment's next offset is not the next one's base.
    pub gaps: usize,
    /// `.index`/`.timeindex` files removed because their segment's log was
    /// gone (a retention delete interrupted by a crash).
    pub orphans_removed: usize,
    /// Time the open took, in ms.
    pub elapsed_ms: u64,
}

impl RecoveryStats {
    /// Whether recovery changed or found something worth a line at the
    /// default log level (truncation, rebuilt indexes, damage, gaps, orphans).
    pub fn notable(&self) -> bool {
        self.bytes_truncated > 0
            || self.indexes_rebuilt > 0
            || !self.sealed_damage.is_empty()
            || self.gaps > 0
            || self.orphans_removed > 0
            || self.acked_damage.is_some()
    }

    /// Logs the one-line summary (info if [`RecoveryStats::notable`], else
    /// debug: the shard logs one summary for all its partitions), and each
    /// damaged sealed segment (error). A new partition (no segment files
    /// were found) logs nothing.
    pub fn log(&self, topic: &str, partition: u32, log_start: u64, next_offset: u64) {
        if self.segments == 0 {
            return;
        }
        for d in &self.sealed_damage {
            error!(topic = %topic, partition, offset = d.offset, file = %d.file.display(),
                position = d.position, reason = %d.reason,
                "corrupt batch in a sealed segment: served only up to it (fetches that reach it get CorruptData)");
        }
        if let Some(d) = &self.acked_damage {
            error!(topic = %topic, partition, offset = d.offset, file = %d.file.display(),
                position = d.position, recovery_point = self.recovery_point, reason = %d.reason,
                "acknowledged data below the recovery point is damaged: NOT truncated; served up to offset {}, \
                 fetches past it get CorruptData and appends are refused until an operator acts (docs/storage.md, \"Acknowledged damage\")",
                d.offset);
        }
        // One summary format at either level: info when recovery did
        // something worth reading, debug otherwise (the shard logs one line
        // for all its partitions).
        macro_rules! summary {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    topic = %topic,
                    partition,
                    segments = self.segments,
                    recovery_point = self.recovery_point,
                    segments_scanned = self.segments_scanned,
                    bytes_scanned = self.bytes_scanned,
                    bytes_truncated = self.bytes_truncated,
                    indexes_rebuilt = self.indexes_rebuilt,
                    sealed_damaged = self.sealed_damage.len(),
                    gaps = self.gaps,
                    orphans_removed = self.orphans_removed,
                    log_start,
                    next_offset,
                    elapsed_ms = self.elapsed_ms,
                    "recovered partition"
                )
            };
        }
        if self.notable() {
            summary!(tracing::Level::INFO);
        } else {
            summary!(tracing::Level::DEBUG);
        }
    }
}

/// Result of [`check_segment`].
#[derive(Debug, Default)]
pub struct SegmentCheck {
    /// Good batches and their bytes.
    pub batches: u64,
    pub bytes: u64,
    pub corrupt: Vec<CorruptBatch>,
    /// Bytes after damage the scan could not resynchronize past.
    pub unverified_bytes: u64,
    /// The scan stopped early because `alive` said so.
    pub stopped: bool,
}

/// Reads every batch of `seg` up to its logical size: CRC, record count and
/// offset sequence. A bad batch is recorded and skipped — by its own length
/// when its header is plausible and another batch (or the end) follows it,
/// else to the next offset-index entry — so one flipped bit does not hide
/// the rest of the segment. Read-only.
pub async fn check_segment(
    seg: &Segment,
    alive: &dyn Fn() -> bool,
) -> Result<SegmentCheck, StorageError> {
    let limit = seg.log_bytes();
    let mut out = SegmentCheck::default();
    let mut expected = seg.base_offset();
    let mut cur = seg
        .cursor(0, limit, Some(expected))
        .with_read_bytes(SCAN_READ_BYTES);
    loop {
        if !alive() {
            out.stopped = true;
            break;
        }
        match cur.next().await? {
            Next::Batch(h, b) => {
                out.batches += 1;
                out.bytes += b.len() as u64;
                expected = h.next_offset();
            }
            Next::End => break,
            Next::Invalid { pos, reason } => {
                out.corrupt.push(CorruptBatch {
                    file: seg.log_path().to_path_buf(),
                    position: pos,
                    offset: expected,
                    reason,
                });
                let mut resume = None;
                if let Some(h) = seg.header_at(pos).await? {
                    let after = pos + h.total_bytes() as u64;
                    if after == limit || seg.header_at(after).await?.is_some() {
                        resume = Some((after, h.next_offset()));
                    }
                }
                if resume.is_none() {
                    resume = seg.index_entry_after(pos);
                }
                let Some((at, offset)) = resume else {
                    out.unverified_bytes = limit - pos;
                    break;
                };
                expected = offset;
                // The skipped batch's own offsets cannot be trusted: accept
                // whatever base offset the next good batch carries.
                cur = seg.cursor(at, limit, None).with_read_bytes(SCAN_READ_BYTES);
            }
        }
        glommio::yield_if_needed().await;
    }
    Ok(out)
}

/// Bytes per read of the background scan (sequential direct reads: big
/// reads keep the device busy; one scan per shard holds one such buffer).
const SCAN_READ_BYTES: usize = 1024 * 1024;

/// Shares of the background scan's task queue (the default queue has 1000):
/// under contention the scan gets about a tenth of the shard's CPU.
const SCAN_QUEUE_SHARES: usize = 100;

thread_local! {
    /// This shard's scan task queue and the one-scan-at-a-time gate.
    static SCAN_LANE: RefCell<Option<(TaskQueueHandle, Rc<Semaphore>)>> = const { RefCell::new(None) };
}

fn scan_lane() -> (Option<TaskQueueHandle>, Rc<Semaphore>) {
    SCAN_LANE.with(|l| {
        let mut l = l.borrow_mut();
        let (tq, gate) = l.get_or_insert_with(|| {
            let tq = glommio::executor().create_task_queue(
                Shares::Static(SCAN_QUEUE_SHARES),
                Latency::NotImportant,
                "sealed-segment-scan",
            );
            (tq, Rc::new(Semaphore::new(1)))
        });
        (Some(*tq), gate.clone())
    })
}

/// Starts the background CRC scan of one partition's sealed segments.
/// `next(after)` returns the first sealed segment with a base offset above
/// `after` (any, for `None`), or `None` when there is none or the partition
/// is closing; `alive` says whether to keep going. Logs an `error!` per
/// corrupt batch (topic, partition, offset, file) and a summary at the end.
pub fn spawn_sealed_scan(
    topic: String,
    partition: u32,
    next: impl Fn(Option<u64>) -> Option<Rc<Segment>> + 'static,
    alive: impl Fn() -> bool + 'static,
) {
    let (tq, gate) = scan_lane();
    let task = async move {
        let Ok(_permit) = gate.acquire_permit(1).await else {
            return;
        };
        if !alive() {
            return;
        }
        let began = Instant::now();
        let (mut segments, mut batches, mut bytes, mut corrupt, mut unverified) = (0, 0, 0, 0, 0);
        let mut after = None;
        while let Some(seg) = next(after) {
            after = Some(seg.base_offset());
            let check = match check_segment(&seg, &alive).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(topic = %topic, partition, file = %seg.log_path().display(), error = %e,
                        "sealed segment scan could not read the segment; skipped");
                    continue;
                }
            };
            segments += 1;
            batches += check.batches;
            bytes += check.bytes;
            unverified += check.unverified_bytes;
            for c in &check.corrupt {
                corrupt += 1;
                error!(topic = %topic, partition, offset = c.offset, file = %c.file.display(),
                    position = c.position, reason = %c.reason,
                    "corrupt batch in a sealed segment: not served (fetches that reach it get CorruptData); the segment is kept as it is");
            }
            if check.unverified_bytes > 0 {
                error!(topic = %topic, partition, file = %seg.log_path().display(),
                    bytes = check.unverified_bytes,
                    "could not resynchronize after damage; the rest of the segment is unverified");
            }
            if check.stopped {
                return;
            }
        }
        let elapsed = began.elapsed();
        info!(
            topic = %topic,
            partition,
            segments,
            batches,
            bytes,
            corrupt,
            unverified_bytes = unverified,
            elapsed_ms = elapsed.as_millis() as u64,
            mib_per_s = mib_per_s(bytes, elapsed),
            "sealed segments CRC-checked"
        );
    };
    let spawned = match tq {
        Some(tq) => glommio::spawn_local_into(task, tq).map(|t| t.detach()),
        None => Ok(glommio::spawn_local(task).detach()),
    };
    if let Err(e) = spawned {
        warn!(error = %e, "could not start the sealed segment scan");
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return 0;
    }
    (bytes as f64 / s / (1024.0 * 1024.0)) as u64
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use bytes::Bytes;

    use super::*;
    use crate::protocol::batch::{self, BatchBuilder, HEADER_BYTES};
    use crate::storage::log::Log;

    fn run<Fut: std::future::Future<Output = ()> + 'static>(
        f: impl FnOnce() -> Fut + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(f)
            .expect("spawn executor")
            .join()
            .expect("executor thread");
    }

    fn batch(records: u32) -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b.push(1_000 + i as i64, None, Some(&[b'x'; 200]), &[]);
        }
        b.finish()
    }

    /// A log with one sealed segment of `n` 3-record batches (index entry
    /// every 1 KiB); returns the batch positions and the sealed file.
    async fn sealed_log(dir: &std::path::Path, n: u64) -> (Vec<u64>, PathBuf) {
        let log = Log::open(dir, 1024, crate::io::Io::real())
            .await
            .expect("open");
        let mut positions = Vec::new();
        for i in 0..n {
            let seg = log.active();
            positions.push(seg.log_bytes());
            let stamp = crate::protocol::batch::Stamp {
                base_offset: i * 3,
                leader_epoch: 0,
            };
            seg.append(&[(batch(3), Some(stamp))], false)
                .await
                .expect("append");
        }
        let sealed = log.active();
        log.roll().await.expect("roll");
        log.close().await.expect("close");
        (positions, sealed.log_path().to_path_buf())
    }

    fn patch(path: &std::path::Path, pos: u64, f: impl FnOnce(&mut [u8])) {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open");
        let mut b = [0u8; HEADER_BYTES + 8];
        file.seek(SeekFrom::Start(pos)).expect("seek");
        file.read_exact(&mut b).expect("read");
        f(&mut b);
        file.seek(SeekFrom::Start(pos)).expect("seek");
        file.write_all(&b).expect("write");
        file.sync_all().expect("sync");
    }

    async fn check_first(dir: &std::path::Path) -> (SegmentCheck, RecoveryStats) {
        let log = Log::open(dir, 1024, crate::io::Io::real())
            .await
            .expect("reopen");
        let seg = log.next_sealed_after(None).expect("a sealed segment");
        let c = check_segment(&seg, &|| true).await.expect("check");
        (c, log.recovery().clone())
    }

    #[test]
    fn crc_flip_is_reported_and_the_rest_checked() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (pos, _file) = sealed_log(dir.path(), 20).await;
            let file = crate::storage::segment_file_name(0, "log");
            patch(&dir.path().join(&file), pos[7], |b| {
                b[HEADER_BYTES + 3] ^= 1
            });
            let damaged = std::fs::read(dir.path().join(&file)).expect("read");
            let (c, stats) = check_first(dir.path()).await;
            assert_eq!(stats.indexes_rebuilt, 0, "indexes still match the file");
            assert_eq!(c.corrupt.len(), 1, "{:?}", c.corrupt);
            assert_eq!(c.corrupt[0].offset, 21);
            assert_eq!(c.corrupt[0].position, pos[7]);
            assert_eq!(c.batches, 19, "every other batch is checked");
            assert_eq!(c.unverified_bytes, 0);
            // Read-only: the segment file is exactly as it was.
            let after = std::fs::read(dir.path().join(&file)).expect("read");
            assert!(after == damaged, "the scan changed the file");
        });
    }

    #[test]
    fn broken_length_resumes_at_the_next_index_entry() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (pos, _file) = sealed_log(dir.path(), 20).await;
            let file = crate::storage::segment_file_name(0, "log");
            // batchLength (outside the CRC) of batch 5 made huge.
            patch(&dir.path().join(&file), pos[5], |b| {
                b[batch::offsets::LENGTH..][..4].copy_from_slice(&i32::MAX.to_be_bytes())
            });
            let (c, _) = check_first(dir.path()).await;
            assert_eq!(c.corrupt.len(), 1, "{:?}", c.corrupt);
            assert_eq!(c.corrupt[0].offset, 15);
            assert_eq!(c.unverified_bytes, 0, "resynchronized on the index");
            assert!(c.batches >= 16, "most batches still checked: {}", c.batches);
        });
    }

    #[test]
    fn recovery_counts_what_it_did() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            sealed_log(dir.path(), 5).await;
            std::fs::remove_file(
                dir.path()
                    .join(crate::storage::segment_file_name(0, "index")),
            )
            .expect("rm index");
            // What a crash in the middle of a retention delete leaves.
            let orphan = dir
                .path()
                .join(crate::storage::segment_file_name(9999, "timeindex"));
            std::fs::write(&orphan, b"x").expect("orphan");
            let (_, stats) = check_first(dir.path()).await;
            assert!(!orphan.exists(), "orphan index removed");
            assert_eq!(stats.orphans_removed, 1);
            assert_eq!(stats.segments, 2);
            assert_eq!(stats.indexes_rebuilt, 1);
            assert_eq!(
                stats.segments_scanned, 2,
                "the rebuilt one and the active one"
            );
            assert_eq!(stats.bytes_truncated, 0);
            assert!(stats.sealed_damage.is_empty());
        });
    }
}
