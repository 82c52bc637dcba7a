//! Retention and log-start management of one partition (docs/storage.md,
//! "Retention").
//!
//! Owns: the periodic retention task (delete whole sealed segments older than
//! `retention_ms` or beyond `retention_bytes`), `Partition::delete_records`
//! (advance the log start on request), and the durable log-start checkpoint
//! file `log-start-offset` (decimal offset + newline; written and read through
//! `storage::checkpoint`: tmp + fsync + rename + fsync dir).
//!
//! Invariants: the active segment is never deleted; the in-memory log start is
//! advanced before any file is deleted (no reader lands in a deleted file, and
//! readers holding a removed segment keep reading its still-open file); the
//! log start never moves backwards and never passes the high watermark; the
//! checkpoint is written by one task at a time and never regresses.

use std::rc::{Rc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use super::{Partition, PartitionError};
use crate::protocol::{Offset, TopicPartition};
use crate::storage::checkpoint;
use crate::storage::log::Log;
use crate::storage::StorageError;

/// Reads the checkpoint (if any) and returns the log start to use at open:
/// the larger of the first segment's base offset and the checkpoint, capped
/// at the recovered log end.
pub(super) async fn recover_log_start(
    tp: &TopicPartition,
    log: &Log,
) -> Result<Offset, PartitionError> {
    let first = log.start_offset();
    let next = log.next_offset();
    let path = log.dir().join(checkpoint::LOG_START);
    let bytes = checkpoint::read(&log.io().disk, log.dir(), checkpoint::LOG_START)
        .await
        .map_err(PartitionError::from_storage)?;
    let Some(bytes) = bytes else {
        return Ok(first);
    };
    let Some(ckpt) = checkpoint::parse_offset(&bytes) else {
        warn!(%tp, file = %path.display(), "unreadable log-start checkpoint ignored");
        return Ok(first);
    };
    if ckpt > next {
        warn!(%tp, checkpoint = ckpt, log_end = next,
            "log-start checkpoint is past the recovered log end; using the log end");
        return Ok(first.max(next));
    }
    Ok(first.max(ckpt))
}

/// Writes `offset` durably as the checkpoint.
async fn write_checkpoint(log: &Log, offset: Offset) -> Result<(), StorageError> {
    checkpoint::write_atomic(
        &log.io().disk,
        log.dir(),
        checkpoint::LOG_START,
        &checkpoint::encode_offset(offset),
    )
    .await
}

impl Partition {
    /// Advances the log start to `before` (durably: the checkpoint is written
    /// before this returns) and deletes the segments entirely below it.
    /// `before` <= the current log start changes nothing. Returns the log
    /// start. `before` above the high watermark is `OffsetOutOfRange`.
    pub async fn delete_records(self: &Rc<Self>, before: Offset) -> Result<Offset, PartitionError> {
        if self.closing.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        let hw = self.high_watermark.get();
        if before > hw {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset: before,
                log_start: self.log_start.get(),
                log_end: hw,
            });
        }
        if before > self.log_start.get() {
            self.log_start.set(before);
            self.check_invariants();
            info!(tp = %self.tp, log_start = before, "log start advanced by delete-records");
        }
        if let Err(e) = self.persist_log_start().await {
            if !matches!(e, PartitionError::StorageFull(_)) {
                return Err(e);
            }
            // A full disk cannot take even the small checkpoint file. Free
            // space first by deleting the segments wholly below the new log
            // start (safe before the checkpoint: a deleted segment cannot come
            // back, and the log start at open is at least the first remaining
            // segment's base), then write the checkpoint again.
            warn!(tp = %self.tp, error = %e,
                "no space for the log-start checkpoint; deleting segments below the log start first");
            self.delete_expired().await;
            self.persist_log_start().await?;
        }
        self.delete_expired().await;
        Ok(self.log_start.get())
    }

    /// Makes the current in-memory log start durable (one writer at a time;
    /// rewrites until the file holds the latest value).
    async fn persist_log_start(&self) -> Result<(), PartitionError> {
        self.checkpoint_waiters
            .wait(|| !self.checkpoint_busy.get())
            .await;
        self.checkpoint_busy.set(true);
        let res = async {
            loop {
                let target = self.log_start.get();
                write_checkpoint(&self.log, target).await?;
                if self.log_start.get() == target {
                    return Ok(());
                }
            }
        }
        .await;
        self.checkpoint_busy.set(false);
        self.checkpoint_waiters.wake_all();
        res.map_err(PartitionError::from_storage)
    }

    /// One retention pass: removes the sealed segments at the head that lie
    /// below the log start or are expired by time or size, advances the log
    /// start past them, then deletes their files. Returns how many it deleted.
    pub async fn delete_expired(&self) -> usize {
        if self.closing.get() {
            return 0;
        }
        let (retention_ms, retention_bytes) = {
            let c = self.config.borrow();
            (c.retention_ms, c.retention_bytes)
        };
        let cutoff = self
            .log
            .clock()
            .wall_ms()
            .saturating_sub(retention_ms.min(i64::MAX as u64) as i64);
        let mut total: u64 = self.log.segments().iter().map(|s| s.log_bytes()).sum();
        let log_start = self.log_start.get();
        let removed = self.log.remove_head(|seg| {
            let below_start = seg.next_offset() <= log_start;
            // An empty segment's max timestamp is i64::MIN: expired by time.
            let by_time = seg.max_timestamp() < cutoff;
            let by_size = retention_bytes.is_some_and(|max| total - seg.log_bytes() >= max);
            let expired = below_start || by_time || by_size;
            if expired {
                total -= seg.log_bytes();
            }
            expired
        });
        if removed.is_empty() {
            return 0;
        }
        // 1. readers first: nothing below the new start is served any more.
        let new_start = self.log.start_offset().max(self.log_start.get());
        if new_start > self.log_start.get() {
            self.log_start.set(new_start);
            self.check_invariants();
        }
        for seg in &removed {
            info!(tp = %self.tp, file = %seg.log_path().display(), base_offset = seg.base_offset(),
                next_offset = seg.next_offset(), bytes = seg.log_bytes(),
                max_timestamp = seg.max_timestamp(), log_start = new_start, "deleting segment (retention)");
        }
        // 2. then the files, and the directory entry removals made durable.
        if let Err(e) = self.log.delete_files(&removed).await {
            warn!(tp = %self.tp, error = %e, "deleting expired segment files failed");
        }
        // Producer-state snapshots go with their segments.
        self.delete_old_snapshots().await;
        removed.len()
    }
}

/// Runs a retention pass every `retention_check_interval_ms` until the
/// partition is closed or dropped.
pub(super) async fn retention_loop(weak: Weak<Partition>) {
    let every = match weak.upgrade() {
        Some(p) => Duration::from_millis(p.limits.retention_check_interval_ms.max(1)),
        None => return,
    };
    loop {
        // First pass one interval after open, not during recovery.
        crate::timer::sleep(every).await;
        let Some(p) = weak.upgrade() else { return };
        if p.closing.get() {
            return;
        }
        p.delete_expired().await;
        p.expire_producers();
    }
}
