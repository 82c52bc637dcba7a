//! One partition's log state and its append/fetch paths (docs/storage.md).
//!
//! Owns: offset assignment (leader appends) and offset checks (replica
//! appends at the leader's offsets), the single stamping step (base offset +
//! leader epoch), the per-partition writer task (group write + group
//! commit), the high watermark and the waiters keyed by offset (long polls,
//! acks=all), the leader epoch and its durable history ([`epochs`]), fetch
//! and list_offset over the segments of [`crate::storage::log::Log`], and
//! truncation to an offset.
//!
//! Offsets, lowest first (asserted by `check_invariants` after every change):
//! `log_start <= high_watermark <= local_durable <= written <= log_end`, and
//! `flushed <= written`. `log_end` is the next offset to assign (batches may
//! still be queued); `written`/`flushed` are the storage's
//! (`Log::written_offset`/`flushed_offset`); `local_durable` is what this
//! replica made durable per the flush policy (flush=always: fdatasynced;
//! interval: written) — acks=leader waits for it; the high watermark is
//! decided in one place, [`Partition::high_watermark_target`] (one node: the
//! local durable offset; with replication: the minimum over the in-sync
//! replicas) — consumers read below it and acks=all waits for it.
//!
//! Commit order in the writer: storage reports flushed → the group's
//! tickets complete (local durability) → the high watermark advances → the
//! waiters below it are woken.
//!
//! Owned by exactly one shard (it is `!Send`: `Rc`, `RefCell`, `Cell`).
//! Offsets are assigned synchronously in `append` call order and are
//! contiguous; every batch is CRC-checked on append and again on every read
//! from disk. Recently written batches are also in the shard's
//! [`cache::BatchCache`], stamped, and fetches that reach them are served
//! from memory. A partition whose recovery found damage to acknowledged data
//! serves the intact prefix and refuses appends (CorruptData).
//!
//! Must not know: connections, the wire format, other shards.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{RecoveryScan, TopicConfig};
use crate::io::{FaultInjector, Io};
use crate::protocol::batch::{self, BatchError, BatchHeader, Stamp};
use crate::protocol::messages::OffsetSpec;
use crate::protocol::{ErrorCode, Offset, TopicPartition, WireError};
use crate::storage::checkpoint;
use crate::storage::log::Log;
use crate::storage::segment::{Next, Segment};
use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    #[error("{tp}: offset {offset} is not in [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        tp: TopicPartition,
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("corrupt batch: {0}")]
    CorruptBatch(#[from] BatchError),
    #[error("batch of {bytes} bytes exceeds max_batch_bytes ({max_batch_bytes})")]
    MessageTooLarge { bytes: usize, max_batch_bytes: u32 },
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    CorruptData {
        file: PathBuf,
        offset: Offset,
        reason: String,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("partition {0} is closed")]
    Closed(TopicPartition),
    /// A replica append that does not continue this log (offset gap or
    /// overlap, or an older leader epoch).
    #[error("replica append to {tp} refused: {reason}")]
    ReplicaMismatch { tp: TopicPartition, reason: String },
    /// A leader epoch older than the partition's current one.
    #[error("leader epoch {epoch} of {tp} is older than the current epoch {current}")]
    StaleLeaderEpoch {
        tp: TopicPartition,
        epoch: u32,
        current: u32,
    },
}

impl PartitionError {
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            PartitionError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            PartitionError::StorageFull(_) => ErrorCode::StorageFull,
            PartitionError::CorruptData { .. } => ErrorCode::CorruptData,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            // Closed: the partition is being deleted or the broker is
            // stopping; "not here (any more)", which clients treat as
            // retriable after a metadata refresh (as Kafka does). Not
            // NotLeader: that will mean another replica leads.
            PartitionError::Closed(_) => ErrorCode::UnknownTopicOrPartition,
            PartitionError::ReplicaMismatch { .. } => ErrorCode::InvalidRequest,
            PartitionError::StaleLeaderEpoch { .. } => ErrorCode::NotLeader,
        };
        // The wire error's display already names the code ("storage full:
        // ..."): send the detail alone where this error's text would only
        // repeat it.
        let message = match self {
            PartitionError::StorageFull(detail) | PartitionError::Storage(detail) => detail.clone(),
            PartitionError::CorruptBatch(e) => e.to_string(),
            other => other.to_string(),
        };
        WireError::new(code, message)
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

