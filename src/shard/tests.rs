//! Two real shards (two glommio executors joined by the mesh) on a temp data
//! dir: topic admin through shard 0, produce/fetch/list-offsets forwarded
//! between shards, a cross-shard long-poll wake-up, delete, restart recovery.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::{Acks, ConfigEntry, OffsetSpec};
use crate::protocol::ErrorCode;

use super::mesh::{FetchItem, OffsetItem, ProduceItem, WaitItem};
use super::{registry, Mesh, Shard, ShardReply, ShardRequest, TopicMeta};

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
            s.send_listen_addr(addr).await;
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
            assert!(s.recv_listen_addr().await.is_some());
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
        // CreateTopic is forwarded to shard 0; we know the topic once it answers.
        let reply = s
            .call(
                0,
                ShardRequest::CreateTopic {
                    name: "t".into(),
                    partitions: 4,
                    configs: vec![ConfigEntry {
                        key: "segment_bytes".into(),
                        value: "1048576".into(),
                    }],
                },
            )
            .await;
        assert!(matches!(reply, ShardReply::Done(Ok(()))), "{reply:?}");
        let meta = s.topic("t").expect("topic known on shard 1");
        assert_eq!(meta.assignment, registry::assign("t", 4, 2));
        assert_eq!(meta.config.segment_bytes, 1_048_576);
        let again = s
            .call(
                0,
                ShardRequest::CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    configs: vec![],
                },
            )
            .await;
        assert!(
            matches!(again, ShardReply::Done(Err(ref e)) if e.code == ErrorCode::TopicAlreadyExists)
        );
        let bad = s
            .call(
                0,
                ShardRequest::CreateTopic {
                    name: "u".into(),
                    partitions: 0,
                    configs: vec![],
                },
            )
            .await;
        assert!(
            matches!(bad, ShardReply::Done(Err(ref e)) if e.code == ErrorCode::InvalidPartitions)
        );

        // Produce to every partition (half local, half forwarded), twice.
        for round in 0..2u64 {
            let items = (0..4).map(|p| item("t", p, &format!("r{round}"))).collect();
            let results = s.produce_dispatch(Acks::Leader, items).await.finish().await;
            for r in &results {
                assert_eq!(r.as_ref().map(|a| a.base_offset).ok(), Some(round));
            }
        }
        let unknown = s
            .produce_dispatch(Acks::Leader, vec![item("t", 9, "x"), item("nope", 0, "x")])
            .await
            .finish()
            .await;
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
        let fetched = s.fetch_many(fetch_items, 1 << 20).await;
        for f in &fetched {
            let d = f.as_ref().expect("fetch");
            assert_eq!(d.high_watermark, 2);
            assert_eq!(crate::protocol::batch::batches(&d.records).count(), 2);
        }
        let offsets = s
            .list_offsets_many(vec![
                OffsetItem {
                    topic: "t".into(),
                    partition: 0,
                    spec: OffsetSpec::Latest,
                },
                OffsetItem {
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
            let s = s.clone();
            glommio::spawn_local(async move {
                crate::timer::sleep_once(Duration::from_millis(20)).await;
                s.produce_dispatch(Acks::Leader, vec![item("t", remote_p, "late")])
                    .await
                    .finish()
                    .await
            })
        };
        s.wait_any(
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
        let del = s
            .call(0, ShardRequest::DeleteTopic { name: "t".into() })
            .await;
        assert!(matches!(del, ShardReply::Done(Ok(()))), "{del:?}");
        assert!(s.topic("t").is_none());
        assert!(!registry::topic_dir(&s.config.data_dir, "t").exists());

        // Something to find after a restart.
        let keep = s
            .call(
                0,
                ShardRequest::CreateTopic {
                    name: "keep".into(),
                    partitions: 2,
                    configs: vec![],
                },
            )
            .await;
        assert!(matches!(keep, ShardReply::Done(Ok(()))), "{keep:?}");
        let r = s
            .produce_dispatch(
                Acks::Leader,
                vec![item("keep", 0, "a"), item("keep", 1, "b")],
            )
            .await
            .finish()
            .await;
        assert!(r.iter().all(|r| r.is_ok()));
    });

    // Restart: the topic and its data come back, on the same owners.
    let loaded = registry::load_topics(&crate::io::Disk::Real, dir.path(), 2, 100).expect("load");
    let names: Vec<&str> = loaded.iter().map(|m: &TopicMeta| m.name.as_str()).collect();
    assert_eq!(names, vec!["keep"]);
    with_two_shards(config(dir.path()), |s| async move {
        let offsets = s
            .list_offsets_many(
                (0..2)
                    .map(|p| OffsetItem {
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
