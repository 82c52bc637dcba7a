//! Partition + storage tests; each runs inside its own glommio executor with a
//! temp data dir. No timed assertions: waits are bounded by count.

use std::future::Future;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;

use super::*;
use crate::config::FlushPolicy;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::batch::{self, Stamp};
use crate::protocol::messages::OffsetSpec;
use crate::protocol::ErrorCode;
use crate::storage::{checkpoint, StorageError};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

fn cfg(segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        segment_bytes,
        index_interval_bytes: 1024,
        ..TopicConfig::default()
    }
}

const LIMITS: PartitionLimits = PartitionLimits {
    max_batch_bytes: 1 << 20,
    max_decompressed_batch_bytes: 4 << 20,
    retention_check_interval_ms: 3_600_000,
    recovery_scan: crate::config::RecoveryScan::Sealed,
    producer_id_expiration_ms: 86_400_000,
};

async fn open(dir: &Path, c: &TopicConfig) -> Rc<Partition> {
    Partition::open(
        TopicPartition::new("t", 0),
        dir.to_path_buf(),
        c.clone(),
        LIMITS,
    )
    .await
    .expect("open partition")
}

/// A batch of `n` records; record i has timestamp `ts + i` and a value that
/// names its batch tag and index.
fn batch(tag: u64, n: u32, ts: i64, value_bytes: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let mut v = format!("{tag}:{i}:").into_bytes();
        v.resize(value_bytes.max(v.len()), b'x');
        b.push(ts + i as i64, None, Some(&v), &[]);
    }
    b.finish()
}

/// Every (offset, timestamp, value) from log start to the high watermark.
async fn read_all(p: &Partition) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = p.log_start_offset();
    let mut rounds = 0;
    while next < p.high_watermark() {
        rounds += 1;
        assert!(rounds < 100_000, "read_all does not progress");
        let d = p.fetch(next, 8192).await.expect("fetch");
        assert!(!d.records.is_empty(), "empty fetch below hw at {next}");
        for item in batch::batches(&d.records.to_bytes()) {
            let (h, b) = item.expect("batch");
            batch::validate(b).expect("fetched batch is valid");
            for r in batch::records(b).expect("records") {
                let r = r.expect("record");
                let off = h.base_offset + r.offset_delta as u64;
                if off >= next {
                    out.push((
                        off,
                        h.first_timestamp_ms + r.timestamp_delta,
                        r.value.unwrap_or_default().to_vec(),
                    ));
                }
            }
            next = next.max(h.next_offset());
        }
    }
    out
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Appends `count` batches of 5 records and waits for all; returns the
/// batch boundaries (base offsets).
async fn fill(p: &Rc<Partition>, count: u64, value_bytes: usize) -> Vec<u64> {
    let mut tickets = Vec::new();
    for i in 0..count {
        tickets.push(
            p.append(batch(i, 5, 1000 + 10 * i as i64, value_bytes))
                .expect("append"),
        );
    }
    let mut bases = Vec::new();
    for t in tickets {
        bases.push(t.wait().await.expect("durable").base_offset);
    }
    bases
}

fn check_sequence(all: &[(u64, i64, Vec<u8>)], from: u64, to: u64) {
    let offs: Vec<u64> = all.iter().map(|r| r.0).collect();
    assert_eq!(offs, (from..to).collect::<Vec<_>>());
    for (off, _, v) in all {
        let want = format!("{}:{}:", off / 5, off % 5);
        assert!(
            v.starts_with(want.as_bytes()),
            "offset {off} has wrong value"
        );
    }
}