impl PartitionError {
    fn from_storage(e: StorageError) -> Self {
        if e.is_storage_full() {
            return PartitionError::StorageFull(e.to_string());
        }
        match e {
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => PartitionError::CorruptData {
                file,
                offset,
                reason,
            },
            e @ (StorageError::Io { .. } | StorageError::UnknownFormat { .. }) => {
                PartitionError::Storage(e.to_string())
            }
        }
    }
}

/// Largest single read a fetch issues, in bytes (bigger fetches read more
/// than once; a bigger single batch is read whole).
const MAX_FETCH_READ_BYTES: usize = 1024 * 1024;

/// Completion slot shared by a ticket and the writer.
#[derive(Default)]
struct TicketSlot {
    done: RefCell<Option<Result<(), PartitionError>>>,
    waker: RefCell<Option<Waker>>,
}

impl TicketSlot {
    fn complete(&self, r: Result<(), PartitionError>) {
        *self.done.borrow_mut() = Some(r);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Returned by `Partition::append` once offsets are assigned. `wait`
/// resolves when the batch is durable on this replica per the flush policy
/// (acks=leader); `wait_all` when the high watermark passed it (acks=all;
/// the same moment on one node, through its own path).
pub struct AppendTicket {
    result: AppendResult,
    slot: Rc<TicketSlot>,
    partition: Weak<Partition>,
}

impl AppendTicket {
    pub fn result(&self) -> AppendResult {
        self.result
    }

    /// acks=leader: resolves once the batch is durable on this replica.
    pub async fn wait(self) -> Result<AppendResult, PartitionError> {
        let result = self.result;
        let slot = self.slot;
        std::future::poll_fn(move |cx| {
            if let Some(r) = slot.done.borrow_mut().take() {
                return Poll::Ready(r.map(|()| result));
            }
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// acks=all: resolves once the high watermark passed the batch (after
    /// local durability, so a failed write still fails the ticket).
    pub async fn wait_all(self) -> Result<AppendResult, PartitionError> {
        let partition = self.partition.clone();
        let result = self.wait().await?;
        let Some(p) = partition.upgrade() else {
            return Err(PartitionError::Storage(
                "partition dropped before the high watermark passed the batch".into(),
            ));
        };
        let last = result.last_offset;
        p.hw_waiters
            .wait(last, || p.high_watermark.get() > last || p.closing.get())
            .await;
        if p.high_watermark.get() > last {
            Ok(result)
        } else {
            Err(PartitionError::Closed(p.tp.clone()))
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchData {
    /// Whole batches, the first one containing `fetch_offset`, none at or
    /// beyond the high watermark.
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

#[derive(Debug, Clone, Copy)]
pub struct PartitionLimits {
    pub max_batch_bytes: u32,
    /// How often the retention task checks for expired segments, in ms.
    pub retention_check_interval_ms: u64,
    /// Whether sealed segments are CRC-checked in the background after open.
    pub recovery_scan: RecoveryScan,
}

/// A validated batch waiting for the writer.
struct Pending {
    base_offset: Offset,
    last_offset: Offset,
    bytes: Bytes,
    /// What to stamp (leader appends), or `None`: the bytes are already
    /// stamped (a replica append at the leader's offsets).
    stamp: Option<Stamp>,
    slot: Rc<TicketSlot>,
}

pub struct Partition {
    tp: TopicPartition,
    /// Live topic settings; `set_config` replaces them (never borrowed across an await).
    config: RefCell<TopicConfig>,
    limits: PartitionLimits,
    /// True while the flush=interval sync task runs.
    sync_running: Cell<bool>,
    /// Serializes writes of the log-start checkpoint file.
    checkpoint_busy: Cell<bool>,
    checkpoint_waiters: WaitList,
    log: Log,
    /// Recently written batches (served by fetch without a disk read).
    cache: PartitionCache,
    log_start: Cell<Offset>,
    /// Next offset to assign (queued batches included).
    log_end: Cell<Offset>,
    /// End of what this replica made durable per the flush policy.
    local_durable: Cell<Offset>,
    high_watermark: Cell<Offset>,
    /// Epoch stamped on leader appends.
    leader_epoch: Cell<u32>,
    /// Durable epoch history (`leader-epoch-checkpoint`).
    epochs: RefCell<epochs::LeaderEpochs>,
    /// `epochs` changed since it was last written.
    epochs_dirty: Cell<bool>,
    /// One epoch checkpoint write at a time.
    epochs_gate: glommio::sync::Semaphore,
    queue: RefCell<VecDeque<Pending>>,
    writer_waker: RefCell<Option<Waker>>,
    writer_running: Cell<bool>,
    /// True while the writer is in a turn (a group is being written).
    writer_in_turn: Cell<bool>,
    /// Woken when the writer stops, and after every writer turn.
    writer_done_waiters: WaitList,
    /// True while `truncate_to` runs (appends are refused).
    truncating: Cell<bool>,
    /// Long polls and acks=all, keyed by the offset the high watermark
    /// must pass.
    hw_waiters: OffsetWaiters,
    closing: Cell<bool>,
    closed: Cell<bool>,
    dirty: Cell<bool>,
    fdatasyncs: Cell<u64>,
    group_writes: Cell<u64>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Lets a detached writer notice the partition is gone and exit.
        if let Some(w) = self.writer_waker.get_mut().take() {
            w.wake();
        }
        // Dropped without close: whatever is still queued will never be
        // written; tell its waiters instead of leaving them hanging.
        for p in self.queue.get_mut().drain(..) {
            p.slot
                .complete(Err(PartitionError::Closed(self.tp.clone())));
        }
    }
}

/// Wakers of tasks waiting for a condition. A waiter that gives up (e.g. a
/// timed-out `wait_for_data`) removes itself, so the list cannot grow on an
/// idle partition.
#[derive(Default)]
struct WaitList {
    next_id: Cell<u64>,
    wakers: RefCell<BTreeMap<u64, Waker>>,
}

impl WaitList {
    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, w) in wakers {
            w.wake();
        }
    }

    /// Resolves once `ready()` holds (checked at every wake-up).
    fn wait<F: Fn() -> bool + Unpin>(&self, ready: F) -> WaitFor<'_, F> {
        WaitFor {
            list: self,
            id: None,
            ready,
        }
    }
}

struct WaitFor<'a, F: Fn() -> bool + Unpin> {
    list: &'a WaitList,
    id: Option<u64>,
    ready: F,
}

impl<F: Fn() -> bool + Unpin> Future for WaitFor<'_, F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            if let Some(id) = self.id.take() {
                self.list.wakers.borrow_mut().remove(&id);
            }
            return Poll::Ready(());
        }
        let list = self.list;
        let id = *self.id.get_or_insert_with(|| {
            let id = list.next_id.get();
            list.next_id.set(id + 1);
            id
        });
        list.wakers.borrow_mut().insert(id, cx.waker().clone());
        Poll::Pending
    }
}

