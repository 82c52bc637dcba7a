//! Many deadlines on one glommio timer per executor thread.
//!
//! Owns: [`sleep`] / [`sleep_until`], the futures that request timeouts,
//! long polls and the client's linger and request timers wait on.
//!
//! Why: glommio-ng's reactor scans every live timer on every turn, so one
//! glommio timer per in-flight request costs O(requests) per turn (about a
//! fifth of the broker's CPU at tens of thousands of produces per second, by
//! `perf`). Here each executor thread keeps its deadlines in one ordered map
//! and arms a single glommio timer, for the earliest.
//!
//! Invariants:
//! - A [`Deadline`] resolves no earlier than its instant.
//! - A dropped (or finished) `Deadline` leaves nothing behind in the map.
//! - While the map is not empty, exactly one driver task runs, sleeping
//!   until the earliest deadline (or until an earlier one is added).
//!
//! Per thread (`thread_local!`), single-threaded: `Cell`/`RefCell`, no locks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Wheel {
    entries: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_id: Cell<u64>,
    driver_running: Cell<bool>,
    /// The instant the driver sleeps until (when it runs).
    armed_for: Cell<Option<Instant>>,
    /// Wakes the driver to re-arm for an earlier deadline.
    driver_waker: RefCell<Option<Waker>>,
    rearm: Cell<bool>,
}

thread_local! {
    static WHEEL: Rc<Wheel> = Rc::new(Wheel::default());
}

fn wheel() -> Rc<Wheel> {
    WHEEL.with(Rc::clone)
}

/// Resolves after `d`.
pub fn sleep(d: Duration) -> Deadline {
    sleep_until(Instant::now() + d)
}

/// Resolves at `at` (at once if it has passed).
pub fn sleep_until(at: Instant) -> Deadline {
    Deadline {
        at,
        id: None,
        wheel: wheel(),
    }
}

/// A future that resolves at an instant; see the module docs.
pub struct Deadline {
    at: Instant,
    /// Set while registered in the wheel.
    id: Option<u64>,
    wheel: Rc<Wheel>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if Instant::now() >= this.at {
            if let Some(id) = this.id.take() {
                this.wheel.entries.borrow_mut().remove(&(this.at, id));
            }
            return Poll::Ready(());
        }
        let w = &this.wheel;
        let id = *this.id.get_or_insert_with(|| {
            let id = w.next_id.get();
            w.next_id.set(id + 1);
            id
        });
        w.entries
            .borrow_mut()
            .insert((this.at, id), cx.waker().clone());
        if !w.driver_running.get() {
            w.driver_running.set(true);
            glommio::spawn_local(drive(w.clone())).detach();
        } else if w.armed_for.get().is_none_or(|t| this.at < t) {
            w.rearm.set(true);
            if let Some(dw) = w.driver_waker.borrow_mut().take() {
                dw.wake();
            }
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.wheel.entries.borrow_mut().remove(&(self.at, id));
        }
    }
}

/// Resolves when a Deadline asks the driver to re-arm.
struct Rearm<'a>(&'a Wheel);

impl Future for Rearm<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.rearm.replace(false) {
            return Poll::Ready(());
        }
        *self.0.driver_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The driver: sleeps on one glommio timer until the earliest deadline,
/// wakes every expired one, and exits when no deadline is left.
async fn drive(w: Rc<Wheel>) {
    loop {
        let earliest = w.entries.borrow().keys().next().map(|k| k.0);
        let Some(at) = earliest else {
            break;
        };
        let now = Instant::now();
        if at > now {
            w.armed_for.set(Some(at));
            w.rearm.set(false);
            futures_lite::future::or(glommio::timer::sleep(at - now), Rearm(&w)).await;
            w.armed_for.set(None);
            w.driver_waker.borrow_mut().take();
        }
        let now = Instant::now();
        let expired: Vec<Waker> = {
            let mut entries = w.entries.borrow_mut();
            let later = entries.split_off(&(now, u64::MAX));
            let expired = std::mem::replace(&mut *entries, later);
            expired.into_values().collect()
        };
        for waker in expired {
            waker.wake();
        }
    }
    w.driver_running.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn deadlines_fire_in_order_and_not_early() {
        run(|| async {
            let start = Instant::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Added latest-first, so every add re-arms the driver earlier.
            for ms in [40u64, 30, 20, 10, 0] {
                let order = order.clone();
                tasks.push(glommio::spawn_local(async move {
                    sleep(Duration::from_millis(ms)).await;
                    assert!(start.elapsed() >= Duration::from_millis(ms), "fired early");
                    order.borrow_mut().push(ms);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![0, 10, 20, 30, 40]);
            assert!(wheel().entries.borrow().is_empty());
        });
    }

    #[test]
    fn dropped_deadlines_leave_nothing_and_the_driver_stops() {
        run(|| async {
            for _ in 0..1000 {
                let d = sleep(Duration::from_secs(3600));
                futures_lite::future::or(d, async {}).await;
            }
            assert!(wheel().entries.borrow().is_empty(), "drop unregisters");
            sleep(Duration::from_millis(1)).await;
            // Let the driver notice the empty map and exit.
            for _ in 0..100 {
                if !wheel().driver_running.get() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert!(!wheel().driver_running.get());
        });
    }
}
