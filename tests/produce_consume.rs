//! End-to-end produce/consume: 100,000 keyed events from two concurrent
//! producers into 4 partitions come back complete, in order, exactly once,
//! each key in its partition; and a graceful restart keeps all of it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{assert_contiguous, consume_all, key_str, record, run_client, value_str, Broker};
use corelog::client::{partition_for_key, ConsumerRecord, Producer};

const PARTITIONS: u32 = 4;
const KEYS: u32 = 500;

/// Event `i` of producer `p`: key and the value `p:key:seq`, where `seq`
/// counts the events that producer sent for that key before this one.
fn events(p: u32, n: u32) -> Vec<(String, String)> {
    let mut seq: HashMap<u32, u32> = HashMap::new();
    (0..n)
        .map(|i| {
            let k = (i.wrapping_mul(7919) + p * 13) % KEYS;
            let s = seq.entry(k).or_insert(0);
            let v = format!("{p}:key-{k}:{s}");
            *s += 1;
            (format!("key-{k}"), v)
        })
        .collect()
}

/// Checks everything the produce/consume contract promises about what was
/// read back, given what each producer sent.
fn check(records: &BTreeMap<u32, Vec<ConsumerRecord>>, sent: &[Vec<(String, String)>]) {
    assert_contiguous(records);
    let total: usize = records.values().map(Vec::len).sum();
    let expected: usize = sent.iter().map(Vec::len).sum();
    assert_eq!(total, expected, "every event read back exactly once");

    let mut seen: HashSet<(String, String)> = HashSet::with_capacity(total);
    for (p, recs) in records {
        // (producer, key) -> last sequence seen in this partition
        let mut last: HashMap<(String, String), i64> = HashMap::new();
        for r in recs {
            let key = key_str(r);
            let value = value_str(r);
            assert_eq!(
                *p,
                partition_for_key(key.as_bytes(), PARTITIONS),
                "key {key} must live in partition_for_key's partition"
            );
            let mut it = value.splitn(3, ':');
            let (producer, vkey, seq) = (it.next(), it.next(), it.next());
            assert_eq!(
                vkey,
                Some(key.as_str()),
                "value {value} belongs to key {key}"
            );
            let seq: i64 = seq
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad value {value:?}"));
            let slot = last
                .entry((producer.unwrap_or("").to_string(), key.clone()))
                .or_insert(-1);
            assert!(
                seq > *slot,
                "partition {p} offset {}: {value} after sequence {} (per-key order broken)",
                r.offset,
                *slot
            );
            *slot = seq;
            assert!(seen.insert((key, value.clone())), "duplicate event {value}");
        }
    }
    for (key, value) in sent.iter().flatten() {
        assert!(
            seen.contains(&(key.clone(), value.clone())),
            "event {value} was acknowledged but not read back"
        );
    }
}

#[test]
fn hundred_thousand_keyed_events_from_two_cli_producers() {
    let broker = Broker::start();
    let topic = "keyed-100k";
    broker.create_topic(topic, PARTITIONS);

    let per_producer = 50_000;
    let sent: Vec<Vec<(String, String)>> = (0..2).map(|p| events(p, per_producer)).collect();
    let inputs: Vec<String> = sent
        .iter()
        .map(|evs| evs.iter().map(|(k, v)| format!("{k}|{v}\n")).collect())
        .collect();

    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|input| {
                let broker = &broker;
                s.spawn(move || broker.cli(&["produce", topic, "--key-separator", "|"], input))
            })
            .collect();
        for h in handles {
            let out = h.join().expect("producer thread");
            assert!(
                out.status.success(),
                "produce failed: {}\n{}",
                out.status,
                out.stderr
            );
            assert!(
                out.stderr
                    .contains(&format!("produced {per_producer} records")),
                "{}",
                out.stderr
            );
        }
    });

    let cfg = broker.consumer_config();
    let records =
        run_client(move || async move { consume_all(cfg, topic, Duration::from_secs(150)).await });
    check(&records, &sent);

    let hw = {
        let cfg = broker.client_config();
        run_client(move || async move { common::high_watermarks(cfg, topic).await })
    };
    for (p, recs) in &records {
        assert_eq!(hw[p], recs.len() as u64, "partition {p} end offset");
    }
}

#[test]
fn graceful_restart_keeps_everything() {
    let mut broker = Broker::start();
    let topic = "restart-keeps";
    broker.create_topic(topic, PARTITIONS);

    let per_producer = 5_000;
    let sent: Vec<Vec<(String, String)>> = (0..2).map(|p| events(p, per_producer)).collect();

    // Two Producers in one executor, sending concurrently.
    let pcfg = broker.producer_config();
    let to_send = sent.clone();
    run_client(move || async move {
        let tasks: Vec<_> = to_send
            .into_iter()
            .map(|evs| {
                let pcfg = pcfg.clone();
                glommio::spawn_local(async move {
                    let producer = Producer::connect(pcfg).await.expect("producer connect");
                    let mut pending = Vec::with_capacity(evs.len());
                    for (k, v) in &evs {
                        pending.push(
                            producer
                                .send(record(topic, None, Some(k), v))
                                .await
                                .expect("send"),
                        );
                    }
                    for (d, (k, _)) in pending.into_iter().zip(&evs) {
                        let md = d.await.expect("delivery");
                        assert_eq!(md.partition, partition_for_key(k.as_bytes(), PARTITIONS));
                    }
                    producer.close().await.expect("close");
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });

    let cfg = broker.consumer_config();
    let before =
        run_client(move || async move { consume_all(cfg, topic, Duration::from_secs(120)).await });
    check(&before, &sent);
    let hw_before = {
        let cfg = broker.client_config();
        run_client(move || async move { common::high_watermarks(cfg, topic).await })
    };

    broker.restart();

    let hw_after = {
        let cfg = broker.client_config();
        run_client(move || async move { common::high_watermarks(cfg, topic).await })
    };
    assert_eq!(
        hw_before, hw_after,
        "end offsets survive a graceful restart"
    );
    let cfg = broker.consumer_config();
    let after =
        run_client(move || async move { consume_all(cfg, topic, Duration::from_secs(120)).await });
    assert_eq!(before.len(), after.len());
    for (p, recs) in &before {
        let again = &after[p];
        assert_eq!(recs.len(), again.len(), "partition {p} record count");
        for (a, b) in recs.iter().zip(again) {
            assert_eq!(
                (a.offset, a.timestamp_ms, &a.key, &a.value, &a.headers),
                (b.offset, b.timestamp_ms, &b.key, &b.value, &b.headers),
                "partition {p} differs after restart"
            );
        }
    }

    // New produces continue right after the old end.
    let pcfg = broker.producer_config();
    let md = run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("connect");
        let d = producer
            .send(record(topic, Some(0), Some("late"), "after restart"))
            .await
            .expect("send");
        let md = d.await.expect("delivery");
        producer.close().await.expect("close");
        md
    });
    assert_eq!(md.partition, 0);
    assert_eq!(md.offset, hw_before[&0], "next offset after restart");
}