impl<F: Fn() -> bool + Unpin> Drop for WaitFor<'_, F> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.list.wakers.borrow_mut().remove(&id);
        }
    }
}

/// Wakers keyed by the offset the high watermark must pass: advancing the
/// high watermark wakes exactly the waiters below it.
#[derive(Default)]
struct OffsetWaiters {
    next_id: Cell<u64>,
    wakers: RefCell<BTreeMap<(Offset, u64), Waker>>,
}

impl OffsetWaiters {
    /// Wakes every waiter for an offset below `hw`.
    fn wake_below(&self, hw: Offset) {
        let ready = {
            let mut m = self.wakers.borrow_mut();
            let rest = m.split_off(&(hw, 0));
            std::mem::replace(&mut *m, rest)
        };
        for (_, w) in ready {
            w.wake();
        }
    }

    fn wake_all(&self) {
        let all = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, w) in all {
            w.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// Resolves once `ready()` holds, checked whenever the high watermark
    /// passes `offset` (or everything is woken).
    fn wait<F: Fn() -> bool + Unpin>(&self, offset: Offset, ready: F) -> WaitOffset<'_, F> {
        WaitOffset {
            list: self,
            key: None,
            offset,
            ready,
        }
    }
}

struct WaitOffset<'a, F: Fn() -> bool + Unpin> {
    list: &'a OffsetWaiters,
    key: Option<(Offset, u64)>,
    offset: Offset,
    ready: F,
}

