//! The shard's request-memory budget: at most `limits.max_queued_request_bytes`
//! of request payload buffers (Kafka's `queued.max.request.bytes`, here per
//! shard) across every connection and listener of the shard, from a frame's
//! first payload buffer until its response is written.
//!
//! Owns: [`RequestBudget`] (one per shard) and [`FrameReservation`] (one per
//! request frame, returned when dropped). A frame reserves its payload
//! buffer as it grows, i.e. the memory it really holds (a peer that claims a
//! large frame and stalls holds only what it sent, as `net::frame_io`
//! allocates), so stalled clients cannot spend the budget with promises.
//! While the budget is spent a reader waits before growing its buffer: it
//! reads no more, TCP pushes back on its client, and memory for requests
//! stays bounded however hard the shard is driven.
//!
//! Waiters are served first come, first served. Progress: if everything
//! reserved belongs to frames still being read (no finished request will
//! free memory, e.g. every reservation is a partial frame), the first waiter
//! may exceed the budget to finish its frame; only one frame at a time
//! holds such an overdraft, and that frame goes ahead of the queue for the
//! rest of its payload (otherwise it could wait behind a frame that waits
//! for it), so reserved bytes never exceed `capacity + max_frame_bytes`
//! (asserted), and a frame larger than the whole budget still gets through.
//!
//! Invariants: reservations are returned exactly once (a reservation's drop,
//! also when the connection is cut mid-frame); a waiter dropped while queued
//! leaves the queue; `reserved <= capacity + max_frame_bytes` and `partial
//! <= reserved` after every change (asserted).
//!
//! Single-threaded (one shard): `Cell`/`RefCell`, no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One shard's budget of request bytes.
pub struct RequestBudget {
    capacity_bytes: u64,
    max_frame_bytes: u64,
    /// Reserved by every live reservation.
    reserved_bytes: Cell<u64>,
    /// The part of `reserved_bytes` held by frames still being read.
    partial_bytes: Cell<u64>,
    /// Frames waiting to grow, in arrival order (ticket, waker).
    queue: RefCell<VecDeque<(u64, Waker)>>,
    /// The frame holding the one allowed overdraft.
    overdraft_holder: Cell<Option<u64>>,
    next_ticket: Cell<u64>,
    peak_bytes: Cell<u64>,
    waits: Cell<u64>,
    overdrafts: Cell<u64>,
}

/// One frame's reservation; returned to the budget when dropped.
pub struct FrameReservation {
    budget: Rc<RequestBudget>,
    ticket: u64,
    bytes: u64,
    reading: bool,
}

impl RequestBudget {
    /// A budget of `capacity_bytes` (> 0; checked by the config) for frames
    /// of at most `max_frame_bytes`.
    pub fn new(capacity_bytes: u64, max_frame_bytes: u64) -> Rc<RequestBudget> {
        assert!(capacity_bytes > 0, "request budget must be > 0");
        Rc::new(RequestBudget {
            capacity_bytes,
            max_frame_bytes,
            reserved_bytes: Cell::new(0),
            partial_bytes: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            overdraft_holder: Cell::new(None),
            next_ticket: Cell::new(0),
            peak_bytes: Cell::new(0),
            waits: Cell::new(0),
            overdrafts: Cell::new(0),
        })
    }

    /// A reservation (of nothing yet) for a frame about to be read.
    pub fn begin_frame(self: &Rc<Self>) -> FrameReservation {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        FrameReservation {
            budget: self.clone(),
            ticket,
            bytes: 0,
            reading: true,
        }
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes.get()
    }

    /// The most ever reserved at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes.get()
    }

    /// Reservations that waited for room.
    pub fn waits(&self) -> u64 {
        self.waits.get()
    }

    /// Grants past the capacity (to let a frame finish when nothing else
    /// would free memory).
    pub fn overdrafts(&self) -> u64 {
        self.overdrafts.get()
    }

    /// Wakes the waiters that may be granted: the first in line, and the
    /// overdraft holder wherever it waits.
    fn wake_front(&self) {
        let queue = self.queue.borrow();
        if let Some((_, w)) = queue.front() {
            w.wake_by_ref();
        }
        if let Some(h) = self.overdraft_holder.get() {
            if let Some((_, w)) = queue.iter().skip(1).find(|(t, _)| *t == h) {
                w.wake_by_ref();
            }
        }
    }

    fn check(&self) {
        let (reserved, partial) = (self.reserved_bytes.get(), self.partial_bytes.get());
        assert!(
            partial <= reserved,
            "partial {partial} > reserved {reserved}"
        );
        assert!(
            reserved <= self.capacity_bytes + self.max_frame_bytes,
            "reserved {reserved} bytes: past the budget {} plus one frame {}",
            self.capacity_bytes,
            self.max_frame_bytes
        );
    }
}