#[test]
fn round_trip_across_segment_rolls() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        let bases = fill(&p, 120, 400).await;
        assert_eq!(bases[3], 15);
        assert_eq!(p.high_watermark(), 600);
        assert_eq!(p.log_end_offset(), 600);
        assert!(
            files(dir.path(), "log").len() >= 4,
            "expected several segments"
        );
        check_sequence(&read_all(&p).await, 0, 600);
        // Mid-batch and mid-segment fetches start at the containing batch.
        for off in [0u64, 7, 299, 301, 599] {
            let d = p.fetch(off, 1).await.expect("fetch");
            let (h, _) = batch::batches(&d.records.to_bytes())
                .next()
                .expect("one")
                .expect("ok");
            assert!(h.base_offset <= off && off <= h.last_offset());
            assert_eq!(
                batch::batches(&d.records.to_bytes()).count(),
                1,
                "max_bytes=1: one batch"
            );
        }
        // flush=always writes through a second handle once pages are zeroed
        // ahead (from a segment's second append on); a sealed segment keeps
        // only its plain one (one fd per sealed segment).
        for i in 0..2 {
            let t = p.append(batch(600 + i, 1, 0, 10)).expect("append");
            t.wait().await.expect("durable");
        }
        let segs = p.log.segments();
        assert!(segs.len() >= 4);
        for s in &segs[..segs.len() - 1] {
            assert!(s.is_sealed() && !s.has_write_through_handle());
        }
        assert!(
            segs.last().is_some_and(|s| s.has_write_through_handle()),
            "the active segment wrote through"
        );
        p.close().await.expect("close");
        // Sealed (and closed) segments are trimmed to their data's last
        // page: the zeros written ahead of small appends are gone (the
        // trim of a sealed segment runs off the write path, so wait for it).
        let data_pages: Vec<u64> = p
            .log
            .segments()
            .iter()
            .map(|s| s.log_bytes().div_ceil(4096) * 4096)
            .collect();
        let sizes = || -> Vec<u64> {
            let mut logs = files(dir.path(), "log");
            logs.sort();
            logs.iter()
                .map(|f| std::fs::metadata(f).expect("stat").len())
                .collect()
        };
        let mut rounds = 0;
        while sizes() != data_pages {
            rounds += 1;
            assert!(
                rounds < 2_000,
                "segments not trimmed: {:?} vs data {data_pages:?}",
                sizes()
            );
            crate::timer::sleep_once(std::time::Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn group_commit_shares_fdatasyncs() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        let before = p.fdatasync_count();
        fill(&p, 200, 50).await;
        let syncs = p.fdatasync_count() - before;
        assert!(
            (1..200).contains(&syncs),
            "{syncs} fdatasyncs for 200 appends"
        );
        assert_eq!(p.high_watermark(), 1000);
        p.close().await.expect("close");
    });
}

#[test]
fn reopen_keeps_everything_and_resumes_offsets() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 * 1024);
        let p = open(dir.path(), &c).await;
        fill(&p, 60, 400).await;
        p.close().await.expect("close");
        assert!(matches!(
            p.append(batch(0, 1, 0, 1)),
            Err(PartitionError::Closed(_))
        ));
        assert!(matches!(
            p.fetch(0, 100).await,
            Err(PartitionError::Closed(_))
        ));
        assert!(!files(dir.path(), "index").is_empty());
        drop(p);
        let p = open(dir.path(), &c).await;
        assert_eq!((p.log_end_offset(), p.high_watermark()), (300, 300));
        let t = p.append(batch(60, 5, 5000, 400)).expect("append");
        assert_eq!(t.result().base_offset, 300);
        t.wait().await.expect("durable");
        check_sequence(&read_all(&p).await, 0, 305);
        p.close().await.expect("close");
        // Empty partition: open, close, reopen.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let q = open(dir2.path(), &c).await;
        q.close().await.expect("close");
        let q = open(dir2.path(), &c).await;
        assert_eq!(q.log_end_offset(), 0);
        assert_eq!(q.fetch(0, 100).await.expect("fetch").records.len(), 0);
    });
}

fn last_log(dir: &Path) -> PathBuf {
    files(dir, "log").pop().expect("a log file")
}

/// Writes 10 batches, "crashes" (drops without close), then `damage`s the
/// active log file given the byte range of its last batch, reopens and
/// checks that exactly `expect_batches` batches survive and appends resume.
fn crash_and_damage(damage: impl FnOnce(&Path, u64, u64) + Send + 'static, expect_batches: u64) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    run(move || async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 << 20);
        let p = open(dir.path(), &c).await;
        fill(&p, 9, 100).await;
        let d = p.fetch(40, 1 << 20).await.expect("fetch");
        let last_len = d.records.len() as u64;
        let last_pos = {
            let whole = p.fetch(0, 1 << 20).await.expect("fetch");
            whole.records.len() as u64 - last_len
        };
        drop(p); // crash: no close, no index files
        damage(&last_log(dir.path()), last_pos, last_len);
        let p = open(dir.path(), &c).await;
        assert_eq!(p.log_end_offset(), expect_batches * 5);
        let t = p.append(batch(expect_batches, 5, 99, 100)).expect("append");
        t.wait().await.expect("durable");
        check_sequence(&read_all(&p).await, 0, expect_batches * 5 + 5);
        p.close().await.expect("close");
        drop(p);
        let p = open(dir.path(), &c).await;
        assert_eq!(p.log_end_offset(), expect_batches * 5 + 5);
    });
}

