//! The partition's writer task: group write and group commit.
//!
//! Owns: taking queued batches off the partition's queue as groups (group
//! commit: everything queued while the last group was written and synced
//! goes in the next), writing each group with one write, making it durable
//! per the flush policy, then committing it in order: storage reports the
//! flushed offset → the group's tickets complete (local durability,
//! acks=leader) and its batches enter the cache → the partition advances
//! the high watermark (`Partition::advance_high_watermark`) → waiters below
//! it wake. Also the flush=interval sync task and the periodic
//! recovery-point checkpoint.
//!
//! Stamping and copying happen once per batch, in the segment's aligned
//! write buffer. The cache keeps each committed batch as two pieces without
//! copying it: its stamped prefix ([`batch::STAMPED_PREFIX_BYTES`], stamped
//! again into one small buffer per group, the same bytes the segment wrote)
//! and the rest of the producer's buffer. Replica batches are never
//! restamped.
//!
//! (Overlapping group N's fdatasync with group N+1's write was tried and
//! measured no faster on the bench disk: docs/benchmarks.md.)
//!
//! Invariants:
//! - a group commits right after the previous one (asserted: it starts at
//!   the old local durable offset), and with flush=always only once the
//!   flushed offset covers it (asserted);
//! - the high watermark moves only past groups that are durable per the
//!   flush policy;
//! - groups complete in offset order; a failed write or fdatasync fails its
//!   group and everything queued, and rolls the segment back to before the
//!   group, so nothing after a hole is ever acknowledged.

use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{error, warn};

use super::cache::CachedBatch;
use super::{Partition, PartitionError, Pending};
use crate::protocol::batch::{self, Stamp};
use crate::storage::segment::{Mark, Segment};

/// How often a partition makes its flushed offset the durable recovery
/// point, in ms (also done on roll and at close; Kafka's
/// `log.flush.offset.checkpoint.interval.ms` default).
pub const RECOVERY_POINT_INTERVAL_MS: u64 = 60_000;

/// Largest group the writer submits as one write, in bytes (a single larger
/// batch is still written alone).
const MAX_GROUP_WRITE_BYTES: u64 = 8 * 1024 * 1024;

/// A group that is written and not yet acknowledged.
pub(super) struct Written {
    seg: Rc<Segment>,
    /// The segment before this group (rollback point).
    mark: Mark,
    group: Vec<Pending>,
    last_offset: u64,
}

impl Partition {
    fn needs_roll(&self, seg: &Segment, first: &Pending) -> bool {
        if seg.is_empty() {
            return false;
        }
        let len = first.bytes.len() as u64;
        let (segment_bytes, segment_ms) = {
            let c = self.config.borrow();
            (c.segment_bytes, c.segment_ms)
        };
        seg.log_bytes() + len > segment_bytes
            || seg.log_bytes() + len > u32::MAX as u64
            || first.last_offset - seg.base_offset() > u32::MAX as u64
            || seg
                .first_append()
                .is_some_and(|t| self.log.clock().elapsed(t) >= Duration::from_millis(segment_ms))
    }

    fn front_needs_roll(&self) -> bool {
        match self.queue.borrow().front() {
            Some(first) => self.needs_roll(&self.log.active(), first),
            None => false,
        }
    }

    /// Fails every queued batch and rewinds the log end to what is written.
    pub(super) fn fail_queued(&self, err: &PartitionError) {
        let queued: Vec<Pending> = self.queue.borrow_mut().drain(..).collect();
        for p in queued {
            p.slot.complete(Err(err.clone()));
        }
        self.producers_rolled_back();
        self.log_end.set(self.log.next_offset());
        self.check_invariants();
    }

    /// Rolls the segment if the first queued batch needs it. False (with
    /// everything queued failed) if the roll failed.
    async fn roll_if_needed(&self) -> bool {
        if !self.front_needs_roll() {
            return true;
        }
        let seg = match self.log.roll().await {
            Ok(seg) => seg,
            Err(e) => {
                let err = PartitionError::from_storage(e);
                error!(tp = %self.tp, error = %err, "segment roll failed");
                self.fail_queued(&err);
                return false;
            }
        };
        self.fdatasyncs.set(self.fdatasyncs.get() + 1);
        self.snapshot_producers(seg.base_offset()).await;
        true
    }

