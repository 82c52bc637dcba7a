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
//! Split by job: [`append`] (offset assignment and checks, queueing),
//! [`waiters`] (tickets, wait lists, the high watermark), [`fetch`] (fetch,
//! long polls, list_offset), [`replica`] (leader epoch, truncation),
//! [`error`] (`PartitionError`), [`producers`] (the idempotent-producer
//! state machine and snapshot format) and [`producer_log`] (that state on
//! the append path, its snapshots, rebuild and expiry); the writer task is
//! in [`writer`].
//!
//! Must not know: connections, the wire format, other shards.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::Waker;

use crate::config::{RecoveryScan, TopicConfig};
use crate::io::{FaultInjector, Io};
use crate::protocol::{Offset, TopicPartition};
use crate::storage::log::Log;

mod append;
pub mod cache;
pub mod epochs;
mod error;
pub mod fetch;
mod producer_log;
pub mod producers;
mod readahead;
mod replica;
mod retention;
mod waiters;
mod writer;

pub use append::AppendResult;
use append::Pending;
use cache::{BatchCache, PartitionCache};
pub use error::PartitionError;
pub use fetch::FetchData;
use replica::recover_epochs;
pub use waiters::AppendTicket;
use waiters::{OffsetWaiters, WaitList};

#[derive(Debug, Clone, Copy)]
pub struct PartitionLimits {
    pub max_batch_bytes: u32,
    /// Most bytes a compressed batch's records may decompress to.
    pub max_decompressed_batch_bytes: u32,
    /// How often the retention task checks for expired segments, in ms.
    pub retention_check_interval_ms: u64,
    /// Whether sealed segments are CRC-checked in the background after open.
    pub recovery_scan: RecoveryScan,
    /// A producer id not seen for this long is forgotten, in ms (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
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
    /// The next range a sequential disk reader will want, read ahead.
    readahead: RefCell<Option<readahead::ReadAhead>>,
    /// Where the last fetch served from disk ended (the offset after it).
    last_disk_fetch_end: Cell<Offset>,
    /// Fetches that started from a read-ahead (tests and diagnostics).
    readahead_hits: Cell<u64>,
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
    /// Idempotent producers' sequence state ([`producer_log`]).
    producers: producer_log::ProducerState,
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
        let producers = producer_log::recover_producers(&tp, &log, next).await?;
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
            readahead: RefCell::new(None),
            last_disk_fetch_end: Cell::new(Offset::MAX),
            readahead_hits: Cell::new(0),
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
            producers: producer_log::ProducerState::new(producers),
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
        self.readahead.borrow_mut().take();
        self.writer_done_waiters
            .wait(|| !self.writer_running.get())
            .await;
        let res = self.log.close().await;
        if res.is_ok() && self.local_durable.get() == self.log.next_offset() {
            // A clean restart needs no scan of the active segment.
            self.snapshot_producers(self.log.next_offset()).await;
        }
        self.closed.set(true);
        self.hw_waiters.wake_all();
        res.map_err(PartitionError::from_storage)
    }
}

/// Cache budget of a partition opened without a shard's cache, in bytes.
pub const PRIVATE_CACHE_BYTES: usize = 8 << 20;

#[cfg(test)]
mod tests;