#[test]
fn torn_tail_is_truncated() {
    let mut rng = rand::thread_rng();
    for _ in 0..4 {
        let cut: u64 = rng.gen_range(1..200);
        crash_and_damage(
            move |log, pos, len| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(log)
                    .expect("open");
                f.set_len(pos + cut.min(len - 1)).expect("cut");
            },
            8,
        );
    }
}

#[test]
fn garbage_after_last_batch_is_truncated() {
    crash_and_damage(
        |log, pos, len| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(log)
                .expect("open");
            f.seek(SeekFrom::Start(pos + len)).expect("seek");
            let junk: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 + 1).collect();
            f.write_all(&junk).expect("junk");
        },
        9,
    );
}

#[test]
fn zero_filled_tail_is_ignored() {
    crash_and_damage(
        |log, _, _| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(log)
                .expect("open");
            let len = f.metadata().expect("meta").len();
            f.set_len(len + 3 * 4096).expect("extend");
        },
        9,
    );
}

#[test]
fn corrupt_middle_batch_truncates_from_there() {
    crash_and_damage(
        |log, pos, _| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(log)
                .expect("open");
            f.seek(SeekFrom::Start(pos + 70)).expect("seek");
            f.write_all(b"\xff\xfe").expect("flip");
        },
        8,
    );
}

#[test]
fn missing_and_corrupt_indexes_are_rebuilt() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 * 1024);
        let p = open(dir.path(), &c).await;
        fill(&p, 120, 400).await;
        let before = read_all(&p).await;
        let ts_before = p
            .list_offset(OffsetSpec::Timestamp(1500))
            .await
            .expect("ts");
        p.close().await.expect("close");
        drop(p);
        std::fs::write(dir.path().join("stray.txt"), b"not ours").expect("stray");
        let idx = files(dir.path(), "index");
        let tidx = files(dir.path(), "timeindex");
        assert!(idx.len() >= 3);
        std::fs::remove_file(&idx[0]).expect("rm");
        let mut b = std::fs::read(&tidx[1]).expect("read");
        let n = b.len() - 1;
        b[n] ^= 0x55;
        std::fs::write(&tidx[1], &b).expect("corrupt");
        std::fs::write(&idx[2], b"short").expect("truncate");
        let p = open(dir.path(), &c).await;
        assert_eq!(read_all(&p).await, before);
        let ts_after = p
            .list_offset(OffsetSpec::Timestamp(1500))
            .await
            .expect("ts");
        assert_eq!(ts_before, ts_after);
        // Rebuilt files are valid again.
        for f in files(dir.path(), "index").iter().take(3) {
            let b = std::fs::read(f).expect("read");
            crate::storage::index::decode_offset_index(&b).expect("valid index");
        }
        p.close().await.expect("close");
    });
}

#[test]
fn list_offset_by_timestamp() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        // Batch i: records at 1000 + 10*i .. +4, so offset o has ts 1000 + 10*(o/5) + o%5.
        fill(&p, 120, 400).await;
        // Out-of-order timestamps inside one batch.
        let mut b = BatchBuilder::new();
        b.push(9000, None, Some(b"a"), &[]);
        b.push(5000, None, Some(b"b"), &[]);
        b.push(9500, None, Some(b"c"), &[]);
        p.append(b.finish())
            .expect("append")
            .wait()
            .await
            .expect("ok");
        assert_eq!(
            p.list_offset(OffsetSpec::Earliest).await.expect("e"),
            (0, -1)
        );
        assert_eq!(
            p.list_offset(OffsetSpec::Latest).await.expect("l"),
            (603, -1)
        );
        let at = |t| p.list_offset(OffsetSpec::Timestamp(t));
        assert_eq!(at(0).await.expect("ts"), (0, 1000));
        assert_eq!(at(1003).await.expect("ts"), (3, 1003));
        assert_eq!(at(1005).await.expect("ts"), (5, 1010));
        assert_eq!(
            at(1000 + 10 * 77 + 2).await.expect("ts"),
            (77 * 5 + 2, 1772)
        );
        assert_eq!(at(2195).await.expect("ts"), (600, 9000));
        assert_eq!(at(9200).await.expect("ts"), (602, 9500));
        assert_eq!(at(9501).await.expect("ts"), (603, -1));
        p.close().await.expect("close");
    });
}

