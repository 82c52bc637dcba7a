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
//! [`Once`] is the one place a glommio timer is made ([`sleep_once`]):
//! glommio-ng 0.12's `Timer::poll` registers a new reactor entry on every
//! poll that returns `Pending` and forgets the previous one, which stays in
//! the reactor until its instant. A timer raced (`or`) against a busy future
//! therefore leaves one entry per wake-up: the broker's connection watchdog
//! (deadline 600 s) piled up hundreds of thousands, and the reactor's per-turn
//! scan of them took 58% of a shard's CPU at 5,000 produces/s. `Once` polls
//! its glommio timer again only if it is polled by another task. clippy.toml
//! forbids `glommio::timer::sleep` / `Timer::new` everywhere else.
//!
//! Invariants:
//! - A [`Deadline`] resolves no earlier than its instant.
//! - A [`Once`] holds at most one reactor entry, whatever its poll count,
//!   and resolves no earlier than its instant (a timer that fires early, as
//!   glommio's wheel may by up to a tick, is replaced by a new one).
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
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

/// Resolves at an instant on its own glommio timer, registered once per
/// task that polls it (see the module docs). For a task that sleeps on one
/// deadline at a time; [`sleep`] shares one timer among many deadlines.
pub struct Once {
    at: Instant,
    timer: Option<glommio::timer::Timer>,
    /// The task the timer was registered for, and whether the timer has
    /// fired since (glommio's timer wheel may fire up to a tick before `at`;
    /// then a new timer is registered).
    registered: Option<Arc<Fired>>,
}

/// Wakes the registering task and remembers that the glommio timer fired.
struct Fired {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Relaxed);
        self.task.wake_by_ref();
    }
}

/// A [`Once`] that resolves after `d`.
pub fn sleep_once(d: Duration) -> Once {
    sleep_once_until(Instant::now() + d)
}

/// A [`Once`] that resolves at `at` (at once if it has passed).
pub fn sleep_once_until(at: Instant) -> Once {
    Once {
        at,
        timer: None,
        registered: None,
    }
}

thread_local! {
    /// Glommio timers registered by [`Once`] on this thread (for tests).
    static ONCE_REGISTRATIONS: Cell<u64> = const { Cell::new(0) };
}

impl Future for Once {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let now = Instant::now();
        if now >= this.at {
            // Dropping the timer removes its reactor entry.
            this.timer = None;
            return Poll::Ready(());
        }
        if let Some(fired) = &this.registered {
            if fired.task.will_wake(cx.waker()) && !fired.fired.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
        }
        // First poll, a new task, or the timer fired early: a fresh timer
        // (dropping the old one removes its entry), polled exactly once.
        this.timer = None;
        let fired = Arc::new(Fired {
            fired: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(fired.clone());
        #[allow(clippy::disallowed_methods)]
        let mut timer = glommio::timer::Timer::new(this.at - now);
        ONCE_REGISTRATIONS.with(|c| c.set(c.get() + 1));
        if Pin::new(&mut timer)
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return Poll::Ready(());
        }
        this.timer = Some(timer);
        this.registered = Some(fired);
        Poll::Pending
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
            futures_lite::future::or(Rearm(&w), sleep_once_until(at)).await;
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
                sleep_once(Duration::from_millis(1)).await;
            }
            assert!(!wheel().driver_running.get());
        });
    }

    fn once_registrations() -> u64 {
        ONCE_REGISTRATIONS.with(Cell::get)
    }

    #[test]
    fn a_once_raced_against_a_busy_future_registers_one_timer() {
        run(|| async {
            let before = once_registrations();
            // 10,000 polls of the timer (one per yield of the other side).
            let busy = async {
                for _ in 0..10_000 {
                    futures_lite::future::yield_now().await;
                }
            };
            futures_lite::future::or(
                async {
                    sleep_once(Duration::from_secs(600)).await;
                    panic!("the 600 s timer fired");
                },
                busy,
            )
            .await;
            assert_eq!(once_registrations() - before, 1);
            // And it still fires.
            let start = Instant::now();
            sleep_once(Duration::from_millis(5)).await;
            assert!(start.elapsed() >= Duration::from_millis(5));
        });
    }

    #[test]
    fn once_timers_in_glommios_wheel_never_resolve_early_or_hang() {
        run(|| async {
            // More than 256 live timers puts glommio's reactor in its wheel
            // mode (1 ms ticks), which may fire a timer before its instant.
            let start = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..400u64 {
                tasks.push(glommio::spawn_local(async move {
                    let d = Duration::from_micros(200 + i * 37);
                    let t0 = Instant::now();
                    // Raced against a busy future, so it is polled often.
                    futures_lite::future::or(sleep_once(d), async {
                        for _ in 0..50 {
                            futures_lite::future::yield_now().await;
                        }
                        std::future::pending::<()>().await
                    })
                    .await;
                    assert!(t0.elapsed() >= d, "resolved early");
                }));
            }
            for t in tasks {
                t.await;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "bounded");
        });
    }
}