impl<F: Fn() -> bool + Unpin> Future for WaitOffset<'_, F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.ready)() {
            if let Some(k) = self.key.take() {
                self.list.wakers.borrow_mut().remove(&k);
            }
            return Poll::Ready(());
        }
        let (list, offset) = (self.list, self.offset);
        let key = *self.key.get_or_insert_with(|| {
            let id = list.next_id.get();
            list.next_id.set(id + 1);
            (offset, id)
        });
        list.wakers.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl<F: Fn() -> bool + Unpin> Drop for WaitOffset<'_, F> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.list.wakers.borrow_mut().remove(&k);
        }
    }
}

impl Partition {
    /// Opens (creating if absent) the partition stored in `dir`, recovering
    /// the active segment's tail and rebuilding missing indexes, with a batch
    /// cache of its own ([`PRIVATE_CACHE_BYTES`]).
    pub async fn open(
        tp: TopicPartition,
        dir: PathBuf,
        config: TopicConfig,
        limits: PartitionLimits,
    ) -> Result<Rc<Partition>, PartitionError> {
        let cache = BatchCache::new(PRIVATE_CACHE_BYTES);
        Self::open_with_cache(tp, dir, config, limits, &cache).await
    }

    /// [`Partition::open`], caching recent batches in the shard's `cache`.
    pub async fn open_with_cache(
        tp: TopicPartition,
        dir: PathBuf,
        config: TopicConfig,
        limits: PartitionLimits,
        cache: &Rc<BatchCache>,
    ) -> Result<Rc<Partition>, PartitionError> {
        Self::open_on(Io::real(), tp, dir, config, limits, cache).await
    }

    /// [`Partition::open_with_cache`] doing its I/O through `io` (the
    /// shard's disk and clock; a simulated disk in tests).
    pub async fn open_on(
        io: Io,
        tp: TopicPartition,
        dir: PathBuf,
        config: TopicConfig,
        limits: PartitionLimits,
        cache: &Rc<BatchCache>,
    ) -> Result<Rc<Partition>, PartitionError> {
        let log = Log::open(&dir, config.index_interval_bytes.max(1), io)
            .await
            .map_err(PartitionError::from_storage)?;
        let next = log.next_offset();
        let log_start = retention::recover_log_start(&tp, &log).await?;
        log.recovery().log(&tp.topic, tp.partition, log_start, next);
        let (epochs, epochs_dirty) = recover_epochs(&tp, &log, log_start).await?;
        let leader_epoch = epochs.latest().map_or(0, |(e, _)| e);
        let p = Rc::new(Partition {
            tp,
            log_start: Cell::new(log_start),
            sync_running: Cell::new(false),
            checkpoint_busy: Cell::new(false),
            checkpoint_waiters: WaitList::default(),
            log_end: Cell::new(next),
            local_durable: Cell::new(next),
            high_watermark: Cell::new(next),
            leader_epoch: Cell::new(leader_epoch),
            epochs: RefCell::new(epochs),
            epochs_dirty: Cell::new(epochs_dirty),
            epochs_gate: glommio::sync::Semaphore::new(1),
            config: RefCell::new(config),
            limits,
            log,
            cache: cache.register(),
            queue: RefCell::new(VecDeque::new()),
            writer_waker: RefCell::new(None),
            writer_running: Cell::new(true),
            writer_in_turn: Cell::new(false),
            writer_done_waiters: WaitList::default(),
            truncating: Cell::new(false),
            hw_waiters: OffsetWaiters::default(),
            closing: Cell::new(false),
            closed: Cell::new(false),
            dirty: Cell::new(false),
            fdatasyncs: Cell::new(0),
            group_writes: Cell::new(0),
        });
        p.check_invariants();
        glommio::spawn_local(writer::writer_loop(Rc::downgrade(&p))).detach();
        p.start_sync_loop();
        glommio::spawn_local(retention::retention_loop(Rc::downgrade(&p))).detach();
        glommio::spawn_local(writer::recovery_point_loop(Rc::downgrade(&p))).detach();
        if limits.recovery_scan == RecoveryScan::Sealed && p.log.recovery().segments > 1 {
            let (w1, w2) = (Rc::downgrade(&p), Rc::downgrade(&p));
            let live = |p: &Partition| !p.closing.get();
            crate::storage::scan::spawn_sealed_scan(
                p.tp.topic.clone(),
                p.tp.partition,
                move |after| {
                    w1.upgrade()
                        .filter(|p| live(p))?
                        .log
                        .next_sealed_after(after)
                },
                move || w2.upgrade().is_some_and(|p| live(&p)),
            );
        }
        Ok(p)
    }

