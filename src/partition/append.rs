//! The append path of a partition (split out of [`super`]): offset
//! assignment on leader appends, offset checks on replica appends at the
//! leader's offsets, and queueing for the writer (which does the single
//! stamping step). Idempotent batches (`producer_id >= 0`) are checked
//! against the producer state first, synchronously in call order
//! ([`super::producer_log`]): a duplicate gets its original's offsets and
//! ticket and is not queued; a fenced or out-of-order one is refused.
//!
//! Invariants: offsets are assigned synchronously in `append` call order and
//! are contiguous; a batch starts at the log end; appends are refused while
//! closing or truncating and on a partition whose acknowledged data is
//! damaged.
//!
//! Must not know: connections, the wire format, other shards.

use std::rc::Rc;

use bytes::Bytes;

use super::producers::{ProducerBatch, Verdict};
use super::waiters::TicketSlot;
use super::{AppendTicket, Partition, PartitionError};
use crate::protocol::batch::{self, BatchHeader, Stamp};
use crate::protocol::Offset;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

/// A validated batch waiting for the writer.
pub(super) struct Pending {
    pub(super) base_offset: Offset,
    pub(super) last_offset: Offset,
    pub(super) bytes: Bytes,
    /// What to stamp (leader appends), or `None`: the bytes are already
    /// stamped (a replica append at the leader's offsets).
    pub(super) stamp: Option<Stamp>,
    pub(super) slot: Rc<TicketSlot>,
    /// The producer fields of an idempotent batch.
    pub(super) producer: Option<ProducerBatch>,
}

impl Partition {
    /// Appends are refused while closing or truncating, and on a partition
    /// whose acknowledged data is damaged (an operator must act first:
    /// docs/storage.md, "Acknowledged damage").
    pub(super) fn check_writable(&self) -> Result<(), PartitionError> {
        if self.closing.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        if self.truncating.get() {
            return Err(PartitionError::Storage(format!(
                "partition {} is being truncated",
                self.tp
            )));
        }
        if let Some(d) = self.log.acked_damage() {
            return Err(PartitionError::CorruptData {
                file: d.file.clone(),
                offset: d.offset,
                reason: format!(
                    "appends are refused: acknowledged data is damaged ({}); see docs/storage.md, \"Acknowledged damage\"",
                    d.reason
                ),
            });
        }
        Ok(())
    }

    /// Checks size and content of a batch from a producer or a leader.
    fn validate(&self, batch: &[u8]) -> Result<BatchHeader, PartitionError> {
        if batch.len() > self.limits.max_batch_bytes as usize {
            return Err(PartitionError::MessageTooLarge {
                bytes: batch.len(),
                max_batch_bytes: self.limits.max_batch_bytes,
            });
        }
        Ok(batch::validate_bounded(
            batch,
            self.limits.max_decompressed_batch_bytes as usize,
        )?)
    }

    /// Validates the batch, assigns offsets and queues it (synchronously, so
    /// call order is offset order). The writer stamps the assigned base
    /// offset and the current leader epoch (once, in place). An idempotent
    /// producer's duplicate gets the original's offsets and ticket instead.
    pub fn append(self: &Rc<Self>, batch: Bytes) -> Result<AppendTicket, PartitionError> {
        self.check_writable()?;
        let h = self.validate(&batch)?;
        if let Some(pb) = ProducerBatch::of(&h) {
            if let Verdict::Duplicate(m) = self.check_producer(&pb)? {
                return Ok(self.duplicate_ticket(m));
            }
        }
        let base_offset = self.log_end.get();
        let leader_epoch = self.leader_epoch.get();
        let stamp = Stamp {
            base_offset,
            leader_epoch,
        };
        if self.epochs.borrow_mut().assign(leader_epoch, base_offset) {
            self.epochs_dirty.set(true);
        }
        Ok(self.enqueue(batch, &h, base_offset, Some(stamp)))
    }

    /// A follower's append at the leader's offsets: the batch keeps the base
    /// offset and leader epoch the leader stamped (it is not restamped) and
    /// must start exactly at this log's end; an epoch newer than the latest
    /// known starts a new entry in the epoch history. Synchronous like
    /// `append`.
    pub fn append_replica(self: &Rc<Self>, batch: Bytes) -> Result<AppendTicket, PartitionError> {
        self.check_writable()?;
        let h = self.validate(&batch)?;
        let end = self.log_end.get();
        if h.base_offset != end {
            return Err(PartitionError::ReplicaMismatch {
                tp: self.tp.clone(),
                reason: format!(
                    "batch base offset {} is not the log end {end}",
                    h.base_offset
                ),
            });
        }
        if let Some((latest, _)) = self.epochs.borrow().latest() {
            if h.leader_epoch < latest {
                return Err(PartitionError::ReplicaMismatch {
                    tp: self.tp.clone(),
                    reason: format!(
                        "batch leader epoch {} is older than the latest epoch {latest}",
                        h.leader_epoch
                    ),
                });
            }
        }
        if self.epochs.borrow_mut().assign(h.leader_epoch, end) {
            self.epochs_dirty.set(true);
        }
        if h.leader_epoch > self.leader_epoch.get() {
            self.leader_epoch.set(h.leader_epoch);
        }
        Ok(self.enqueue(batch, &h, end, None))
    }

    fn enqueue(
        self: &Rc<Self>,
        bytes: Bytes,
        h: &BatchHeader,
        base_offset: Offset,
        stamp: Option<Stamp>,
    ) -> AppendTicket {
        assert_eq!(
            base_offset,
            self.log_end.get(),
            "a batch starts at the log end"
        );
        let last_offset = base_offset + h.last_offset_delta as u64;
        self.log_end.set(last_offset + 1);
        let slot = Rc::new(TicketSlot::default());
        let producer = ProducerBatch::of(h);
        if let Some(pb) = &producer {
            self.producer_appended(pb, base_offset, last_offset, &slot);
        }
        self.queue.borrow_mut().push_back(Pending {
            base_offset,
            last_offset,
            bytes,
            stamp,
            slot: slot.clone(),
            producer,
        });
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
        AppendTicket {
            result: AppendResult {
                base_offset,
                last_offset,
                log_start_offset: self.log_start.get(),
            },
            slot,
            partition: Rc::downgrade(self),
        }
    }
}
