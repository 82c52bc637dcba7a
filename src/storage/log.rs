//! A partition's log: the ordered set of segments (base offset → segment),
//! recovery at open, and rolling to a new segment.
//!
//! Offsets it reports: `written` (next offset after the last batch written,
//! the log end on disk) and `flushed` (everything below it fdatasynced). The
//! recovery point is `flushed` made durable in the `recovery-point-offset`
//! checkpoint: on roll, at clean close and when the partition asks
//! ([`Log::checkpoint_recovery_point`]).
//!
//! Recovery: every `{base:020}.log` is a segment; all but the last are sealed
//! (indexes loaded, or rebuilt when missing/stale); the last is active
//! (scanned; invalid data at or past the recovery point is a torn tail and is
//! truncated; invalid data below it is acknowledged damage: reported, never
//! truncated, see `RecoveryStats::acked_damage`). A batch of another format
//! refuses the open. An empty directory gets a segment at 0. Files that are
//! not ours are ignored with a warning. `truncate_to` cuts the log at a batch
//! boundary (followers truncating a divergent suffix).
//!
//! Invariants: segments are contiguous — each one's base offset equals the
//! previous one's next offset (a gap found at recovery is logged); only the
//! last segment is written to; `recovery_point <= flushed <= written`; the
//! recovery point is lowered durably before any truncation cuts below it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::sync::Semaphore;
use tracing::{info, warn};

use super::checkpoint;
use super::file::{sync_dir, FaultInjector};
use super::scan::{CorruptBatch, RecoveryStats};
use super::segment::{Mark, Segment};
use super::{parse_segment_file_name, StorageError};
use crate::io::{Clock, Io};

