//! Tickets and waiters of a partition (split out of [`super`]): the
//! completion slot an append ticket shares with the writer, the wait lists,
//! the waiters keyed by the offset the high watermark must pass (long polls,
//! acks=all), and the one place the high watermark is decided and advanced.
//!
//! Invariants: the high watermark never moves backwards, and advancing it
//! wakes exactly the waiters below it; a waiter that gives up removes
//! itself, so the lists cannot grow on an idle partition.
//!
//! Must not know: connections, the wire format, other shards.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use super::{AppendResult, Partition, PartitionError};
use crate::protocol::Offset;

/// Completion slot shared by a ticket and the writer (and by the tickets
/// of an idempotent producer's duplicates of the same batch: every holder
/// sees the one outcome).
#[derive(Default)]
pub(super) struct TicketSlot {
    done: RefCell<Option<Result<(), PartitionError>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl TicketSlot {
    pub(super) fn complete(&self, r: Result<(), PartitionError>) {
        assert!(self.done.borrow().is_none(), "a ticket completes once");
        *self.done.borrow_mut() = Some(r);
        for w in std::mem::take(&mut *self.wakers.borrow_mut()) {
            w.wake();
        }
    }
}

/// Returned by `Partition::append` once offsets are assigned. `wait`
/// resolves when the batch is durable on this replica per the flush policy
/// (acks=leader); `wait_all` when the high watermark passed it (acks=all;
/// the same moment on one node, through its own path).
pub struct AppendTicket {
    pub(super) result: AppendResult,
    pub(super) slot: Rc<TicketSlot>,
    pub(super) partition: Weak<Partition>,
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
            if let Some(r) = slot.done.borrow().clone() {
                return Poll::Ready(r.map(|()| result));
            }
            let mut wakers = slot.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
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

/// Wakers of tasks waiting for a condition. A waiter that gives up (e.g. a
/// timed-out `wait_for_data`) removes itself, so the list cannot grow on an
/// idle partition. The offset-keyed list with every waiter at offset 0.
#[derive(Default)]
pub(super) struct WaitList(OffsetWaiters);

impl WaitList {
    pub(super) fn wake_all(&self) {
        self.0.wake_all();
    }

    /// Resolves once `ready()` holds (checked at every wake-up).
    pub(super) fn wait<F: Fn() -> bool + Unpin>(&self, ready: F) -> WaitOffset<'_, F> {
        self.0.wait(0, ready)
    }
}

/// Wakers keyed by the offset the high watermark must pass: advancing the
/// high watermark wakes exactly the waiters below it.
#[derive(Default)]
pub(super) struct OffsetWaiters {
    next_id: Cell<u64>,
    wakers: RefCell<BTreeMap<(Offset, u64), Waker>>,
}

impl OffsetWaiters {
    /// Wakes every waiter for an offset below `hw`.
    pub(super) fn wake_below(&self, hw: Offset) {
        let ready = {
            let mut m = self.wakers.borrow_mut();
            let rest = m.split_off(&(hw, 0));
            std::mem::replace(&mut *m, rest)
        };
        for (_, w) in ready {
            w.wake();
        }
    }

    pub(super) fn wake_all(&self) {
        let all = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, w) in all {
            w.wake();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// Resolves once `ready()` holds, checked whenever the high watermark
    /// passes `offset` (or everything is woken).
    pub(super) fn wait<F: Fn() -> bool + Unpin>(
        &self,
        offset: Offset,
        ready: F,
    ) -> WaitOffset<'_, F> {
        WaitOffset {
            list: self,
            key: None,
            offset,
            ready,
        }
    }
}

pub(super) struct WaitOffset<'a, F: Fn() -> bool + Unpin> {
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
    /// The one place the high watermark is decided. One node: this
    /// replica's durable offset per the flush policy. With replication this
    /// becomes the smallest durable offset over the in-sync replicas.
    fn high_watermark_target(&self) -> Offset {
        self.local_durable.get()
    }

    /// Moves the high watermark to its target (never backwards) and wakes
    /// the waiters below it.
    pub(super) fn advance_high_watermark(&self) {
        let target = self.high_watermark_target();
        if target <= self.high_watermark.get() {
            return;
        }
        self.high_watermark.set(target);
        self.check_invariants();
        self.hw_waiters.wake_below(target);
    }

    #[cfg(test)]
    pub(super) fn data_waiter_count(&self) -> usize {
        self.hw_waiters.len()
    }
}