    /// Takes the next group off the queue (up to a segment boundary and
    /// `MAX_GROUP_WRITE_BYTES`) and writes it with one write. None if
    /// nothing was queued or the write failed (then the group and everything
    /// queued are failed and the segment rolled back).
    async fn write_next_group(&self) -> Option<Written> {
        let seg = self.log.active();
        let segment_bytes = self.config.borrow().segment_bytes;
        let mut group = Vec::new();
        {
            let mut q = self.queue.borrow_mut();
            let mut seg_bytes = seg.log_bytes();
            let mut group_bytes = 0u64;
            while let Some(p) = q.front() {
                let len = p.bytes.len() as u64;
                if !group.is_empty()
                    && (seg_bytes + len > segment_bytes
                        || group_bytes + len > MAX_GROUP_WRITE_BYTES
                        || p.last_offset - seg.base_offset() > u32::MAX as u64)
                {
                    break;
                }
                seg_bytes += len;
                group_bytes += len;
                if let Some(p) = q.pop_front() {
                    group.push(p);
                }
            }
        }
        let last_offset = group.last()?.last_offset;
        if self.epochs_dirty.get() {
            // The epoch history goes to disk before any batch of a new epoch.
            if let Err(e) = self.persist_epochs().await {
                error!(tp = %self.tp, error = %e, "leader-epoch checkpoint failed");
                for p in group {
                    p.slot.complete(Err(e.clone()));
                }
                self.fail_queued(&e);
                return None;
            }
        }
        // The segment stamps each batch while copying it into its aligned
        // write buffer: the one copy and the one stamping step.
        let items: Vec<(Bytes, Option<Stamp>)> =
            group.iter().map(|p| (p.bytes.clone(), p.stamp)).collect();
        let mark = seg.mark();
        // flush=always: the write itself is durable where the segment can
        // make it so (write-through); the flush below syncs the rest.
        let write_through = self.config.borrow().flush.is_always();
        let res = seg.append(&items, write_through).await;
        self.group_writes.set(self.group_writes.get() + 1);
        let written = Written {
            seg,
            mark,
            group,
            last_offset,
        };
        match res {
            Ok(()) => {
                debug_assert_eq!(
                    written.seg.next_offset(),
                    last_offset + 1,
                    "offsets not contiguous"
                );
                Some(written)
            }
            Err(e) => {
                self.fail_written(written, PartitionError::from_storage(e), "write")
                    .await;
                None
            }
        }
    }

    /// The group is durable on this replica per the flush policy: complete
    /// its tickets (local durability), cache it, then let the partition
    /// advance the high watermark (which wakes the waiters below it).
    fn commit(&self, w: Written) {
        let first = w.group.first().map_or(w.last_offset, |p| p.base_offset);
        assert_eq!(
            first,
            self.local_durable.get(),
            "a group commits right after the previous one"
        );
        assert!(
            w.last_offset < self.log.written_offset(),
            "a committed group is written"
        );
        self.local_durable.set(w.last_offset + 1);
        self.producers_committed(
            w.group
                .iter()
                .map(|p| (&p.producer, p.base_offset, p.last_offset)),
        );
        if self.cache.enabled() {
            self.cache.insert(cached_batches(&w.group));
        }
        for p in w.group {
            p.slot.complete(Ok(()));
        }
        self.advance_high_watermark();
        self.check_invariants();
    }

    /// Fails the group `w` and everything queued, and rolls the segment
    /// back to before `w`.
    async fn fail_written(&self, w: Written, err: PartitionError, what: &str) {
        error!(tp = %self.tp, error = %err, batches = w.group.len(),
            "{what} failed; failing the group and everything queued after it");
        // Bytes read ahead may include the group being rolled back.
        self.readahead.borrow_mut().take();
        self.log.rollback(&w.seg, w.mark).await;
        for p in w.group {
            p.slot.complete(Err(err.clone()));
        }
        self.fail_queued(&err);
    }