    /// `log_start <= hw <= local_durable <= written <= log_end`, and
    /// `flushed <= written` (see the module header).
    fn check_invariants(&self) {
        let (s, h, d, e) = (
            self.log_start.get(),
            self.high_watermark.get(),
            self.local_durable.get(),
            self.log_end.get(),
        );
        // While `truncate_to` runs the storage offsets move under the
        // partition's: only the partition's own order is checked then.
        let (w, f) = if self.truncating.get() {
            (d, d)
        } else {
            (self.log.written_offset(), self.log.flushed_offset())
        };
        assert!(
            s <= h && h <= d && d <= w && w <= e && f <= w,
            "offset order violated: log_start {s} <= hw {h} <= local_durable {d} <= written {w} <= log_end {e}, flushed {f} <= written"
        );
    }

    /// The one place the high watermark is decided. One node: this
    /// replica's durable offset per the flush policy. With replication this
    /// becomes the smallest durable offset over the in-sync replicas.
    fn high_watermark_target(&self) -> Offset {
        self.local_durable.get()
    }

    /// Moves the high watermark to its target (never backwards) and wakes
    /// the waiters below it.
    fn advance_high_watermark(&self) {
        let target = self.high_watermark_target();
        if target <= self.high_watermark.get() {
            return;
        }
        self.high_watermark.set(target);
        self.check_invariants();
        self.hw_waiters.wake_below(target);
    }

    /// Appends are refused while closing or truncating, and on a partition
    /// whose acknowledged data is damaged (an operator must act first:
    /// docs/storage.md, "Acknowledged damage").
    fn check_writable(&self) -> Result<(), PartitionError> {
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
        Ok(batch::validate(batch)?)
    }

