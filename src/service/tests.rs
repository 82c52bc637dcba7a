//! Two real shards (two glommio executors joined by the mesh) on a temp data
//! dir, driven through the partition service: topic admin through shard 0,
//! produce/fetch/list-offsets forwarded between shards, a cross-shard
//! long-poll wake-up, delete, restart recovery; and the typed mesh itself
//! (an op defined here, run locally, on the peer and on every shard).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::{Acks, ConfigEntry, OffsetSpec};
use crate::protocol::{ErrorCode, WireError};
use crate::shard::admin::{CreateTopic, DeleteTopic};
use crate::shard::ops::LocalBoxFuture;
use crate::shard::{registry, Mesh, Shard, ShardOp, TopicMeta};

use super::owner::WaitItem;
use super::types::{FetchItem, FetchRequest, OffsetQuery, ProduceItem, ProduceRequest, Produced};
use super::Service;

fn produce_req(items: Vec<ProduceItem>) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::Leader,
        timeout: None,
        items,
    }
}

async fn produce(s: &Service, items: Vec<ProduceItem>) -> Vec<Result<Produced, WireError>> {
    s.produce(produce_req(items)).await.finish().await
}

fn create(name: &str, partitions: i32, configs: Vec<ConfigEntry>) -> CreateTopic {
    CreateTopic {
        name: name.into(),
        partitions,
        configs,
    }
}

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1_000, None, Some(value.as_bytes()), &[]);
    b.finish()
}

fn item(topic: &str, partition: u32, value: &str) -> ProduceItem {
    ProduceItem {
        topic: topic.into(),
        partition,
        batch: batch(value),
    }
}

/// Runs `scenario` on shard 1 of a two-shard broker; shard 0 serves until
/// the scenario stops it.
fn with_two_shards<F, Fut>(config: BrokerConfig, scenario: F)
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let topics = registry::load_topics(&crate::io::Disk::Real, &config.data_dir, 2, 100)
        .expect("load topics");
    let mesh = Mesh::full(2, 64);
    let (c0, m0, t0) = (config.clone(), mesh.clone(), topics.clone());
    let h0 = LocalExecutorBuilder::new(Placement::Unbound)
        .name("test-shard-0")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let s = Shard::boot(0, 2, c0, m0, t0).await.expect("boot 0");
            let addr = "127.0.0.1:1".parse().expect("addr");
            s.send_listen_addrs(&[addr]).await;
            s.start_receivers();
            s.stopped().await;
            s.close_all().await;
        })
        .expect("spawn shard 0");
    let h1 = LocalExecutorBuilder::new(Placement::Unbound)
        .name("test-shard-1")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let s = Shard::boot(1, 2, config, mesh, topics)
                .await
                .expect("boot 1");
            assert!(s.recv_listen_addrs().await.is_some());
            s.start_receivers();
            scenario(s.clone()).await;
            s.broadcast_shutdown().await;
            s.close_all().await;
        })
        .expect("spawn shard 1");
    h1.join().expect("shard 1");
    h0.join().expect("shard 0");
}

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    c.topic_defaults
        .set("flush.interval_ms", "5")
        .expect("flush");
    c
}

