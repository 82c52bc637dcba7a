//! The service on a simulated clock and mesh: a long poll's deadline is
//! driven by `Clock::advance`, deterministically, with no real waiting.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::io::Clock;
use crate::protocol::messages::ConfigEntry;
use crate::shard::admin::CreateTopic;
use crate::shard::link::tests::with_sim_shards_on;

use super::types::{FetchItem, FetchRequest};
use super::Service;

#[test]
fn long_poll_deadline_follows_the_simulated_clock() {
    let clock = Clock::sim(1_000);
    let driver = clock.clone();
    with_sim_shards_on(2, 7, clock, move |_mesh, shards| async move {
        let s1 = shards[1].clone();
        let created = s1
            .call(
                0,
                CreateTopic {
                    name: "t".into(),
                    partitions: 2,
                    configs: Vec::<ConfigEntry>::new(),
                },
            )
            .await;
        assert!(matches!(created, Ok(Ok(()))), "{created:?}");
        let max_wait_ms = u64::from(s1.config.limits.max_fetch_wait_ms).min(30_000);
        assert!(max_wait_ms > 1, "max_fetch_wait_ms too small for this test");
        let done = Rc::new(Cell::new(false));
        let poll = {
            let svc = Service::new(s1.clone());
            let done = done.clone();
            glommio::spawn_local(async move {
                // One partition on each shard: one local wait, one over the mesh.
                let items = (0..2)
                    .map(|p| FetchItem {
                        topic: "t".into(),
                        partition: p,
                        offset: 0,
                        max_bytes: 1 << 20,
                    })
                    .collect();
                let got = svc
                    .fetch(FetchRequest {
                        items,
                        max_bytes: 1 << 20,
                        min_bytes: 1,
                        max_wait: Duration::from_millis(max_wait_ms),
                    })
                    .await;
                done.set(true);
                got
            })
        };
        let settle = || async {
            for _ in 0..200 {
                futures_lite::future::yield_now().await;
            }
        };
        settle().await;
        assert!(
            !done.get(),
            "a long poll with no data waits for its deadline"
        );
        driver.advance(Duration::from_millis(max_wait_ms - 1));
        settle().await;
        assert!(!done.get(), "1 ms before its deadline the poll still waits");
        driver.advance(Duration::from_millis(1));
        let got = poll.await;
        assert!(done.get());
        assert_eq!(got.len(), 2);
        for r in &got {
            let f = r.as_ref().expect("fetch");
            assert!(f.records.is_empty());
            assert_eq!(f.high_watermark, 0);
        }
        for s in &shards {
            s.close_all().await;
        }
    });
}