#[test]
fn wait_for_data_wakes_on_append_and_times_out() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        let far = Instant::now() + Duration::from_secs(600);
        let waiter = {
            let p = p.clone();
            glommio::spawn_local(async move {
                p.wait_for_data(0, far).await;
                p.high_watermark()
            })
        };
        glommio::yield_if_needed().await;
        p.append(batch(0, 5, 1, 10)).expect("append");
        assert_eq!(waiter.await, 5);
        // Deadline already near: returns without data.
        for _ in 0..3 {
            p.wait_for_data(5, Instant::now() + Duration::from_millis(1))
                .await;
        }
        assert_eq!(p.high_watermark(), 5);
        assert_eq!(
            p.data_waiter_count(),
            0,
            "timed-out waiters must not linger"
        );
        p.close().await.expect("close");
    });
}

#[test]
fn segment_rolls_by_age() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = TopicConfig {
            segment_ms: 1,
            ..cfg(64 << 20)
        };
        let p = open(dir.path(), &c).await;
        for i in 0..3 {
            let t = p.append(batch(i, 5, 1000, 10)).expect("append");
            t.wait().await.expect("durable");
            if i < 2 {
                crate::timer::sleep_once(Duration::from_millis(2)).await;
            }
        }
        assert_eq!(files(dir.path(), "log").len(), 3);
        check_sequence(&read_all(&p).await, 0, 15);
        p.close().await.expect("close");
    });
}

#[test]
fn fetch_range_errors_and_edges() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        fill(&p, 2, 10).await;
        assert!(matches!(
            p.fetch(11, 100).await,
            Err(PartitionError::OffsetOutOfRange { offset: 11, .. })
        ));
        let d = p.fetch(10, 100).await.expect("at hw");
        assert!(d.records.is_empty());
        assert_eq!((d.high_watermark, d.log_end_offset), (10, 10));
        assert!(matches!(
            p.append(Bytes::from_static(
                b"not a batch at all, just some bytes that are long enough to parse as a header"
            )),
            Err(PartitionError::CorruptBatch(_))
        ));
        let big = batch(0, 1, 0, (LIMITS.max_batch_bytes + 1) as usize);
        assert!(matches!(
            p.append(big),
            Err(PartitionError::MessageTooLarge { .. })
        ));
        assert_eq!(p.log_end_offset(), 10);
        p.close().await.expect("close");
    });
}

#[test]
fn corrupt_stored_data_is_reported_not_served() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        // No batch cache: these fetches must read the damaged disk.
        let p = Partition::open_with_cache(
            TopicPartition::new("t", 0),
            dir.path().to_path_buf(),
            cfg(64 << 20),
            LIMITS,
            &cache::BatchCache::new(0),
        )
        .await
        .expect("open partition");
        fill(&p, 3, 100).await;
        let first_len = p.fetch(0, 1).await.expect("fetch").records.len() as u64;
        let log = last_log(dir.path());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open");
        f.seek(SeekFrom::Start(first_len + 80)).expect("seek");
        f.write_all(b"\x00\x01\x02").expect("corrupt");
        f.sync_all().expect("sync");
        drop(f);
        for from in [5, 7] {
            match p.fetch(from, 1 << 20).await {
                Err(PartitionError::CorruptData { file, .. }) => assert_eq!(file, log),
                other => panic!("expected CorruptData, got {other:?}"),
            }
        }
        // The batch before the damage is intact and still served, also by a
        // fetch big enough to reach the damage (it stops before it).
        let d = p.fetch(0, 1).await.expect("fetch");
        assert_eq!(d.records.len() as u64, first_len);
        let d = p.fetch(0, 1 << 20).await.expect("fetch up to the damage");
        assert_eq!(d.records.len() as u64, first_len);
    });
}