#[test]
fn forwarding_long_poll_and_admin_across_two_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_two_shards(config(dir.path()), |s| async move {
        let svc = Service::new(s.clone());
        // CreateTopic is forwarded to shard 0; we know the topic once it answers.
        let configs = vec![ConfigEntry {
            key: "segment_bytes".into(),
            value: "1048576".into(),
        }];
        let reply = s.call(0, create("t", 4, configs)).await;
        assert!(matches!(reply, Ok(Ok(()))), "{reply:?}");
        let meta = s.topic("t").expect("topic known on shard 1");
        assert_eq!(meta.assignment, registry::assign("t", 4, 2));
        assert_eq!(meta.config.segment_bytes, 1_048_576);
        let again = s.call(0, create("t", 1, vec![])).await;
        assert!(matches!(again, Ok(Err(ref e)) if e.code == ErrorCode::TopicAlreadyExists));
        let bad = s.call(0, create("u", 0, vec![])).await;
        assert!(matches!(bad, Ok(Err(ref e)) if e.code == ErrorCode::InvalidPartitions));

        // Produce to every partition (half local, half forwarded), twice.
        for round in 0..2u64 {
            let items = (0..4).map(|p| item("t", p, &format!("r{round}"))).collect();
            let results = produce(&svc, items).await;
            for r in &results {
                assert_eq!(r.as_ref().map(|a| a.base_offset).ok(), Some(round));
            }
        }
        let unknown = produce(&svc, vec![item("t", 9, "x"), item("nope", 0, "x")]).await;
        assert!(unknown
            .iter()
            .all(|r| matches!(r, Err(e) if e.code == ErrorCode::UnknownTopicOrPartition)));

        let fetch_items: Vec<FetchItem> = (0..4)
            .map(|p| FetchItem {
                topic: "t".into(),
                partition: p,
                offset: 0,
                max_bytes: 1 << 20,
            })
            .collect();
        let fetched = svc
            .fetch(FetchRequest {
                items: fetch_items,
                max_bytes: 1 << 20,
                min_bytes: 0,
                max_wait: Duration::ZERO,
            })
            .await;
        for f in &fetched {
            let d = f.as_ref().expect("fetch");
            assert_eq!(d.high_watermark, 2);
            let batches = d.records.batch_spans().count();
            assert_eq!(batches, 2);
        }
        let offsets = svc
            .list_offsets(vec![
                OffsetQuery {
                    topic: "t".into(),
                    partition: 0,
                    spec: OffsetSpec::Latest,
                },
                OffsetQuery {
                    topic: "t".into(),
                    partition: 1,
                    spec: OffsetSpec::Earliest,
                },
            ])
            .await;
        assert_eq!(offsets[0].as_ref().ok(), Some(&(2, -1)));
        assert_eq!(offsets[1].as_ref().ok(), Some(&(0, -1)));

        // Long poll on a partition owned by shard 0: woken by a produce, long
        // before the deadline.
        let remote_p = (0..4)
            .find(|p| meta.owner(*p) == Some(0))
            .expect("a remote partition");
        let deadline = Instant::now() + Duration::from_secs(60);
        let producer = {
            let svc = svc.clone();
            glommio::spawn_local(async move {
                crate::timer::sleep_once(Duration::from_millis(20)).await;
                produce(&svc, vec![item("t", remote_p, "late")]).await
            })
        };
        super::fetch::wait_any(
            &s,
            vec![WaitItem {
                topic: "t".into(),
                partition: remote_p,
                offset: 2,
            }],
            deadline,
        )
        .await;
        assert!(Instant::now() < deadline, "woken by data, not the deadline");
        let late = producer.await;
        assert_eq!(late[0].as_ref().map(|a| a.base_offset).ok(), Some(2));

        // Delete via shard 0: gone everywhere, directory removed.
        let del = s.call(0, DeleteTopic { name: "t".into() }).await;
        assert!(matches!(del, Ok(Ok(()))), "{del:?}");
        assert!(s.topic("t").is_none());
        assert!(!registry::topic_dir(&s.config.data_dir, "t").exists());

        // Something to find after a restart.
        let keep = s.call(0, create("keep", 2, vec![])).await;
        assert!(matches!(keep, Ok(Ok(()))), "{keep:?}");
        let r = produce(&svc, vec![item("keep", 0, "a"), item("keep", 1, "b")]).await;
        assert!(r.iter().all(|r| r.is_ok()));
    });

    // Restart: the topic and its data come back, on the same owners.
    let loaded = registry::load_topics(&crate::io::Disk::Real, dir.path(), 2, 100).expect("load");
    let names: Vec<&str> = loaded.iter().map(|m: &TopicMeta| m.name.as_str()).collect();
    assert_eq!(names, vec!["keep"]);
    with_two_shards(config(dir.path()), |s| async move {
        let offsets = Service::new(s)
            .list_offsets(
                (0..2)
                    .map(|p| OffsetQuery {
                        topic: "keep".into(),
                        partition: p,
                        spec: OffsetSpec::Latest,
                    })
                    .collect(),
            )
            .await;
        for o in offsets {
            assert_eq!(o.ok(), Some((1, -1)));
        }
    });
}

/// An op defined outside the mesh: answers which shard ran it, and checks
/// that its synchronous part runs on arrival.
struct WhereAmI {
    tag: u64,
}

impl ShardOp for WhereAmI {
    type Reply = (u64, usize);

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, (u64, usize)> {
        let id = shard.id;
        Box::pin(async move { (self.tag, id) })
    }
}

/// An admin-style op answering `Result<(), WireError>`, failing on shard 0.
struct FailOnZero;

impl ShardOp for FailOnZero {
    type Reply = Result<(), WireError>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let id = shard.id;
        Box::pin(async move {
            if id == 0 {
                Err(WireError::new(ErrorCode::InvalidRequest, "shard 0 says no"))
            } else {
                Ok(())
            }
        })
    }
}