pub struct Log {
    dir: PathBuf,
    index_interval_bytes: u32,
    io: Io,
    segments: RefCell<BTreeMap<u64, Rc<Segment>>>,
    recovery: RecoveryStats,
    /// Everything below this offset is fdatasynced.
    flushed: Cell<u64>,
    /// The recovery point as last written to its checkpoint file.
    recovery_point: Cell<u64>,
    /// One recovery-point checkpoint write at a time (they share a `.tmp`).
    checkpoint_gate: Semaphore,
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and recovers it.
    pub async fn open(dir: &Path, index_interval_bytes: u32, io: Io) -> Result<Log, StorageError> {
        let disk = &io.disk;
        // A new partition directory (and any new parent) is made durable in
        // its parent.
        disk.create_dir_all_synced(dir)
            .await
            .map_err(|e| StorageError::io("create dir", dir, e))?;
        let began = Instant::now();
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        let entries = disk
            .list_dir(dir)
            .map_err(|e| StorageError::io("list dir", dir, e))?;
        for entry in entries {
            let name = entry.name.as_str();
            match parse_segment_file_name(name) {
                Some((base, "log")) => bases.push(base),
                Some((base, "index" | "timeindex")) => index_files.push((base, dir.join(name))),
                _ if checkpoint::is_checkpoint_file(name) => {}
                _ => {
                    warn!(dir = %dir.display(), file = %name, "ignoring stray file in partition directory")
                }
            }
        }
        bases.sort_unstable();
        let recovery_point = match checkpoint::read(disk, dir, checkpoint::RECOVERY_POINT).await? {
            None => 0,
            Some(b) => match checkpoint::parse_offset(&b) {
                Some(rp) => rp,
                None => {
                    warn!(dir = %dir.display(), "unreadable recovery-point checkpoint: treating the whole active segment as unflushed");
                    0
                }
            },
        };
        let mut stats = RecoveryStats {
            segments: bases.len(),
            recovery_point,
            ..RecoveryStats::default()
        };
        // An index whose log is gone is what a crash in the middle of a
        // retention delete leaves (the log is unlinked first): finish it.
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                disk.remove_file(&path)
                    .map_err(|e| StorageError::io("delete", &path, e))?;
                info!(file = %path.display(), "removed an index whose segment was deleted (interrupted retention delete)");
                stats.orphans_removed += 1;
            }
        }
        if stats.orphans_removed > 0 {
            sync_dir(disk, dir).await?;
        }
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let seg = Segment::create(dir, 0, index_interval_bytes, io.clone()).await?;
            sync_dir(disk, dir).await?;
            segments.insert(0, Rc::new(seg));
        } else {
            let last = bases.len() - 1;
            let mut prev_next: Option<u64> = None;
            for (i, base) in bases.into_iter().enumerate() {
                let (f, st) = (io.clone(), &mut stats);
                let seg = if i == last {
                    Segment::open_active(dir, base, index_interval_bytes, f, recovery_point, st)
                        .await?
                } else {
                    Segment::open_sealed(dir, base, index_interval_bytes, f, st).await?
                };
                if let Some(p) = prev_next {
                    if p != base {
                        warn!(dir = %dir.display(), expected = p, found = base,
                            "segments are not contiguous: offsets in between are missing");
                        stats.gaps += 1;
                    }
                }
                prev_next = Some(seg.next_offset());
                segments.insert(base, Rc::new(seg));
            }
        }
        let active = match segments.last_key_value() {
            Some((_, s)) => s.clone(),
            None => unreachable!("a log always has an active segment"),
        };
        let written = active.next_offset();
        if stats.acked_damage.is_none() && written < recovery_point {
            // The files end before data that was fdatasynced: it is gone.
            stats.acked_damage = Some(CorruptBatch {
                file: active.log_path().to_path_buf(),
                position: active.log_bytes(),
                offset: written,
                reason: format!(
                    "the log ends at offset {written}, before the recovery point {recovery_point}: acknowledged data is missing"
                ),
            });
        }
        // What recovery read may be only in the page cache (a killed
        // process): make it durable before calling it flushed.
        if stats.segments > 0 {
            active.fdatasync().await?;
        }
        stats.elapsed_ms = began.elapsed().as_millis() as u64;
        Ok(Log {
            dir: dir.to_path_buf(),
            index_interval_bytes,
            io,
            segments: RefCell::new(segments),
            recovery: stats,
            flushed: Cell::new(written),
            recovery_point: Cell::new(recovery_point),
            checkpoint_gate: Semaphore::new(1),
        })
    }

    /// Next offset after the last batch written to the files (the log end
    /// on disk; may be ahead of what is flushed).
    pub fn written_offset(&self) -> u64 {
        self.next_offset()
    }

    /// Everything below this offset is fdatasynced.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.get()
    }

    /// The recovery point as last made durable.
    pub fn recovery_point(&self) -> u64 {
        self.recovery_point.get()
    }

    /// Acknowledged damage recovery found and left in place (the log is
    /// served up to it and must not be appended to), if any.
    pub fn acked_damage(&self) -> Option<&CorruptBatch> {
        self.recovery.acked_damage.as_ref()
    }

    fn note_flushed(&self, upto: u64) {
        if upto > self.flushed.get() {
            self.flushed.set(upto);
        }
        assert!(
            self.flushed.get() <= self.written_offset(),
            "flushed {} past written {}",
            self.flushed.get(),
            self.written_offset()
        );
    }

    /// Makes the active segment durable (an fdatasync, unless every write
    /// since the last one was write-through); returns the flushed offset
    /// (which then covers everything written before the call).
    pub async fn flush(&self) -> Result<u64, StorageError> {
        let seg = self.active();
        let target = seg.next_offset();
        seg.sync_if_needed().await?;
        self.note_flushed(target.min(self.written_offset()));
        Ok(self.flushed.get())
    }

    /// Rolls `seg` back to `mark` after a failed write or fdatasync (what
    /// was written after the mark is forgotten and cut off the file).
    pub async fn rollback(&self, seg: &Segment, mark: Mark) {
        seg.rollback(mark).await;
        let written = self.written_offset();
        if self.flushed.get() > written {
            self.flushed.set(written);
        }
    }

    /// Makes the flushed offset the durable recovery point (a checkpoint
    /// write, skipped when it already holds that value).
    pub async fn checkpoint_recovery_point(&self) -> Result<(), StorageError> {
        if self.acked_damage().is_some() {
            // Keep the recovery point as found: lowering it would let the
            // next open cut the damaged acknowledged data as a torn tail.
            return Ok(());
        }
        let Ok(_permit) = self.checkpoint_gate.acquire_permit(1).await else {
            return Ok(());
        };
        let target = self.flushed.get();
        if target == self.recovery_point.get() {
            return Ok(());
        }
        self.write_recovery_point(target).await
    }

    async fn write_recovery_point(&self, rp: u64) -> Result<(), StorageError> {
        checkpoint::write_atomic(
            &self.io.disk,
            &self.dir,
            checkpoint::RECOVERY_POINT,
            &checkpoint::encode_offset(rp),
        )
        .await?;
        self.recovery_point.set(rp);
        Ok(())
    }

    /// Cuts the log so that it ends at the start of the batch holding
    /// `offset` (whole batches; a follower dropping a divergent suffix):
    /// lowers the recovery point durably first, then deletes every later
    /// segment (newest first, so a crash leaves a contiguous prefix) and
    /// cuts the one holding `offset`. Returns the new written offset
    /// (`<= offset`). `offset` must be at or above the log's first offset;
    /// `offset >= written` changes nothing. No write may be in flight.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, StorageError> {
        assert!(
            offset >= self.start_offset(),
            "truncate_to({offset}) below the first segment {}",
            self.start_offset()
        );
        if offset >= self.written_offset() {
            return Ok(self.written_offset());
        }
        let Some(holder) = self.segment_for(offset) else {
            unreachable!("offset {offset} >= the first base has a segment");
        };
        // Nothing at or past `offset` in its segment (`offset` in a gap
        // between segments): keep that segment whole.
        let (cut, new_end) = holder
            .cut_point(offset)
            .await?
            .unwrap_or((holder.log_bytes(), holder.next_offset()));
        assert!(
            new_end <= offset,
            "the cut keeps no offset at or past {offset}"
        );
        {
            let Ok(_permit) = self.checkpoint_gate.acquire_permit(1).await else {
                unreachable!("the checkpoint gate is never closed");
            };
            if self.recovery_point.get() > new_end {
                self.write_recovery_point(new_end).await?;
            }
        }
        let later: Vec<Rc<Segment>> = {
            let mut segs = self.segments.borrow_mut();
            let keep = segs.range(..=offset).next_back().map(|(b, _)| *b);
            let split_at = keep.map_or(0, |b| b + 1);
            let later = segs.split_off(&split_at);
            debug_assert!(!segs.is_empty(), "the segment holding the cut stays");
            later.into_values().collect()
        };
        for seg in later.iter().rev() {
            info!(file = %seg.log_path().display(), base_offset = seg.base_offset(),
                next_offset = seg.next_offset(), truncate_to = offset, "deleting segment (truncation)");
            self.delete_files(std::slice::from_ref(seg)).await?;
        }
        let active = self.active();
        assert!(
            Rc::ptr_eq(&active, &holder),
            "the cut segment is now the last"
        );
        let written = active.truncate_at(cut).await?;
        assert_eq!(written, new_end, "the rescan ends at the cut");
        info!(dir = %self.dir.display(), truncate_to = offset, log_end = written, "log truncated");
        // Earlier segments were fdatasynced at their roll, the cut one just
        // now: everything kept is flushed.
        self.flushed.set(written);
        assert!(
            self.recovery_point.get() <= written,
            "recovery point past the cut"
        );
        Ok(written)
    }

    /// What recovery did when this log was opened.
    pub fn recovery(&self) -> &RecoveryStats {
        &self.recovery
    }

    /// The first sealed segment with a base offset above `after` (the first
    /// sealed one for `None`): the background scan's cursor over a log whose
    /// head retention may delete meanwhile.
    pub fn next_sealed_after(&self, after: Option<u64>) -> Option<Rc<Segment>> {
        let segs = self.segments.borrow();
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        segs.range((from, Bound::Unbounded))
            .map(|(_, s)| s)
            .find(|s| s.is_sealed())
            .cloned()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn faults(&self) -> &Rc<FaultInjector> {
        &self.io.faults
    }

    /// The disk, clock and faults this log does its I/O through.
    pub fn io(&self) -> &Io {
        &self.io
    }

    pub fn clock(&self) -> &Clock {
        &self.io.clock
    }

    /// The segment being written (always exists).
    pub fn active(&self) -> Rc<Segment> {
        let segs = self.segments.borrow();
        match segs.last_key_value() {
            Some((_, s)) => s.clone(),
            None => unreachable!("a log always has an active segment"),
        }
    }

    /// The segment that holds `offset` (greatest base offset <= `offset`).
    pub fn segment_for(&self, offset: u64) -> Option<Rc<Segment>> {
        self.segments
            .borrow()
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s.clone())
    }

    /// All segments in offset order (a snapshot).
    pub fn segments(&self) -> Vec<Rc<Segment>> {
        self.segments.borrow().values().cloned().collect()
    }

    pub fn start_offset(&self) -> u64 {
        self.segments
            .borrow()
            .first_key_value()
            .map(|(b, _)| *b)
            .unwrap_or(0)
    }

    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// Syncs and seals the active segment and starts a new one at its next
    /// offset (directory fsynced so the new file survives a crash).
    pub async fn roll(&self) -> Result<Rc<Segment>, StorageError> {
        let old = self.active();
        old.fdatasync().await?;
        self.note_flushed(old.next_offset());
        // The indexes record the size the file is trimmed to below (its
        // data's last page, without the pages zeroed ahead).
        old.end_at_data();
        old.persist_indexes().await?;
        let base = old.next_offset();
        let seg = Rc::new(
            Segment::create(&self.dir, base, self.index_interval_bytes, self.io.clone()).await?,
        );
        sync_dir(&self.io.disk, &self.dir).await?;
        old.mark_sealed();
        self.segments.borrow_mut().insert(base, seg.clone());
        info!(file = %seg.log_path().display(), "rolled to a new segment");
        // Best effort: a stale recovery point only makes the next recovery
        // treat more of the log as a possibly torn tail.
        if let Err(e) = self.checkpoint_recovery_point().await {
            warn!(dir = %self.dir.display(), error = %e, "could not write the recovery point at roll");
        }
        // The sealed segment keeps only its own pages; off the write path.
        glommio::spawn_local(async move { old.release_preallocation().await }).detach();
        Ok(seg)
    }

    /// Removes from the log (not from disk) the sealed segments at its head
    /// that `expired` selects, stopping at the first one it rejects; the
    /// active segment is never removed. `expired` sees each segment in
    /// offset order. Returns the removed segments (oldest first).
    pub fn remove_head(&self, mut expired: impl FnMut(&Segment) -> bool) -> Vec<Rc<Segment>> {
        let mut segs = self.segments.borrow_mut();
        let mut out = Vec::new();
        while segs.len() > 1 {
            let Some((&base, seg)) = segs.first_key_value() else {
                break;
            };
            if !seg.is_sealed() || !expired(seg) {
                break;
            }
            if let Some(seg) = segs.remove(&base) {
                out.push(seg);
            }
        }
        out
    }

    /// Deletes the files of segments already removed with
    /// [`Log::remove_head`], then fsyncs the directory.
    pub async fn delete_files(&self, removed: &[Rc<Segment>]) -> Result<(), StorageError> {
        let paths: Vec<PathBuf> = removed.iter().flat_map(|s| s.file_paths()).collect();
        // unlink is blocking file-system work: keep it off the reactor.
        self.io
            .disk
            .blocking(move |disk| {
                for path in paths {
                    match disk.remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StorageError::io("delete", &path, e)),
                    }
                }
                Ok(())
            })
            .await?;
        sync_dir(&self.io.disk, &self.dir).await
    }

    /// Syncs the active segment, persists its indexes and the recovery
    /// point (= the log end: everything is flushed).
    pub async fn close(&self) -> Result<(), StorageError> {
        let active = self.active();
        self.flush().await?;
        // Trim the pages zeroed ahead, so the indexes describe the file as
        // it stays and the next open trusts them.
        active.end_at_data();
        active.release_preallocation().await;
        active.persist_indexes().await?;
        // Best effort (e.g. a full disk): a stale recovery point only makes
        // the next open treat more of the log as a possible torn tail.
        if let Err(e) = self.checkpoint_recovery_point().await {
            warn!(dir = %self.dir.display(), error = %e, "could not write the recovery point at close");
        }
        Ok(())
    }
}