#[test]
fn failed_write_and_fsync_fail_tickets_and_partition_recovers() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 << 20);
        let p = open(dir.path(), &c).await;
        fill(&p, 2, 10).await;
        p.faults().fail_writes.set(1);
        let t1 = p.append(batch(2, 5, 0, 10)).expect("append");
        let t2 = p.append(batch(3, 5, 0, 10)).expect("append");
        assert!(matches!(
            t1.wait().await,
            Err(PartitionError::StorageFull(_))
        ));
        assert!(t2.wait().await.is_err());
        assert_eq!(p.log_end_offset(), 10, "log end rewound");
        p.faults().fail_fsyncs.set(1);
        let t = p.append(batch(2, 5, 0, 10)).expect("append");
        assert!(matches!(t.wait().await, Err(PartitionError::Storage(_))));
        assert_eq!(p.high_watermark(), 10);
        p.faults().tear_next_write_bytes.set(Some(0));
        assert!(p
            .append(batch(2, 5, 0, 10))
            .expect("a")
            .wait()
            .await
            .is_err());
        let t = p.append(batch(2, 5, 0, 10)).expect("append");
        assert_eq!(t.wait().await.expect("ok").base_offset, 10);
        check_sequence(&read_all(&p).await, 0, 15);
        p.close().await.expect("close");
        drop(p);
        let p = open(dir.path(), &c).await;
        check_sequence(&read_all(&p).await, 0, 15);
    });
}

#[test]
fn interval_flush_acks_after_write_and_syncs_later() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = TopicConfig {
            flush: FlushPolicy::Interval { interval_ms: 2 },
            ..cfg(64 * 1024)
        };
        let p = open(dir.path(), &c).await;
        fill(&p, 50, 400).await;
        assert_eq!(p.high_watermark(), 250);
        let mut rounds = 0;
        while p.fdatasync_count() == 0 {
            rounds += 1;
            assert!(rounds < 10_000, "interval sync never ran");
            crate::timer::sleep_once(Duration::from_millis(1)).await;
        }
        check_sequence(&read_all(&p).await, 0, 250);
        p.close().await.expect("close");
    });
}

#[test]
fn concurrent_producer_and_long_polling_consumer() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        let consumer = {
            let p = p.clone();
            glommio::spawn_local(async move {
                let mut next = 0u64;
                let mut seen = Vec::new();
                let mut rounds = 0;
                while next < 400 {
                    rounds += 1;
                    assert!(rounds < 100_000, "consumer does not progress");
                    p.wait_for_data(next, Instant::now() + Duration::from_secs(60))
                        .await;
                    let d = p.fetch(next, 3000).await.expect("fetch");
                    assert!(d.high_watermark <= d.log_end_offset);
                    for item in batch::batches(&d.records.to_bytes()) {
                        let (h, _) = item.expect("batch");
                        assert!(h.last_offset() < d.high_watermark, "served past hw");
                        seen.push(h.base_offset);
                        next = h.next_offset();
                    }
                }
                seen
            })
        };
        let mut last = None;
        for i in 0..80u64 {
            last = Some(p.append(batch(i, 5, 0, 300)).expect("append"));
            if i % 7 == 0 {
                glommio::yield_if_needed().await;
                glommio::executor().yield_task_queue_now().await;
            }
        }
        let t = last.expect("ticket");
        assert_eq!(t.wait().await.expect("durable").last_offset, 399);
        let seen = consumer.await;
        assert_eq!(seen, (0..80).map(|i| i * 5).collect::<Vec<_>>());
        // Close without waiting: queued batches are still written first.
        let t = p.append(batch(80, 5, 0, 300)).expect("append");
        p.close().await.expect("close");
        assert_eq!(
            t.wait().await.expect("written before close").last_offset,
            404
        );
        drop(p);
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        check_sequence(&read_all(&p).await, 0, 405);
    });
}

#[test]
fn reopen_after_clean_close_then_crash_keeps_new_appends() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 << 20);
        let p = open(dir.path(), &c).await;
        fill(&p, 40, 100).await; // several index entries in the active segment
        p.close().await.expect("close");
        drop(p);
        // Reopen from the persisted index, append a little (same last page:
        // the file size does not change), crash without close.
        let p = open(dir.path(), &c).await;
        for i in 40..42 {
            let t = p.append(batch(i, 5, 0, 10)).expect("append");
            t.wait().await.expect("durable");
        }
        drop(p);
        let p = open(dir.path(), &c).await;
        assert_eq!(p.log_end_offset(), 210);
        check_sequence(&read_all(&p).await, 0, 210);
        let before = read_all(&p).await;
        p.close().await.expect("close");
        drop(p);
        // Garbage after a clean close: the stale index is not trusted.
        let log = last_log(dir.path());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        f.write_all(&[7u8; 3000]).expect("junk");
        drop(f);
        let p = open(dir.path(), &c).await;
        assert_eq!(read_all(&p).await, before);
        assert_eq!(
            p.list_offset(OffsetSpec::Timestamp(1000 + 10 * 30))
                .await
                .expect("ts"),
            (150, 1300)
        );
    });
}

