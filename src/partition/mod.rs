//! One partition's log state and its append/fetch paths (docs/storage.md).
//!
//! Owns: offset assignment, the per-partition writer task (group write +
//! group commit), the high watermark and its waiters, fetch and list_offset
//! over the segments of [`crate::storage::log::Log`].
//!
//! Owned by exactly one shard (it is `!Send`: `Rc`, `RefCell`, `Cell`).
//! Invariants: log_start_offset <= high_watermark <= log_end_offset;
//! offsets are assigned synchronously in `append` call order and are
//! contiguous; the high watermark only covers bytes that are durable per the
//! flush policy (flush=always: fdatasynced; interval: written); every batch is
//! CRC-checked on append and again on every read from disk. Batches below the
//! high watermark that were written recently are also in the shard's
//! [`cache::BatchCache`], stamped, and fetches that reach them are served
//! from memory.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{RecoveryScan, TopicConfig};
use crate::protocol::batch::{self, BatchError};
use crate::protocol::messages::OffsetSpec;
use crate::protocol::{ErrorCode, Offset, TopicPartition, WireError};
use crate::storage::file::FaultInjector;
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
            PartitionError::Closed(_) => ErrorCode::NotLeader,
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
            e @ StorageError::Io { .. } => PartitionError::Storage(e.to_string()),
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

/// Returned by `Partition::append` once offsets are assigned; `wait` resolves
/// when the batch is as durable as the topic's flush policy requires.
pub struct AppendTicket {
    result: AppendResult,
    slot: Rc<TicketSlot>,
}

impl AppendTicket {
    pub fn result(&self) -> AppendResult {
        self.result
    }
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
    log_end: Cell<Offset>,
    high_watermark: Cell<Offset>,
    queue: RefCell<VecDeque<Pending>>,
    writer_waker: RefCell<Option<Waker>>,
    writer_running: Cell<bool>,
    writer_done_waiters: WaitList,
    data_waiters: WaitList,
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
        let faults = Rc::new(FaultInjector::default());
        let log = Log::open(&dir, config.index_interval_bytes.max(1), faults)
            .await
            .map_err(PartitionError::from_storage)?;
        let next = log.next_offset();
        let log_start = retention::recover_log_start(&tp, &log).await?;
        log.recovery().log(&tp.topic, tp.partition, log_start, next);
        let p = Rc::new(Partition {
            tp,
            log_start: Cell::new(log_start),
            sync_running: Cell::new(false),
            checkpoint_busy: Cell::new(false),
            checkpoint_waiters: WaitList::default(),
            log_end: Cell::new(next),
            high_watermark: Cell::new(next),
            config: RefCell::new(config),
            limits,
            log,
            cache: cache.register(),
            queue: RefCell::new(VecDeque::new()),
            writer_waker: RefCell::new(None),
            writer_running: Cell::new(true),
            writer_done_waiters: WaitList::default(),
            data_waiters: WaitList::default(),
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

    fn check_invariants(&self) {
        let (s, h, e) = (
            self.log_start.get(),
            self.high_watermark.get(),
            self.log_end.get(),
        );
        assert!(
            s <= h && h <= e,
            "log_start {s} <= hw {h} <= leo {e} violated"
        );
    }

    /// Validates the batch, assigns offsets and queues it (synchronously, so
    /// call order is offset order).
    pub fn append(self: &Rc<Self>, batch: Bytes) -> Result<AppendTicket, PartitionError> {
        if self.closing.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        if batch.len() > self.limits.max_batch_bytes as usize {
            return Err(PartitionError::MessageTooLarge {
                bytes: batch.len(),
                max_batch_bytes: self.limits.max_batch_bytes,
            });
        }
        let h = batch::validate(&batch)?;
        let base_offset = self.log_end.get();
        let last_offset = base_offset + h.last_offset_delta as u64;
        self.log_end.set(last_offset + 1);
        let slot = Rc::new(TicketSlot::default());
        self.queue.borrow_mut().push_back(Pending {
            base_offset,
            last_offset,
            bytes: batch,
            slot: slot.clone(),
        });
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
        Ok(AppendTicket {
            result: AppendResult {
                base_offset,
                last_offset,
                log_start_offset: self.log_start.get(),
            },
            slot,
        })
    }

    pub async fn fetch(&self, offset: Offset, max_bytes: u32) -> Result<FetchData, PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        let (start, hw, end) = (
            self.log_start.get(),
            self.high_watermark.get(),
            self.log_end.get(),
        );
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
        if offset >= hw {
            return Ok(data(Bytes::new()));
        }
        if let Some(records) = self.cache.read(offset, hw, max_bytes as usize) {
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
                    if h.base_offset >= hw {
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
        let ready = self
            .data_waiters
            .wait(|| self.high_watermark.get() > offset || self.closing.get());
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
        self.data_waiters.wakers.borrow().len()
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
        self.data_waiters.wake_all();
        res.map_err(PartitionError::from_storage)
    }
}

pub mod cache;
mod retention;
mod writer;

use cache::{BatchCache, PartitionCache};

/// Cache budget of a partition opened without a shard's cache, in bytes.
pub const PRIVATE_CACHE_BYTES: usize = 8 << 20;

#[cfg(test)]
mod tests;
