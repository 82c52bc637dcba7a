//! Crash safety: `kill -9` while producing loses nothing acknowledged, and a
//! damaged segment tail (a torn last batch, or garbage after the last batch)
//! is repaired at restart without losing any complete batch before it.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    active_segment, assert_contiguous, consume_all, read_file, record, run_client, try_within,
    value_str, Broker,
};
use corelog::client::{Producer, ProducerConfig};
use corelog::protocol::batch::{batches, BatchHeader};
use rand::{Rng, SeedableRng};

#[test]
fn kill_9_while_producing_loses_nothing_acknowledged() {
    let mut broker = Broker::start();
    let topic = "crash";
    let partitions = 2u32;
    broker.create_topic(topic, partitions);

    let acked_count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let pid = broker.pid();

    // The killer: SIGKILL once enough acknowledgements came back.
    let killer = {
        let acked_count = acked_count.clone();
        let killed = killed.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked_count.load(Ordering::SeqCst) < 3_000 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: kill(2) on the broker child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            killed.store(true, Ordering::SeqCst);
        })
    };

    let pcfg = ProducerConfig {
        linger_ms: 1,
        // The broker dies for good here: a retrying (idempotent) producer
        // would wait out its delivery timeout instead of reporting the loss.
        idempotence: false,
        delivery_timeout_ms: 2_000,
        ..broker.producer_config()
    };
    let counter = acked_count.clone();
    let acked: Vec<(u32, u64, String)> = run_client(move || async move {
        let acked = Rc::new(RefCell::new(Vec::new()));
        let failed = Rc::new(RefCell::new(false));
        let producer = match Producer::connect(pcfg).await {
            Ok(p) => p,
            Err(e) => panic!("connect: {e}"),
        };
        let mut window = VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0u64..2_000_000 {
            if *failed.borrow() || Instant::now() > deadline {
                break;
            }
            let value = format!("event-{i}");
            let rec = record(topic, Some((i % partitions as u64) as u32), None, &value);
            let delivery = match try_within(Duration::from_secs(30), producer.send(rec)).await {
                Some(Ok(d)) => d,
                _ => break,
            };
            let acked = acked.clone();
            let failed = failed.clone();
            let counter = counter.clone();
            window.push_back(glommio::spawn_local(async move {
                match try_within(Duration::from_secs(30), delivery).await {
                    Some(Ok(md)) => {
                        acked.borrow_mut().push((md.partition, md.offset, value));
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => *failed.borrow_mut() = true,
                }
            }));
            if window.len() >= 512 {
                if let Some(t) = window.pop_front() {
                    t.await;
                }
            }
        }
        for t in window {
            t.await;
        }
        // The broker is dead: closing may fail; bounded either way.
        let _ = try_within(Duration::from_secs(10), producer.close()).await;
        let v = acked.borrow().clone();
        v
    });
    killer.join().expect("killer thread");
    assert!(killed.load(Ordering::SeqCst), "broker was killed");
    assert!(
        acked.len() >= 3_000,
        "the broker died before 3000 acknowledgements ({} acked)",
        acked.len()
    );

    broker.kill9(); // reap
    broker.start_again();

    let cfg = broker.consumer_config();
    let records =
        run_client(move || async move { consume_all(cfg, topic, Duration::from_secs(120)).await });
    assert_contiguous(&records);
    let total: usize = records.values().map(Vec::len).sum();
    eprintln!(
        "{} records acknowledged before the kill; {total} present after restart",
        acked.len()
    );
    for (p, off, value) in &acked {
        let recs = &records[p];
        let r = recs.get(*off as usize).unwrap_or_else(|| {
            panic!(
                "acknowledged {value} at {p}/{off} is gone (partition has {} records)",
                recs.len()
            )
        });
        assert_eq!(&value_str(r), value, "acknowledged record at {p}/{off}");
    }
}