mod compression;
mod idempotence;
mod recovery;
mod retention;

#[test]
fn recent_batches_are_served_from_memory_with_the_bytes_disk_holds() {
    run(move || async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let c = cfg(64 * 1024);
        let p = open(&dir, &c).await;
        let bases = fill(&p, 60, 300).await;
        let (hits0, _) = p.cache.stats();
        // Every fetch position and a few sizes, from memory.
        let mut from_memory = Vec::new();
        for &b in &bases {
            for max in [1u32, 3000, 1 << 20] {
                from_memory.push(p.fetch(b + 2, max).await.expect("fetch").records);
            }
        }
        let (hits, misses) = p.cache.stats();
        assert_eq!(hits - hits0, from_memory.len() as u64, "all from memory");
        assert_eq!(misses, 0);
        check_sequence(&read_all(&p).await, 0, 300);
        p.close().await.expect("close");
        drop(p);
        // After a restart the cache is empty: the same fetches read the disk
        // and must return the very same bytes (base offsets stamped alike).
        let p = open(&dir, &c).await;
        let mut i = 0;
        for &b in &bases {
            for max in [1u32, 3000, 1 << 20] {
                let d = p.fetch(b + 2, max).await.expect("fetch").records;
                // Disk reads may stop at a segment end; compare the prefix.
                let n = d.len().min(from_memory[i].len());
                assert!(n > 0);
                assert_eq!(
                    &d.to_bytes()[..n],
                    &from_memory[i].to_bytes()[..n],
                    "fetch {b}+2 max {max}"
                );
                i += 1;
            }
        }
        assert_eq!(p.cache.stats(), (0, 180), "nothing cached after a restart");
        // New appends are cached again, older data still comes from disk.
        fill(&p, 1, 300).await;
        assert!(p.fetch(300, 1 << 20).await.is_ok());
        assert!(p.fetch(0, 1 << 20).await.is_ok());
        assert_eq!(p.cache.stats(), (1, 181));
        p.close().await.expect("close");
    });
}

#[test]
fn the_cache_keeps_the_producers_bytes_without_copying_them() {
    run(move || async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = open(tmp.path(), &cfg(64 * 1024)).await;
        fill(&p, 3, 100).await;
        let sent = batch(7, 4, 1_000, 2_000);
        let res = p
            .append(sent.clone())
            .expect("append")
            .wait()
            .await
            .expect("durable");
        let d = p.fetch(res.base_offset, 1 << 20).await.expect("fetch");
        let pieces = d.records.pieces();
        assert_eq!(pieces.len(), 2, "stamped prefix and body");
        assert_eq!(pieces[0].len(), batch::STAMPED_PREFIX_BYTES);
        assert_eq!(
            pieces[1].as_ptr(),
            sent[batch::STAMPED_PREFIX_BYTES..].as_ptr(),
            "the body is the producer's buffer, not a copy"
        );
        // The prefix is stamped exactly as the disk copy was.
        let (h, _) = batch::batches(
            &pieces[0]
                .iter()
                .chain(pieces[1].iter())
                .copied()
                .collect::<Vec<u8>>(),
        )
        .next()
        .expect("one")
        .expect("valid");
        assert_eq!(h.base_offset, res.base_offset);
        p.close().await.expect("close");
        let p = open(tmp.path(), &cfg(64 * 1024)).await;
        let disk = p.fetch(res.base_offset, 1 << 20).await.expect("fetch");
        assert_eq!(disk.records.pieces().len(), 1, "a disk read is one piece");
        assert_eq!(
            disk.records, d.records,
            "cache and disk hold the same bytes"
        );
        p.close().await.expect("close");
    })
}