#[test]
fn typed_ops_run_locally_on_a_peer_and_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_two_shards(config(dir.path()), |s| async move {
        // Local: no mesh; remote: over the mesh; the reply is typed.
        assert_eq!(s.call(1, WhereAmI { tag: 7 }).await.ok(), Some((7, 1)));
        assert_eq!(s.call(0, WhereAmI { tag: 8 }).await.ok(), Some((8, 0)));
        // Many in flight to the peer at once: each answer finds its caller.
        let mut started = Vec::new();
        for tag in 0..50u64 {
            started.push(s.start_on((tag % 2) as usize, WhereAmI { tag }).await);
        }
        for (tag, st) in (0..50u64).zip(started) {
            assert_eq!(st.wait().await.ok(), Some((tag, (tag % 2) as usize)));
        }
        // call_all runs everywhere and reports the first error.
        let all = s.call_all(|| FailOnZero).await;
        assert!(
            matches!(all, Err(ref e) if e.message == "shard 0 says no"),
            "{all:?}"
        );
        // Scatter: unknown items are answered here, in input order.
        let svc = Service::new(s.clone());
        let r = svc
            .list_offsets(vec![OffsetQuery {
                topic: "none".into(),
                partition: 3,
                spec: OffsetSpec::Latest,
            }])
            .await;
        assert_eq!(r.len(), 1);
        assert!(matches!(&r[0], Err(e) if e.code == ErrorCode::UnknownTopicOrPartition));
    });
}

#[test]
fn producer_ids_are_unique_across_restarts_and_bumps_fence() {
    use crate::protocol::messages::ProducerIdentity;
    use crate::shard::producer_ids::PRODUCER_ID_BLOCK_SIZE;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = first.clone();
    with_two_shards(config(dir.path()), move |s| async move {
        let svc = Service::new(s.clone());
        let a = svc.init_producer_id(None).await.expect("a");
        let b = svc.init_producer_id(None).await.expect("b");
        assert_ne!(a.producer_id, b.producer_id);
        assert_eq!((a.producer_epoch, b.producer_epoch), (0, 0));
        let bumped = svc.init_producer_id(Some(a)).await.expect("bump");
        assert_eq!(bumped.producer_id, a.producer_id);
        assert_eq!(bumped.producer_epoch, 1);
        // A second bump from the old epoch is a zombie's.
        let stale = svc.init_producer_id(Some(a)).await;
        assert!(matches!(stale, Err(ref e) if e.code == ErrorCode::InvalidProducerEpoch));
        let never = ProducerIdentity {
            producer_id: 1 << 40,
            producer_epoch: 0,
        };
        let unknown = svc.init_producer_id(Some(never)).await;
        assert!(matches!(unknown, Err(ref e) if e.code == ErrorCode::UnknownProducerId));
        let exhausted = ProducerIdentity {
            producer_id: b.producer_id,
            producer_epoch: i16::MAX,
        };
        // Not the latest epoch of b: refused; epoch exhaustion is checked
        // only for the latest one.
        assert!(svc.init_producer_id(Some(exhausted)).await.is_err());

        // An idempotent batch and its retry: one write, the original offset.
        let reply = s.call(0, create("idem", 2, vec![])).await;
        assert!(matches!(reply, Ok(Ok(()))), "{reply:?}");
        for p in 0..2 {
            let mut bb = BatchBuilder::new();
            bb.set_producer(b.producer_id, 0, 0);
            bb.push(1_000, None, Some(b"once"), &[]);
            let batch = bb.finish();
            let it = || ProduceItem {
                topic: "idem".into(),
                partition: p,
                batch: batch.clone(),
            };
            let r = produce(&svc, vec![it(), it()]).await;
            assert_eq!(r[0].as_ref().map(|a| a.base_offset).ok(), Some(0));
            assert_eq!(r[1].as_ref().map(|a| a.base_offset).ok(), Some(0));
            let again = produce(&svc, vec![it()]).await;
            assert_eq!(again[0].as_ref().map(|a| a.base_offset).ok(), Some(0));
        }
        seen.lock()
            .expect("lock")
            .extend([a.producer_id, b.producer_id]);
    });
    assert!(dir.path().join("producer-id-block").exists());
    let before = first.lock().expect("lock").clone();
    with_two_shards(config(dir.path()), move |s| async move {
        let svc = Service::new(s.clone());
        let c = svc.init_producer_id(None).await.expect("after restart");
        assert!(
            c.producer_id >= PRODUCER_ID_BLOCK_SIZE,
            "starts after the reserved block"
        );
        assert!(!before.contains(&c.producer_id));
        // The retry after the restart is still a duplicate.
        let mut bb = BatchBuilder::new();
        bb.set_producer(before[1], 0, 0);
        bb.push(1_000, None, Some(b"once"), &[]);
        let r = produce(
            &svc,
            vec![ProduceItem {
                topic: "idem".into(),
                partition: 0,
                batch: bb.finish(),
            }],
        )
        .await;
        assert_eq!(r[0].as_ref().map(|a| a.base_offset).ok(), Some(0));
        let hw = svc
            .list_offsets(vec![super::types::OffsetQuery {
                topic: "idem".into(),
                partition: 0,
                spec: OffsetSpec::Latest,
            }])
            .await;
        assert_eq!(hw[0].as_ref().ok(), Some(&(1, -1)), "written once");
    });
}