    /// One turn of the writer: rolls the segment if needed, writes the next
    /// group and makes it durable per the flush policy (flush=always: one
    /// fdatasync for the whole group), then acknowledges it.
    async fn write_turn(&self) {
        if !self.roll_if_needed().await {
            return;
        }
        let Some(w) = self.write_next_group().await else {
            return;
        };
        if !self.config.borrow().flush.is_always() {
            self.dirty.set(true);
            self.commit(w);
            return;
        }
        let res = self.log.flush().await;
        self.fdatasyncs.set(self.fdatasyncs.get() + 1);
        match res {
            Ok(flushed) => {
                assert!(
                    flushed > w.last_offset,
                    "flushed {flushed} must cover the group up to {}",
                    w.last_offset
                );
                self.commit(w)
            }
            Err(e) => {
                let err = PartitionError::from_storage(e);
                self.fail_written(w, err, "fdatasync").await;
            }
        }
    }
}

/// Waits for queued batches and writes them, group by group, until closed.
pub(super) async fn writer_loop(weak: Weak<Partition>) {
    loop {
        let has_work = std::future::poll_fn(|cx| {
            let Some(p) = weak.upgrade() else {
                return Poll::Ready(false);
            };
            if !p.queue.borrow().is_empty() {
                return Poll::Ready(true);
            }
            if p.closing.get() {
                return Poll::Ready(false);
            }
            *p.writer_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(p) = weak.upgrade() else { return };
        if !has_work {
            p.writer_running.set(false);
            p.writer_done_waiters.wake_all();
            return;
        }
        p.writer_in_turn.set(true);
        p.write_turn().await;
        p.writer_in_turn.set(false);
        p.writer_done_waiters.wake_all();
    }
}

/// Makes the flushed offset the durable recovery point every
/// [`RECOVERY_POINT_INTERVAL_MS`] until the partition closes.
pub(super) async fn recovery_point_loop(weak: Weak<Partition>) {
    loop {
        crate::timer::sleep(Duration::from_millis(RECOVERY_POINT_INTERVAL_MS)).await;
        let Some(p) = weak.upgrade() else { return };
        if p.closing.get() {
            return;
        }
        if let Err(e) = p.log.checkpoint_recovery_point().await {
            warn!(tp = %p.tp, error = %e, "recovery-point checkpoint failed; will retry");
        }
    }
}

/// flush=interval: fdatasyncs the active segment every interval_ms if
/// written to. Ends (after a last sync) once the policy is no longer interval.
pub(super) async fn sync_loop(weak: Weak<Partition>) {
    loop {
        let every = match weak.upgrade() {
            Some(p) => p.config.borrow().flush.interval_ms(),
            None => return,
        };
        crate::timer::sleep(Duration::from_millis(every.unwrap_or(1).max(1))).await;
        let Some(p) = weak.upgrade() else { return };
        if p.closed.get() {
            return;
        }
        let stop = p.config.borrow().flush.interval_ms().is_none();
        if stop {
            p.sync_running.set(false);
        }
        if p.dirty.replace(false) {
            match p.log.flush().await {
                Ok(_) => p.fdatasyncs.set(p.fdatasyncs.get() + 1),
                Err(e) => {
                    warn!(tp = %p.tp, error = %e, "interval fdatasync failed; will retry");
                    p.dirty.set(true);
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// The group's batches as the cache keeps them: each batch's stamped
/// prefix (leader appends: copied into one small buffer for the group and
/// stamped there exactly as the segment stamped its copy; replica batches:
/// their own prefix, already stamped) and the rest of its buffer, uncopied.
fn cached_batches(group: &[Pending]) -> Vec<CachedBatch> {
    const PREFIX: usize = batch::STAMPED_PREFIX_BYTES;
    let stamped = group.iter().filter(|p| p.stamp.is_some()).count();
    let mut heads = BytesMut::with_capacity(stamped * PREFIX);
    for p in group {
        if let Some(s) = p.stamp {
            let at = heads.len();
            heads.extend_from_slice(&p.bytes[..PREFIX]);
            batch::stamp(&mut heads[at..], s);
        }
    }
    let mut heads = heads.freeze();
    group
        .iter()
        .map(|p| {
            assert!(
                p.bytes.len() > PREFIX,
                "a validated batch is longer than its prefix"
            );
            let head = match p.stamp {
                Some(_) => heads.split_to(PREFIX),
                None => p.bytes.slice(..PREFIX),
            };
            CachedBatch {
                base: p.base_offset,
                next: p.last_offset + 1,
                head,
                body: p.bytes.slice(PREFIX..),
            }
        })
        .collect()
}
