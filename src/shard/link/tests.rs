//! The mesh seam is real: shards booted on one executor over a [`SimMesh`]
//! run typed ops through the same `start_on` / `call` / `call_all` as in
//! production; a failed link is an error (not a hang, not a panic), a
//! delayed or reordered reply reaches its own caller, and seeded delays keep
//! per-pair order.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::io::{Clock, Disk};
use crate::protocol::{ErrorCode, ShardId, WireError};
use crate::shard::ops::LocalBoxFuture;
use crate::shard::{Links, Shard, ShardOp};

use super::SimMesh;

thread_local! {
    /// Parked `Echo { park: true }` ops wait here.
    static GATE: Rc<Semaphore> = Rc::new(Semaphore::new(0));
    /// (target shard, from, seq) in the order ops started (synchronous part).
    static STARTED: RefCell<Vec<(ShardId, ShardId, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Answers (the shard it ran on, `value`); parked ones first wait on GATE.
struct Echo {
    from: ShardId,
    value: u64,
    park: bool,
}

impl ShardOp for Echo {
    type Reply = (ShardId, u64);

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let at = shard.id;
        STARTED.with(|s| s.borrow_mut().push((at, self.from, self.value)));
        let gate = self.park.then(|| GATE.with(Rc::clone));
        Box::pin(async move {
            if let Some(g) = gate {
                let _ = g.acquire(1).await;
            }
            (at, self.value)
        })
    }
}

struct Ping;

impl ShardOp for Ping {
    type Reply = Result<(), WireError>;

    fn start(self, _shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        Box::pin(async { Ok(()) })
    }
}

/// Boots `n` shards on one executor over a [`SimMesh`] seeded with `seed`,
/// on a temp data dir, deciding by `clock`, and runs `scenario` on them
/// (bounded: a hang fails the test).
pub(crate) fn with_sim_shards_on<F, Fut>(n: usize, seed: u64, clock: Clock, scenario: F)
where
    F: FnOnce(SimMesh<crate::shard::ShardMessage>, Vec<Rc<Shard>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("sim-mesh")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mesh = SimMesh::new(n, seed);
            let mut shards = Vec::new();
            for id in 0..n {
                let config = BrokerConfig {
                    data_dir: data_dir.clone(),
                    ..Default::default()
                };
                let (senders, receivers) = mesh.join(id);
                let links = Links { senders, receivers };
                let s = Shard::boot_on(Disk::Real, clock.clone(), id, n, config, links, vec![])
                    .await
                    .expect("boot");
                shards.push(s);
            }
            for s in &shards {
                s.start_receivers();
            }
            // Bounded: a hang fails the test instead of blocking it.
            let bounded = futures_lite::future::or(
                async {
                    scenario(mesh, shards).await;
                    true
                },
                async {
                    crate::timer::sleep(Duration::from_secs(60)).await;
                    false
                },
            );
            assert!(bounded.await, "scenario hung");
        })
        .expect("spawn")
        .join()
        .expect("executor");
}

fn with_sim_shards<F, Fut>(n: usize, seed: u64, scenario: F)
where
    F: FnOnce(SimMesh<crate::shard::ShardMessage>, Vec<Rc<Shard>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    with_sim_shards_on(n, seed, Clock::sim(0), scenario)
}

fn echo(from: ShardId, value: u64) -> Echo {
    Echo {
        from,
        value,
        park: false,
    }
}

#[test]
fn failed_link_is_an_error_not_a_hang() {
    with_sim_shards(3, 1, |mesh, shards| async move {
        let s0 = &shards[0];
        // In flight when the link fails: parked on shard 1.
        let parked = s0
            .start_on(
                1,
                Echo {
                    from: 0,
                    value: 7,
                    park: true,
                },
            )
            .await;
        // Let shard 1 receive and start it.
        while STARTED.with(|s| s.borrow().is_empty()) {
            futures_lite::future::yield_now().await;
        }
        mesh.fail_link(0, 1);
        let err = parked.wait().await.expect_err("link failed");
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.contains("shard 1"), "{}", err.message);
        // Later calls fail at once, from either side.
        let err = s0.call(1, echo(0, 8)).await.expect_err("link down");
        assert!(err.message.contains("shard 1"), "{}", err.message);
        let err = shards[1].call(0, echo(1, 9)).await.expect_err("link down");
        assert!(err.message.contains("shard 0"), "{}", err.message);
        // Other links are untouched; call_all reports the broken one.
        assert_eq!(s0.call(2, echo(0, 10)).await.expect("2 is up"), (2, 10));
        assert_eq!(shards[2].call(1, echo(2, 11)).await.expect("up"), (1, 11));
        let all = s0.call_all(|| Ping).await;
        assert_eq!(all.expect_err("one link down").code, ErrorCode::Internal);
        // The parked op still finishes on shard 1; its reply is dropped.
        GATE.with(|g| g.signal(1));
    });
}

#[test]
fn delayed_replies_reach_their_own_callers() {
    with_sim_shards(3, 2, |mesh, shards| async move {
        let s0 = &shards[0];
        // Replies from shard 1 are held: shard 2's reply overtakes them.
        mesh.hold(1, 0);
        let a = s0.start_on(1, echo(0, 1)).await;
        let b = s0.start_on(2, echo(0, 2)).await;
        assert_eq!(b.wait().await.expect("b"), (2, 2));
        mesh.release(1, 0);
        assert_eq!(a.wait().await.expect("a"), (1, 1));

        // Same peer, replies in the opposite order of the requests.
        let first = s0
            .start_on(
                1,
                Echo {
                    from: 0,
                    value: 10,
                    park: true,
                },
            )
            .await;
        let second = s0.start_on(1, echo(0, 11)).await;
        assert_eq!(second.wait().await.expect("second"), (1, 11));
        GATE.with(|g| g.signal(1));
        assert_eq!(first.wait().await.expect("first"), (1, 10));
        assert!(s0.call_all(|| Ping).await.is_ok());
    });
}

#[test]
fn seeded_delays_keep_pair_order_and_pair_every_reply() {
    for seed in 1..=4u64 {
        with_sim_shards(3, seed, move |mesh, shards| async move {
            mesh.set_max_delay_turns(6);
            STARTED.with(|s| s.borrow_mut().clear());
            let mut rng = crate::io::sim::Rng(seed);
            let mut calls = Vec::new();
            for i in 0..150u64 {
                let from = rng.below(3) as usize;
                let to = rng.below(3) as usize;
                let started = shards[from].start_on(to, echo(from, i)).await;
                calls.push((to, i, started));
            }
            // Waited in reverse: every reply still goes to its own caller.
            for (to, i, started) in calls.into_iter().rev() {
                assert_eq!(started.wait().await.expect("reply"), (to, i));
            }
            // Ops from one shard to another started in the order sent.
            let log = STARTED.with(|s| s.borrow().clone());
            assert_eq!(log.len(), 150);
            for (k, a) in log.iter().enumerate() {
                for b in &log[k + 1..] {
                    if (a.0, a.1) == (b.0, b.1) {
                        assert!(a.2 < b.2, "per-pair order broken: {a:?} before {b:?}");
                    }
                }
            }
        });
    }
}