    /// Validates the batch, assigns offsets and queues it (synchronously, so
    /// call order is offset order). The writer stamps the assigned base
    /// offset and the current leader epoch (once, in place).
    pub fn append(self: &Rc<Self>, batch: Bytes) -> Result<AppendTicket, PartitionError> {
        self.check_writable()?;
        let h = self.validate(&batch)?;
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
        self.queue.borrow_mut().push_back(Pending {
            base_offset,
            last_offset,
            bytes,
            stamp,
            slot: slot.clone(),
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

    /// A consumer's fetch: whole batches from the one holding `offset`,
    /// below the high watermark.
    pub async fn fetch(&self, offset: Offset, max_bytes: u32) -> Result<FetchData, PartitionError> {
        self.fetch_until(offset, max_bytes, self.high_watermark.get())
            .await
    }

    /// A follower's fetch (later): like `fetch`, bounded by what is written
    /// on this replica instead of the high watermark.
    pub async fn fetch_replica(
        &self,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchData, PartitionError> {
        self.fetch_until(offset, max_bytes, self.log.written_offset())
            .await
    }

    /// Whole batches from the one holding `offset`, none at or past `upper`
    /// (the read's upper bound: the high watermark for consumers, the
    /// written offset for followers), at least one and then up to
    /// `max_bytes`.
    async fn fetch_until(
        &self,
        offset: Offset,
        max_bytes: u32,
        upper: Offset,
    ) -> Result<FetchData, PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        // During a truncation the files shrink before the bounds follow.
        let upper = upper.min(self.log.written_offset());
        let (start, hw, end) = (
            self.log_start.get(),
            self.high_watermark.get(),
            self.log_end.get(),
        );
        if let Some(d) = self.log.acked_damage() {
            let damaged_end = self.log.recovery_point().max(d.offset + 1);
            if offset >= d.offset && offset < damaged_end {
                return Err(PartitionError::CorruptData {
                    file: d.file.clone(),
                    offset,
                    reason: format!(
                        "acknowledged data from offset {} is damaged and not served: {}",
                        d.offset, d.reason
                    ),
                });
            }
        }
        let data = |records| FetchData {
            records,
            high_watermark: hw,
            log_start_offset: start,
            log_end_offset: end,
        };
        if offset < start || offset > end {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset >= upper {
            return Ok(data(Bytes::new()));
        }
        if let Some(records) = self.cache.read(offset, upper, max_bytes as usize) {
            return Ok(data(records));
        }
        let missing = |seg: &Segment| PartitionError::CorruptData {
            file: seg.log_path().to_path_buf(),
            offset,
            reason: "offset below the high watermark is missing from its segment".into(),
        };
        let Some(seg) = self.log.segment_for(offset) else {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start: start,
                log_end: end,
            });
        };
        // Read about what the fetch returns plus one index interval of skip.
        let read_bytes = (max_bytes as usize)
            .saturating_add(self.config.borrow().index_interval_bytes as usize)
            .clamp(4096, MAX_FETCH_READ_BYTES);
        let mut cur = seg
            .cursor(seg.position_for_offset(offset), seg.log_bytes(), None)
            .with_read_bytes(read_bytes);
        // Batches read so far; adjacent ones from one read are merged back
        // into a single slice of that read's buffer (no copy).
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        loop {
            match cur.next().await.map_err(PartitionError::from_storage)? {
                Next::Batch(h, b) => {
                    if h.last_offset() < offset {
                        continue;
                    }
                    if h.base_offset >= upper {
                        break;
                    }
                    if total == 0 && h.base_offset > offset {
                        return Err(missing(&seg));
                    }
                    if total > 0 && total + b.len() > max_bytes as usize {
                        break;
                    }
                    total += b.len();
                    pieces.push(b);
                    if total >= max_bytes as usize {
                        break;
                    }
                }
                Next::End => break,
                // Serve the good batches before the damage; the fetch that
                // starts at it gets the error.
                Next::Invalid { .. } if total > 0 => break,
                Next::Invalid { pos, reason } => {
                    return Err(PartitionError::CorruptData {
                        file: seg.log_path().to_path_buf(),
                        offset,
                        reason: format!("at byte {pos}: {reason}"),
                    })
                }
            }
        }
        if total == 0 {
            return Err(missing(&seg));
        }
        let records = match cur.buffered(&pieces) {
            Some(b) => b,
            None => {
                let mut out = BytesMut::with_capacity(total);
                for p in &pieces {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        };
        Ok(data(records))
    }

    /// Resolves when the high watermark passes `offset` or at `deadline`.
    pub async fn wait_for_data(&self, offset: Offset, deadline: Instant) {
        let ready = self.hw_waiters.wait(offset, || {
            self.high_watermark.get() > offset || self.closing.get()
        });
        let left = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(ready, crate::timer::sleep(left)).await
    }

    pub async fn list_offset(&self, spec: OffsetSpec) -> Result<(Offset, i64), PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        let hw = self.high_watermark.get();
        let t = match spec {
            OffsetSpec::Earliest => return Ok((self.log_start.get(), -1)),
            OffsetSpec::Latest => return Ok((hw, -1)),
            OffsetSpec::Timestamp(t) => t,
        };
        for seg in self.log.segments() {
            if seg.base_offset() >= hw {
                break;
            }
            if seg.max_timestamp() < t {
                continue;
            }
            let mut cur = seg.cursor(seg.position_for_timestamp(t), seg.log_bytes(), None);
            loop {
                match cur.next().await.map_err(PartitionError::from_storage)? {
                    Next::Batch(h, b) => {
                        if h.base_offset >= hw {
                            return Ok((hw, -1));
                        }
                        if h.max_timestamp_ms < t {
                            continue;
                        }
                        for r in batch::records(&b)? {
                            let r = r?;
                            let ts = h.first_timestamp_ms.saturating_add(r.timestamp_delta);
                            let off = h.base_offset + r.offset_delta as u64;
                            if off >= hw {
                                return Ok((hw, -1));
                            }
                            if off < self.log_start.get() {
                                continue;
                            }
                            if ts >= t {
                                return Ok((off, ts));
                            }
                        }
                    }
                    Next::End => break,
                    Next::Invalid { pos, reason } => {
                        return Err(PartitionError::CorruptData {
                            file: seg.log_path().to_path_buf(),
                            offset: seg.base_offset(),
                            reason: format!("at byte {pos}: {reason}"),
                        })
                    }
                }
            }
        }
        Ok((hw, -1))
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log_start.get()
    }
    pub fn log_end_offset(&self) -> Offset {
        self.log_end.get()
    }
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark.get()
    }
    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }

    /// Applies new topic settings to the live partition: the writer (segment
    /// roll, flush policy), the flush timer and the retention task use them
    /// from their next step on. `index_interval_bytes` applies to segments
    /// created after the next open.
    pub fn set_config(self: &Rc<Self>, config: TopicConfig) {
        *self.config.borrow_mut() = config;
        self.start_sync_loop();
    }

    /// Starts the flush=interval sync task unless it runs or flush=always.
    fn start_sync_loop(self: &Rc<Self>) {
        if self.config.borrow().flush.interval_ms().is_some() && !self.sync_running.replace(true) {
            glommio::spawn_local(writer::sync_loop(Rc::downgrade(self))).detach();
        }
    }
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }
    /// fdatasync calls issued on segment data so far (group-commit metric).
    pub fn fdatasync_count(&self) -> u64 {
        self.fdatasyncs.get()
    }
    /// Group writes issued so far (one per writer wake-up with work).
    pub fn group_write_count(&self) -> u64 {
        self.group_writes.get()
    }
    #[cfg(test)]
    fn data_waiter_count(&self) -> usize {
        self.hw_waiters.len()
    }