/// Produces `n` records one at a time to partition 0 (one batch each), then
/// SIGKILLs the broker. Returns the values in offset order.
fn produce_one_by_one_then_kill(broker: &mut Broker, topic: &str, n: usize) -> Vec<String> {
    broker.create_topic(topic, 1);
    let pcfg = ProducerConfig {
        linger_ms: 0,
        idempotence: false,
        ..broker.producer_config()
    };
    let t = topic.to_string();
    let values: Vec<String> = (0..n)
        .map(|i| format!("record-{i}-{}", "x".repeat(i % 50)))
        .collect();
    let vals = values.clone();
    run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("connect");
        for (i, v) in vals.iter().enumerate() {
            let d = producer
                .send(record(&t, Some(0), None, v))
                .await
                .expect("send");
            let md = d.await.expect("delivery");
            assert_eq!(md.offset, i as u64);
        }
        producer.close().await.expect("close");
    });
    broker.kill9();
    values
}

/// Logical batches of a segment file: (start position, header).
fn segment_batches(data: &[u8]) -> Vec<(usize, BatchHeader)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for b in batches(data) {
        let (h, bytes) = b.expect("segment batch parses");
        out.push((pos, h));
        pos += bytes.len();
    }
    out
}

fn read_back(broker: &Broker, topic: &str) -> Vec<String> {
    let cfg = broker.consumer_config();
    let t = topic.to_string();
    let records =
        run_client(move || async move { consume_all(cfg, &t, Duration::from_secs(60)).await });
    assert_contiguous(&records);
    records[&0].iter().map(value_str).collect()
}

fn produce_after_repair(broker: &Broker, topic: &str) -> u64 {
    let pcfg = broker.producer_config();
    let t = topic.to_string();
    run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("connect");
        let d = producer
            .send(record(&t, Some(0), None, "after-repair"))
            .await
            .expect("send");
        let md = d.await.expect("delivery after repair");
        producer.close().await.expect("close");
        md.offset
    })
}

fn assert_mentions_truncation(broker: &Broker) {
    let err = broker.stderr_since_start().to_lowercase();
    assert!(
        err.contains("truncat"),
        "recovery should log that it truncated the tail; stderr:\n{err}"
    );
}

#[test]
fn torn_last_batch_is_truncated_at_restart() {
    let mut broker = Broker::start();
    let topic = "torn";
    let n = 40;
    let values = produce_one_by_one_then_kill(&mut broker, topic, n);

    let seg = active_segment(&broker.partition_dir(topic, 0));
    let data = read_file(&seg);
    let found = segment_batches(&data);
    assert!(
        found.len() >= 2,
        "expected several batches, found {}",
        found.len()
    );
    let (last_pos, last) = *found.last().expect("a batch");
    assert_eq!(last.next_offset(), n as u64, "segment holds all records");
    // Cut inside the last batch (past its header).
    let cut = last_pos + last.total_bytes() / 2;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.set_len(cut as u64).expect("truncate");
    f.sync_all().expect("sync");
    drop(f);

    broker.start_again();
    assert_mentions_truncation(&broker);
    let kept = last.base_offset as usize;
    let got = read_back(&broker, topic);
    assert_eq!(
        got,
        values[..kept],
        "every complete batch before the tear is served"
    );
    assert_eq!(produce_after_repair(&broker, topic), kept as u64);
    let got = read_back(&broker, topic);
    assert_eq!(got.len(), kept + 1);
    assert_eq!(got[kept], "after-repair");
}

#[test]
fn garbage_after_last_batch_is_truncated_at_restart() {
    let mut broker = Broker::start();
    let topic = "garbage";
    let n = 40;
    let values = produce_one_by_one_then_kill(&mut broker, topic, n);

    let seg = active_segment(&broker.partition_dir(topic, 0));
    let data = read_file(&seg);
    let found = segment_batches(&data);
    let (last_pos, last) = *found.last().expect("a batch");
    assert_eq!(last.next_offset(), n as u64);
    let logical_end = last_pos + last.total_bytes();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut garbage = vec![0u8; 3000];
    rng.fill(&mut garbage[..]);
    // Make sure it does not read as zero padding (batch_length != 0).
    garbage[8] |= 1;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.seek(SeekFrom::Start(logical_end as u64)).expect("seek");
    f.write_all(&garbage).expect("write garbage");
    f.sync_all().expect("sync");
    drop(f);

    broker.start_again();
    assert_mentions_truncation(&broker);
    let got = read_back(&broker, topic);
    assert_eq!(got, values, "every batch before the garbage is served");
    assert_eq!(produce_after_repair(&broker, topic), n as u64);
    let got = read_back(&broker, topic);
    assert_eq!(got.len(), n + 1);
    assert_eq!(got[n], "after-repair");
}
