//! Leader-epoch and replica operations of a partition (split out of
//! [`super`]): the leader epoch and its durable history ([`super::epochs`]),
//! recovery of that history at open, OffsetsForLeaderEpoch, and truncation
//! to an offset.
//!
//! Invariants: the leader epoch never goes backwards (an older one is
//! refused); the epoch checkpoint always ends up holding the latest
//! entries; truncation waits for the writer to go idle and lowers the high
//! watermark before the files shrink; after it the idempotent-producer
//! state is rebuilt to the new end.
//!
//! Must not know: connections, the wire format, other shards.

use super::{epochs, Partition, PartitionError};
use crate::protocol::{Offset, TopicPartition};
use crate::storage::checkpoint;
use crate::storage::log::Log;

impl Partition {
    /// The epoch stamped on leader appends.
    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch.get()
    }
    /// The epoch history: (epoch, first offset), oldest first.
    pub fn leader_epochs(&self) -> Vec<(u32, Offset)> {
        self.epochs.borrow().entries().to_vec()
    }
    /// OffsetsForLeaderEpoch: the largest known epoch `<= epoch` and the
    /// offset where it ends on this replica.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, Offset)> {
        self.epochs
            .borrow()
            .end_offset_for(epoch, self.log.written_offset())
    }

    /// Starts leader epoch `epoch` at the current log end (a leader taking
    /// over): later appends are stamped with it, and the epoch history with
    /// its start is checkpointed before this returns. The same epoch again
    /// changes nothing; an older one is refused.
    pub async fn set_leader_epoch(&self, epoch: u32) -> Result<(), PartitionError> {
        let current = self.leader_epoch.get();
        if epoch < current {
            return Err(PartitionError::StaleLeaderEpoch {
                tp: self.tp.clone(),
                epoch,
                current,
            });
        }
        self.leader_epoch.set(epoch);
        if self.epochs.borrow_mut().assign(epoch, self.log_end.get()) {
            self.epochs_dirty.set(true);
        }
        self.persist_epochs().await
    }

    /// Writes the epoch history if it changed (one writer at a time; the
    /// checkpoint always ends up holding the latest entries).
    pub(super) async fn persist_epochs(&self) -> Result<(), PartitionError> {
        let Ok(_permit) = self.epochs_gate.acquire_permit(1).await else {
            return Ok(());
        };
        while self.epochs_dirty.replace(false) {
            let bytes = checkpoint::encode_epochs(self.epochs.borrow().entries());
            if let Err(e) = checkpoint::write_atomic(
                &self.log.io().disk,
                self.log.dir(),
                checkpoint::LEADER_EPOCH,
                &bytes,
            )
            .await
            {
                self.epochs_dirty.set(true);
                return Err(PartitionError::from_storage(e));
            }
        }
        Ok(())
    }

    /// Truncates the log to the start of the batch holding `offset` (a
    /// follower dropping a suffix the leader does not have), durably:
    /// waits for the writer to go idle (appends are refused meanwhile),
    /// lowers the recovery point, cuts the files, the high watermark, the
    /// cache and the epoch history. Returns the new log end (`<= offset`).
    /// `offset` below the log start is `OffsetOutOfRange`.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, PartitionError> {
        self.check_writable()?;
        if offset < self.log_start.get() {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start: self.log_start.get(),
                log_end: self.log_end.get(),
            });
        }
        self.truncating.set(true);
        self.writer_done_waiters
            .wait(|| {
                self.queue.borrow().is_empty()
                    && !self.writer_in_turn.get()
                    && self.local_durable.get() == self.log_end.get()
            })
            .await;
        // Readers stop below the cut before the files shrink, and nothing
        // read ahead from the old files is served after it.
        self.readahead.borrow_mut().take();
        self.last_disk_fetch_end.set(Offset::MAX);
        self.high_watermark.set(
            self.high_watermark
                .get()
                .min(offset)
                .max(self.log_start.get()),
        );
        let res = self.log.truncate_to(offset).await;
        self.truncating.set(false);
        let end = res.map_err(PartitionError::from_storage)?;
        if end < self.log_end.get() {
            self.cache.clear();
        }
        self.log_end.set(self.log_end.get().min(end));
        self.local_durable.set(self.local_durable.get().min(end));
        self.high_watermark.set(self.high_watermark.get().min(end));
        self.check_invariants();
        if self.epochs.borrow_mut().truncate_from_end(end) {
            self.epochs_dirty.set(true);
        }
        self.persist_epochs().await?;
        // Producer state describes the new end: snapshots past it go, and
        // the rest is rebuilt from the latest one below it and the log.
        self.reload_producers(end).await?;
        Ok(end)
    }
}

/// Reads the leader-epoch checkpoint at open: entries past the recovered
/// log end are dropped (their data did not survive). A partition without
/// a checkpoint (new, or written before epochs were stamped) starts with
/// epoch 0 at its log start. Returns the history and whether it must be
/// rewritten.
pub(super) async fn recover_epochs(
    tp: &TopicPartition,
    log: &Log,
    log_start: Offset,
) -> Result<(epochs::LeaderEpochs, bool), PartitionError> {
    let read = checkpoint::read(&log.io().disk, log.dir(), checkpoint::LEADER_EPOCH)
        .await
        .map_err(PartitionError::from_storage)?;
    let mut e = match read.map(|b| checkpoint::parse_epochs(&b)) {
        None => epochs::LeaderEpochs::default(),
        Some(Ok(entries)) => epochs::LeaderEpochs::from_entries(entries),
        Some(Err(why)) => {
            tracing::warn!(%tp, reason = %why, "unreadable leader-epoch checkpoint: starting over at epoch 0");
            epochs::LeaderEpochs::default()
        }
    };
    let mut dirty = e.drop_past(log.written_offset());
    if e.latest().is_none() && log.written_offset() > log_start {
        // Data from before epochs were kept was all appended in epoch 0.
        dirty |= e.assign(0, log_start);
    }
    Ok((e, dirty))
}