#[test]
fn wire_errors_name_their_code_once() {
    let io = || std::io::Error::from_raw_os_error(libc::ENOSPC);
    let full = PartitionError::from_storage(StorageError::io("write", Path::new("/d/0.log"), io()));
    assert!(matches!(full, PartitionError::StorageFull(_)), "{full:?}");
    let wire = full.to_wire();
    assert_eq!(wire.code, crate::protocol::ErrorCode::StorageFull);
    let shown = wire.to_string();
    assert!(shown.starts_with("storage full: write /d/0.log"), "{shown}");
    assert_eq!(shown.matches("storage full").count(), 1, "{shown}");
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    let shown =
        PartitionError::from_storage(StorageError::io("fdatasync", Path::new("/d/0.log"), eio))
            .to_wire()
            .to_string();
    assert_eq!(shown.matches("storage error").count(), 1, "{shown}");
}

#[test]
fn reads_smaller_than_a_batch_join_and_a_fetch_stops_at_its_budget() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        fill(&p, 40, 1000).await;
        let seg = p.log.active();
        // Reads of one page, batches of about 5 KB: nearly every batch
        // crosses a read's end, and its missing part is joined on.
        let mut cur = seg
            .cursor(0, seg.log_bytes(), Some(0))
            .with_read_bytes(4096);
        let mut next = 0;
        loop {
            match cur.next().await.expect("read") {
                crate::storage::segment::Next::Batch(h, b) => {
                    assert_eq!(h.base_offset, next, "batches in order, none skipped");
                    assert_eq!(b.len(), h.total_bytes());
                    next = h.next_offset();
                }
                crate::storage::segment::Next::End => break,
                crate::storage::segment::Next::Invalid { pos, reason } => {
                    panic!("invalid at {pos}: {reason}")
                }
            }
        }
        assert_eq!(next, 200);
        // A budget of two and a half batches returns two whole batches.
        let one = {
            let mut c = seg.cursor(0, seg.log_bytes(), Some(0));
            c.peek_len().await.expect("peek").expect("a batch")
        };
        // Without the batch cache, so the fetch reads the segment.
        p.cache.clear();
        let d = p.fetch(0, (one * 5 / 2) as u32).await.expect("fetch");
        let got: Vec<u64> = batch::batches(&d.records.to_bytes())
            .map(|b| b.expect("batch").0.base_offset)
            .collect();
        assert_eq!(got, vec![0, 5]);
        p.close().await.expect("close");
    });
}

#[test]
fn a_sequential_disk_reader_is_read_ahead_and_a_truncation_drops_it() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        fill(&p, 60, 1000).await;
        p.cache.clear();
        // Fetches of about two batches each, each continuing where the
        // last one ended: from the second on, each is read ahead.
        let mut offset = 0;
        let mut fetches = 0;
        while offset < 300 {
            let d = p.fetch(offset, 11_000).await.expect("fetch");
            let bases: Vec<u64> = batch::batches(&d.records.to_bytes())
                .map(|b| b.expect("batch").0.base_offset)
                .collect();
            assert_eq!(bases.first(), Some(&offset), "starts where asked");
            offset = d.records.next_offset().expect("records");
            fetches += 1;
        }
        assert_eq!(offset, 300);
        assert_eq!(
            p.readahead_hits.get(),
            fetches - 2,
            "every fetch after the second started from a read-ahead"
        );
        assert!(
            super::readahead::shard_readahead_bytes()
                <= super::readahead::MAX_SHARD_READAHEAD_BYTES
        );
        // Arm a read-ahead near the head (two sequential fetches), then cut
        // the log where it starts and append a different batch there: the
        // next fetch must return the new batch, not the bytes read ahead.
        p.fetch(0, 11_000).await.expect("fetch");
        let d = p.fetch(10, 11_000).await.expect("fetch");
        let armed_at = d.records.next_offset().expect("records");
        assert!(p.readahead.borrow().is_some(), "a read-ahead is armed");
        assert_eq!(p.truncate_to(armed_at).await.expect("truncate"), armed_at);
        assert!(p.readahead.borrow().is_none(), "the truncation dropped it");
        let t = p.append(batch(999, 5, 0, 10)).expect("append");
        assert_eq!(t.wait().await.expect("durable").base_offset, armed_at);
        p.cache.clear();
        let d = p.fetch(armed_at, 11_000).await.expect("fetch");
        let bytes = d.records.to_bytes();
        let (h, b) = batch::batches(&bytes).next().expect("one").expect("ok");
        assert_eq!(h.base_offset, armed_at);
        assert_eq!(h.record_count, 5);
        assert!(b.len() < 1000, "the new small batch, not the old one");
        p.close().await.expect("close");
        assert_eq!(
            super::readahead::shard_readahead_bytes(),
            0,
            "close gives it all back"
        );
    });
}
