//! Single-threaded completion primitives for the client: a one-shot slot and
//! a "wait until idle" counter. No locks: everything runs on one glommio
//! executor thread (`Rc`, `RefCell`, `Cell`).
//!
//! Invariant: `RefCell`s here are borrowed only inside synchronous calls,
//! never across an `.await`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
}

/// Completes a [`OneshotReceiver`] exactly once.
pub(crate) struct OneshotSender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// Resolves to `Some(value)`, or `None` once the sender was dropped unsent.
pub(crate) struct OneshotReceiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

pub(crate) fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_alive: true,
    }));
    (
        OneshotSender { slot: slot.clone() },
        OneshotReceiver { slot },
    )
}

impl<T> OneshotSender<T> {
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut s = self.slot.borrow_mut();
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // Drop runs next and sees the value already in place.
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.slot.borrow_mut();
            s.sender_alive = false;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.slot.borrow_mut();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if !s.sender_alive {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Counts outstanding work; `idle().await` resolves when the count is zero.
#[derive(Default)]
pub(crate) struct WorkCounter {
    count: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

impl WorkCounter {
    pub(crate) fn begin(&self) {
        self.count.set(self.count.get() + 1);
    }

    pub(crate) fn end(&self) {
        let n = self.count.get().saturating_sub(1);
        self.count.set(n);
        if n == 0 {
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            for w in waiters {
                w.wake();
            }
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count.get()
    }

    pub(crate) fn idle(&self) -> Idle<'_> {
        Idle { counter: self }
    }
}

pub(crate) struct Idle<'a> {
    counter: &'a WorkCounter,
}

impl Future for Idle<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.counter.count.get() == 0 {
            return Poll::Ready(());
        }
        self.counter.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_and_counter() {
        futures_lite::future::block_on(async {
            let (tx, rx) = oneshot::<u32>();
            tx.send(5);
            assert_eq!(rx.await, Some(5));
            let (tx, rx) = oneshot::<u32>();
            drop(tx);
            assert_eq!(rx.await, None);
            let c = WorkCounter::default();
            c.idle().await;
            c.begin();
            assert_eq!(c.count(), 1);
            c.end();
            c.idle().await;
        });
    }
}