    /// Everything below this offset is fdatasynced on this replica.
    pub fn flushed_offset(&self) -> Offset {
        self.log.flushed_offset()
    }
    /// Next offset after the last batch written to this replica's files.
    pub fn written_offset(&self) -> Offset {
        self.log.written_offset()
    }
    /// The recovery point as last checkpointed.
    pub fn recovery_point(&self) -> Offset {
        self.log.recovery_point()
    }
    /// Makes the flushed offset the durable recovery point now (also done
    /// periodically, on roll and at close).
    pub async fn checkpoint_recovery_point(&self) -> Result<(), PartitionError> {
        self.log
            .checkpoint_recovery_point()
            .await
            .map_err(PartitionError::from_storage)
    }
    /// What recovery did at open (damage found, bytes truncated, ...).
    pub fn recovery(&self) -> &crate::storage::scan::RecoveryStats {
        self.log.recovery()
    }

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
    async fn persist_epochs(&self) -> Result<(), PartitionError> {
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
        // Readers stop below the cut before the files shrink.
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
        Ok(end)
    }
    /// The I/O seam's fault injector (tests: failed writes/fsyncs, torn writes).
    pub fn faults(&self) -> Rc<FaultInjector> {
        self.log.faults().clone()
    }

    /// Syncs, writes indexes and stops the writer; later calls fail `Closed`.
    pub async fn close(&self) -> Result<(), PartitionError> {
        if self.closing.replace(true) {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
        self.writer_done_waiters
            .wait(|| !self.writer_running.get())
            .await;
        let res = self.log.close().await;
        self.closed.set(true);
        self.hw_waiters.wake_all();
        res.map_err(PartitionError::from_storage)
    }
}

pub mod cache;
pub mod epochs;
mod retention;
mod writer;

/// Reads the leader-epoch checkpoint at open: entries past the recovered
/// log end are dropped (their data did not survive). A partition without
/// a checkpoint (new, or written before epochs were stamped) starts with
/// epoch 0 at its log start. Returns the history and whether it must be
/// rewritten.
async fn recover_epochs(
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

use cache::{BatchCache, PartitionCache};

/// Cache budget of a partition opened without a shard's cache, in bytes.
pub const PRIVATE_CACHE_BYTES: usize = 8 << 20;

#[cfg(test)]
mod tests;
