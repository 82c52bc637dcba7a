//! A partition's log: the ordered set of segments (base offset → segment),
//! recovery at open, and rolling to a new segment.
//!
//! Recovery: every `{base:020}.log` is a segment; all but the last are sealed
//! (indexes loaded, or rebuilt when missing/stale); the last is active (fully
//! scanned, torn tail truncated). An empty directory gets a segment at 0.
//! Files that are not ours are ignored with a warning.
//!
//! Invariants: segments are contiguous — each one's base offset equals the
//! previous one's next offset (a gap found at recovery is logged); only the
//! last segment is written to.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use tracing::{info, warn};

use super::file::{sync_dir, FaultInjector};
use super::scan::RecoveryStats;
use super::segment::Segment;
use super::{parse_segment_file_name, StorageError};
use crate::io::{Clock, Io};

/// Name of the partition's durable log-start checkpoint (owned by
/// `partition::retention`; listed here so recovery does not call it stray).
pub const LOG_START_CHECKPOINT: &str = "log-start-offset";
/// Temporary name the checkpoint is written under before the rename.
pub const LOG_START_CHECKPOINT_TMP: &str = "log-start-offset.tmp";

pub struct Log {
    dir: PathBuf,
    index_interval_bytes: u32,
    io: Io,
    segments: RefCell<BTreeMap<u64, Rc<Segment>>>,
    recovery: RecoveryStats,
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
                _ if name == LOG_START_CHECKPOINT || name == LOG_START_CHECKPOINT_TMP => {}
                _ => {
                    warn!(dir = %dir.display(), file = %name, "ignoring stray file in partition directory")
                }
            }
        }
        bases.sort_unstable();
        let mut stats = RecoveryStats {
            segments: bases.len(),
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
                    Segment::open_active(dir, base, index_interval_bytes, f, st).await?
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
        stats.elapsed_ms = began.elapsed().as_millis() as u64;
        Ok(Log {
            dir: dir.to_path_buf(),
            index_interval_bytes,
            io,
            segments: RefCell::new(segments),
            recovery: stats,
        })
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
        old.persist_indexes().await?;
        let base = old.next_offset();
        let seg = Rc::new(
            Segment::create(&self.dir, base, self.index_interval_bytes, self.io.clone()).await?,
        );
        sync_dir(&self.io.disk, &self.dir).await?;
        old.mark_sealed();
        self.segments.borrow_mut().insert(base, seg.clone());
        info!(file = %seg.log_path().display(), "rolled to a new segment");
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

    /// Syncs the active segment and persists its indexes.
    pub async fn close(&self) -> Result<(), StorageError> {
        let active = self.active();
        active.fdatasync().await?;
        active.persist_indexes().await
    }
}