impl FrameReservation {
    /// Reserves `more` bytes for this frame's payload buffer, waiting (first
    /// come, first served) while the budget is spent.
    pub fn grow(&mut self, more: u64) -> Grow<'_> {
        Grow {
            res: self,
            more,
            queued: false,
        }
    }

    /// The frame is read: its bytes now belong to a request being handled.
    pub fn finish_read(&mut self) {
        if !self.reading {
            return;
        }
        self.reading = false;
        let b = &self.budget;
        b.partial_bytes.set(b.partial_bytes.get() - self.bytes);
        b.check();
    }

    fn grant(&mut self, more: u64) {
        let b = &self.budget;
        let reserved = b.reserved_bytes.get() + more;
        if reserved > b.capacity_bytes {
            b.overdraft_holder.set(Some(self.ticket));
            b.overdrafts.set(b.overdrafts.get() + 1);
        }
        b.reserved_bytes.set(reserved);
        b.partial_bytes.set(b.partial_bytes.get() + more);
        b.peak_bytes.set(b.peak_bytes.get().max(reserved));
        self.bytes += more;
        assert!(self.reading, "a frame grows only while it is read");
        assert!(
            self.bytes <= b.max_frame_bytes.max(1),
            "a frame reserved {} bytes, past max_frame_bytes {}",
            self.bytes,
            b.max_frame_bytes
        );
        b.check();
    }

    /// Whether `more` can be granted now to the first waiter (or to a frame
    /// when nobody waits).
    fn may_grant(&self, more: u64) -> bool {
        let b = &self.budget;
        let reserved = b.reserved_bytes.get();
        if reserved + more <= b.capacity_bytes {
            return true;
        }
        // Nothing finished holds memory: waiting frees nothing, so one frame
        // at a time may go past the budget to finish.
        let stuck = reserved == b.partial_bytes.get();
        let holder = b.overdraft_holder.get();
        stuck && (holder.is_none() || holder == Some(self.ticket))
    }
}

impl Drop for FrameReservation {
    fn drop(&mut self) {
        self.finish_read();
        let b = &self.budget;
        b.reserved_bytes.set(b.reserved_bytes.get() - self.bytes);
        if b.overdraft_holder.get() == Some(self.ticket) {
            b.overdraft_holder.set(None);
        }
        b.check();
        b.wake_front();
    }
}

/// The future of [`FrameReservation::grow`].
pub struct Grow<'a> {
    res: &'a mut FrameReservation,
    more: u64,
    queued: bool,
}

impl Future for Grow<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let more = self.more;
        let ticket = self.res.ticket;
        let budget = self.res.budget.clone();
        let holder = budget.overdraft_holder.get() == Some(ticket);
        if !self.queued {
            if (holder || budget.queue.borrow().is_empty()) && self.res.may_grant(more) {
                self.res.grant(more);
                return Poll::Ready(());
            }
            budget.waits.set(budget.waits.get() + 1);
            budget
                .queue
                .borrow_mut()
                .push_back((ticket, cx.waker().clone()));
            self.queued = true;
        }
        let first = budget.queue.borrow().front().map(|(t, _)| *t) == Some(ticket);
        if (first || holder) && self.res.may_grant(more) {
            budget.queue.borrow_mut().retain(|(t, _)| *t != ticket);
            self.queued = false;
            self.res.grant(more);
            budget.wake_front();
            return Poll::Ready(());
        }
        if let Some(entry) = budget
            .queue
            .borrow_mut()
            .iter_mut()
            .find(|(t, _)| *t == ticket)
        {
            entry.1 = cx.waker().clone();
        }
        Poll::Pending
    }
}

