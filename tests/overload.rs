//! The shard's request-memory budget (`limits.max_queued_request_bytes`)
//! against the real binary: producers that want far more request bytes in
//! flight than the budget allows are slowed down (the broker stops reading),
//! never refused; every record is acknowledged and read back once, a frame
//! larger than the whole budget still gets through (the one overdraft the
//! budget allows when nothing else can free memory), and the broker's own
//! account at shutdown shows readers waited and the bound held.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{consume_all, record, run_client_within, value_str, Broker, BrokerOptions};
use corelog::client::{Producer, ProducerConfig};

const BUDGET_BYTES: u64 = 3 * 1024 * 1024;
const PRODUCERS: usize = 4;
const RECORDS_PER_PRODUCER: usize = 3_000;
const LIMIT: Duration = Duration::from_secs(120);
/// The broker's default `max_frame_bytes`.
const MAX_FRAME_BYTES: u64 = 64 << 20;

/// The numbers in the broker's shutdown line for its request budget:
/// (peak bytes, capacity bytes, reservations that waited, overdrafts).
fn budget_report(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("request budget (max_queued_request_bytes)"))
        .unwrap_or_else(|| panic!("no request budget report in the broker's log:\n{stderr}"));
    let after = |key: &str| -> u64 {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        line[at + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {key} in {line}"))
    };
    (
        after("peak "),
        after(" of "),
        after("reserved, "),
        after("waited, "),
    )
}

#[test]
fn producers_beyond_the_budget_are_slowed_not_refused_and_nothing_is_lost() {
    let mut broker = Broker::start_with(BrokerOptions {
        shards: 1,
        config_toml: Some(format!(
            "[limits]\nmax_queued_request_bytes = {BUDGET_BYTES}\n"
        )),
        ..BrokerOptions::default()
    });
    broker.create_topic("flood", 4);
    let base = broker.producer_config();
    let mut want = BTreeSet::new();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        // Up to 5 requests of 1 MiB in flight per partition and producer:
        // far more than the 3 MiB budget. The last producer sends one
        // partition a batch of about 5 MB, larger than the whole budget.
        let huge = p == PRODUCERS - 1;
        let cfg = ProducerConfig {
            batch_bytes: if huge { 8 << 20 } else { 1 << 20 },
            linger_ms: if huge { 1_000 } else { 20 },
            ..base.clone()
        };
        let count = if huge { 5_000 } else { RECORDS_PER_PRODUCER };
        let values: Vec<String> = (0..count)
            .map(|i| format!("p{p}-{i:05}-{}", "v".repeat(1_000)))
            .collect();
        want.extend(values.iter().cloned());
        producers.push((cfg, values, huge.then_some(0u32)));
    }
    run_client_within(LIMIT, move || async move {
        let mut tasks = Vec::new();
        for (cfg, values, partition) in producers {
            tasks.push(glommio::spawn_local(async move {
                let producer = Producer::connect(cfg).await.expect("producer");
                let mut acks = Vec::with_capacity(values.len());
                for v in &values {
                    acks.push(
                        producer
                            .send(record("flood", partition, None, v))
                            .await
                            .expect("send"),
                    );
                }
                producer.flush().await.expect("flush");
                for a in acks {
                    a.await
                        .expect("acknowledged: the budget slows, never refuses");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    let ccfg = broker.consumer_config();
    let got = run_client_within(LIMIT, move || async move {
        consume_all(ccfg, "flood", LIMIT).await
    });
    let values: Vec<String> = got.values().flatten().map(value_str).collect();
    assert_eq!(values.len(), want.len(), "every record once");
    assert_eq!(values.into_iter().collect::<BTreeSet<_>>(), want);
    assert!(broker.stop().success(), "clean shutdown");
    let (peak, capacity, waits, overdrafts) = budget_report(&broker.stderr());
    assert_eq!(capacity, BUDGET_BYTES);
    assert!(waits > 0, "readers waited for the budget ({waits} waits)");
    // Only the frame larger than the budget went past it, alone.
    assert!(
        overdrafts > 0,
        "the frame larger than the budget got through"
    );
    assert!(
        peak > capacity && peak <= capacity + MAX_FRAME_BYTES,
        "peak {peak}: past the budget {capacity} by at most one frame"
    );
}
