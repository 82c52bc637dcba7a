//! The idempotent producer against the real broker: a proxy cuts the
//! producer's connections at random points (also after a request reached
//! the broker and before its answer came back), and the broker is killed
//! with SIGKILL and restarted mid-run. Every record must be acknowledged,
//! and be in the log exactly once, in send order per partition.
//!
//! Randomness is seeded: the seed is printed, and `CORELOG_PROXY_SEED=N`
//! replays it.

mod common;

#[path = "support/cut_proxy.rs"]
mod cut_proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_contiguous, consume_all, record, run_client, value_str, within, Broker};
use corelog::client::{ClientConfig, Producer, ProducerConfig};
use cut_proxy::CutProxy;

const RECORDS: u32 = 100_000;
const PARTITIONS: u32 = 4;
/// Longest the whole produce phase may take.
const PRODUCE_LIMIT: Duration = Duration::from_secs(150);

fn seed() -> u64 {
    let seed = match std::env::var("CORELOG_PROXY_SEED") {
        Ok(s) => s.parse().expect("CORELOG_PROXY_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("cut proxy seed: {seed} (replay with CORELOG_PROXY_SEED={seed})");
    seed
}

fn value(i: u32) -> String {
    format!("record-{i:06}")
}

fn producer_config(bootstrap: String) -> ProducerConfig {
    ProducerConfig {
        client: ClientConfig {
            bootstrap,
            client_id: "idempotence-test".into(),
            request_timeout_ms: 5_000,
            ..ClientConfig::default()
        },
        linger_ms: 2,
        batch_bytes: 16 * 1024,
        retry_backoff_ms: 10,
        retry_backoff_max_ms: 200,
        delivery_timeout_ms: 120_000,
        ..ProducerConfig::default()
    }
}

/// Sends `RECORDS` records round robin over the partitions through
/// `bootstrap`, counting acknowledgements in `acked`; asserts each one
/// succeeded with offsets in send order per partition.
async fn produce_all(bootstrap: String, topic: String, acked: Arc<AtomicUsize>) {
    // The proxy may cut the very first connection too: connect again
    // (a bounded number of times); riding through cuts starts after.
    let mut producer = None;
    for attempt in 1..=20 {
        let cfg = producer_config(bootstrap.clone());
        match within(Duration::from_secs(30), "connect", Producer::connect(cfg)).await {
            Ok(p) => {
                producer = Some(p);
                break;
            }
            Err(e) => eprintln!("connect attempt {attempt}: {e}"),
        }
    }
    let producer = producer.expect("connect through the proxy within 20 attempts");
    assert!(producer.identity().is_some(), "idempotent by default");
    let mut futures = Vec::with_capacity(RECORDS as usize);
    for i in 0..RECORDS {
        let rec = record(&topic, Some(i % PARTITIONS), None, &value(i));
        let f = within(Duration::from_secs(30), "send", producer.send(rec))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        let acked = acked.clone();
        futures.push(glommio::spawn_local(async move {
            let md = f.await;
            acked.fetch_add(1, Ordering::SeqCst);
            (i, md)
        }));
        if i % 1_000 == 999 {
            // Let the tasks run (and keep the send loop from racing ahead).
            futures_lite::future::yield_now().await;
        }
    }
    within(PRODUCE_LIMIT, "flush", producer.flush())
        .await
        .expect("flush: every batch acknowledged");
    let mut next = vec![0u64; PARTITIONS as usize];
    for f in futures {
        let (i, md) = f.await;
        let md = md.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        assert_eq!(md.partition, i % PARTITIONS);
        let slot = &mut next[md.partition as usize];
        assert_eq!(md.offset, *slot, "record {i}: offsets follow send order");
        *slot += 1;
    }
}

/// Every record is in the log exactly once, in send order per partition.
fn check_log(broker: &Broker, topic: &str) {
    let cfg = broker.consumer_config();
    let t = topic.to_string();
    let got =
        run_client(move || async move { consume_all(cfg, &t, Duration::from_secs(120)).await });
    assert_contiguous(&got);
    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..RECORDS {
        expected.entry(i % PARTITIONS).or_default().push(value(i));
    }
    for (p, want) in expected {
        let have: Vec<String> = got
            .get(&p)
            .map_or(Vec::new(), |r| r.iter().map(value_str).collect());
        if have != want {
            let first_diff = have.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "partition {p}: {} records in the log, {} sent; first difference at {first_diff:?} \
                 (duplicates or losses)",
                have.len(),
                want.len()
            );
        }
    }
}

#[test]
fn cut_connections_lose_and_duplicate_nothing() {
    let broker = Broker::start();
    let topic = common::topic_name("idem-cuts");
    broker.create_topic(&topic, PARTITIONS);
    let proxy = CutProxy::start(broker.addr(), seed(), 150_000, 40);
    let (bootstrap, t) = (proxy.addr().to_string(), topic.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let a = acked.clone();
    run_client(move || produce_all(bootstrap, t, a));
    let (cuts, lost_answers) = proxy.cuts();
    eprintln!("{cuts} cuts, {lost_answers} of them after the broker answered");
    assert!(
        lost_answers > 0,
        "the proxy dropped answers of requests the broker had"
    );
    assert_eq!(acked.load(Ordering::SeqCst), RECORDS as usize);
    drop(proxy);
    check_log(&broker, &topic);
}

#[test]
fn broker_sigkill_and_restart_mid_run_lose_and_duplicate_nothing() {
    let mut broker = Broker::start();
    let topic = common::topic_name("idem-kill");
    broker.create_topic(&topic, PARTITIONS);
    // A few random cuts as well, so the restart meets retries in flight.
    let proxy = CutProxy::start(broker.addr(), seed(), 30_000, 10);
    let (bootstrap, t) = (proxy.addr().to_string(), topic.clone());
    let acked = Arc::new(AtomicUsize::new(0));
    let a = acked.clone();
    let client = glommio::LocalExecutorBuilder::default()
        .name("idem-kill-client")
        .io_memory(256 << 10)
        .spawn(move || produce_all(bootstrap, t, a))
        .expect("spawn client");
    // SIGKILL once a third of the records are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < RECORDS as usize / 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let at_kill = acked.load(Ordering::SeqCst);
    assert!(
        at_kill > 0 && at_kill < RECORDS as usize,
        "the kill must come mid-run ({at_kill} acknowledged)"
    );
    broker.kill9();
    broker.start_again();
    proxy.set_target(broker.addr());
    eprintln!(
        "broker killed with {at_kill} records acknowledged; restarted at {}",
        broker.addr()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.join());
    });
    match rx.recv_timeout(PRODUCE_LIMIT + Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("producer failed: {e}"),
        Err(_) => panic!("producer did not finish"),
    }
    assert_eq!(acked.load(Ordering::SeqCst), RECORDS as usize);
    drop(proxy);
    check_log(&broker, &topic);
}