impl Drop for Grow<'_> {
    fn drop(&mut self) {
        if self.queued {
            let budget = &self.res.budget;
            budget
                .queue
                .borrow_mut()
                .retain(|(t, _)| *t != self.res.ticket);
            budget.wake_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    async fn settle() {
        for _ in 0..100 {
            futures_lite::future::yield_now().await;
        }
    }

    #[test]
    fn growth_waits_for_room_first_come_first_served() {
        run(|| async {
            let b = RequestBudget::new(100, 1_000);
            let mut first = b.begin_frame();
            first.grow(60).await;
            first.finish_read();
            let mut second = b.begin_frame();
            second.grow(40).await;
            second.finish_read();
            assert_eq!((b.reserved_bytes(), b.waits()), (100, 0));
            // Two more wait, in order, while finished requests hold it all.
            let done = Rc::new(Cell::new(Vec::new()));
            let mut tasks = Vec::new();
            for (n, want) in [(1u32, 30u64), (2, 10)] {
                let (b, done) = (b.clone(), done.clone());
                tasks.push(glommio::spawn_local(async move {
                    let mut r = b.begin_frame();
                    r.grow(want).await;
                    let mut d = done.take();
                    d.push(n);
                    done.set(d);
                    r
                }));
                settle().await;
            }
            assert_eq!(b.waits(), 2);
            assert_eq!(b.reserved_bytes(), 100, "nothing past the capacity");
            drop(first);
            let third = tasks.remove(0).await;
            let fourth = tasks.remove(0).await;
            assert_eq!(done.take(), vec![1, 2], "served in arrival order");
            assert_eq!(b.reserved_bytes(), 80);
            assert_eq!(b.overdrafts(), 0);
            drop((second, third, fourth));
            assert_eq!(b.reserved_bytes(), 0);
        });
    }

    #[test]
    fn partial_frames_never_deadlock_and_one_frame_at_a_time_overdraws() {
        run(|| async {
            let b = RequestBudget::new(100, 1_000);
            // Two frames being read hold it all (e.g. stalled peers).
            let mut s1 = b.begin_frame();
            s1.grow(50).await;
            let mut s2 = b.begin_frame();
            s2.grow(50).await;
            // A third frame would wait forever for them: it may overdraw,
            // and grow again to finish, even past the capacity.
            let mut big = b.begin_frame();
            big.grow(200).await;
            big.grow(400).await;
            assert_eq!(b.reserved_bytes(), 700);
            assert_eq!(b.overdrafts(), 2);
            // While it holds the overdraft, another frame waits.
            let b2 = b.clone();
            let other = glommio::spawn_local(async move {
                let mut r = b2.begin_frame();
                r.grow(10).await;
                r
            });
            settle().await;
            assert_eq!(b.reserved_bytes(), 700, "one overdraft at a time");
            big.finish_read();
            drop(big);
            let other = other.await;
            assert!(b.peak_bytes() <= 100 + 1_000);
            drop((s1, s2, other));
            assert_eq!(b.reserved_bytes(), 0);
        });
    }

    #[test]
    fn the_overdraft_holder_goes_ahead_of_a_frame_waiting_for_it() {
        run(|| async {
            let b = RequestBudget::new(100, 1_000);
            // A frame overdraws (nothing else holds memory) ...
            let mut holder = b.begin_frame();
            holder.grow(150).await;
            assert_eq!(b.overdrafts(), 1);
            // ... another queues (it cannot overdraw while the holder does) ...
            let b2 = b.clone();
            let waiter = glommio::spawn_local(async move {
                let mut r = b2.begin_frame();
                r.grow(300).await;
                r
            });
            settle().await;
            assert_eq!(b.queue.borrow().len(), 1);
            // ... and the holder, needing more, is not stuck behind it.
            holder.grow(300).await;
            assert_eq!(b.reserved_bytes(), 450);
            drop(holder);
            let w = waiter.await;
            assert_eq!(b.reserved_bytes(), 300);
            drop(w);
        });
    }

    #[test]
    fn a_waiter_dropped_in_the_queue_leaves_it() {
        run(|| async {
            let b = RequestBudget::new(10, 100);
            let mut held = b.begin_frame();
            held.grow(10).await;
            held.finish_read();
            let b2 = b.clone();
            let gone = glommio::spawn_local(async move {
                let mut r = b2.begin_frame();
                r.grow(5).await;
            });
            settle().await;
            assert_eq!(b.queue.borrow().len(), 1);
            drop(gone);
            settle().await;
            assert_eq!(b.queue.borrow().len(), 0, "cancelled waiter removed");
            drop(held);
            let mut r = b.begin_frame();
            r.grow(10).await;
            assert_eq!(b.reserved_bytes(), 10);
        });
    }
}
