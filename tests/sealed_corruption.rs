//! A bit flip inside a sealed segment of a stopped broker: recovery reports
//! it, nothing is truncated, fetches never serve it.
//!
//! Proves: at restart the broker logs one line per partition saying what
//! recovery did, and the background scan of sealed segments logs the corrupt
//! batch with its topic, partition, offset and file; the segment file is left
//! exactly as it was; fetches below the corrupt batch serve every record,
//! the fetch that reaches it gets CorruptData (never the bad bytes), and the
//! later segments serve everything.
//!
//! Bounded: every wait is bounded (stderr polling by count and time, the
//! harness for the rest). No timing assertions.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{read_file, run_client, value_str, Broker, BrokerOptions};
use corelog::client::{Consumer, Producer, ProducerConfig, SeekTo};
use corelog::protocol::batch::batches;
use corelog::protocol::ErrorCode;

/// Records produced (about 5 segments of 64 KiB).
const RECORDS: u64 = 600;

fn value(i: u64) -> String {
    format!("rec-{i:05}-{}", "v".repeat(480 + (i % 13) as usize))
}

/// Removes ANSI colour sequences (the broker's log may be coloured).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for c in it.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Waits (bounded) until the current broker's stderr contains `needle`.
fn wait_for_log(broker: &Broker, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    loop {
        let log = strip_ansi(&broker.stderr_since_start());
        if log.contains(needle) {
            return log;
        }
        rounds += 1;
        assert!(
            Instant::now() < deadline && rounds < 3000,
            "broker never logged {needle:?}; stderr:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Segment files of a partition, in offset order.
fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// A failed read: the consumer's position, the wire code, the message.
type ReadError = (u64, ErrorCode, String);

/// Reads partition 0 of `topic` from `from` until `to` or an error; returns
/// offset → value and the error (if any) with the position it happened at.
fn read_from(
    broker: &Broker,
    topic: &str,
    from: u64,
    to: u64,
) -> (BTreeMap<u64, String>, Option<ReadError>) {
    let cfg = broker.consumer_config();
    let t = topic.to_string();
    run_client(move || async move {
        let mut c = Consumer::connect(cfg).await.expect("consumer");
        c.assign(&t, &[0], SeekTo::Offset(from))
            .await
            .expect("assign");
        let mut got = BTreeMap::new();
        for _ in 0..10_000 {
            let pos = c.position(&t, 0).unwrap_or(0);
            if pos >= to {
                return (got, None);
            }
            match c.poll().await {
                Ok(recs) => {
                    for r in recs {
                        if r.offset < to {
                            got.insert(r.offset, value_str(&r));
                        }
                    }
                }
                Err(e) => {
                    let code = e.wire_code().unwrap_or(ErrorCode::Internal);
                    return (got, Some((pos, code, e.to_string())));
                }
            }
        }
        panic!("reading {from}..{to} made no progress");
    })
}

#[test]
fn bit_flip_in_sealed_segment_is_reported_and_never_served() {
    // A clean recovery logs its per-partition summary at debug (the shard
    // logs one line for all its partitions): ask for it.
    let mut broker = Broker::start_with(BrokerOptions {
        log_filter: Some("info,corelog::storage::scan=debug".into()),
        ..BrokerOptions::default()
    });
    let topic = "sealedflip";
    broker.cli_ok(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
            "--config",
            "index_interval_bytes=1024",
        ],
        "",
    );
    let pcfg = ProducerConfig {
        linger_ms: 1,
        batch_bytes: 4096,
        ..broker.producer_config()
    };
    let t = topic.to_string();
    run_client(move || async move {
        let p = Producer::connect(pcfg).await.expect("connect");
        let mut ds = Vec::new();
        for i in 0..RECORDS {
            ds.push(
                p.send(common::record(&t, Some(0), None, &value(i)))
                    .await
                    .expect("send"),
            );
        }
        for (i, d) in ds.into_iter().enumerate() {
            assert_eq!(d.await.expect("ack").offset, i as u64);
        }
        p.close().await.expect("close");
    });
    broker.stop();

    // Flip one bit in the records of a batch in the middle of the second
    // segment (sealed: a later segment exists).
    let dir = broker.partition_dir(topic, 0);
    let segs = segments(&dir);
    assert!(segs.len() >= 4, "want several segments, got {segs:?}");
    let victim = segs[1].clone();
    let mut data = read_file(&victim);
    let mut found = Vec::new();
    let mut pos = 0usize;
    for b in batches(&data) {
        let (h, bytes) = b.expect("batch");
        found.push((pos, h));
        pos += bytes.len();
    }
    assert!(
        found.len() >= 3,
        "want several batches in {}",
        victim.display()
    );
    let (bad_pos, bad) = found[found.len() / 2];
    let bad_offset = bad.base_offset;
    let bad_end = bad.next_offset();
    data[bad_pos + 61 + 20] ^= 0x10;
    std::fs::write(&victim, &data).expect("write flipped segment");
    let third_base = {
        let d = read_file(&segs[2]);
        let first = batches(&d).next().expect("a batch").expect("parses");
        first.0.base_offset
    };
    eprintln!(
        "flipped a bit in the batch at {bad_offset}..{bad_end} (byte {bad_pos}) of {}",
        victim.display()
    );

    broker.start_again();

    // The per-partition recovery summary, then the scan's report.
    let log = wait_for_log(&broker, "recovered partition");
    let summary = log
        .lines()
        .find(|l| l.contains("recovered partition") && l.contains(&format!("topic={topic}")))
        .unwrap_or_else(|| panic!("no recovery summary for {topic}:\n{log}"));
    eprintln!("summary: {summary}");
    for field in [
        "segments=",
        "segments_scanned=",
        "bytes_truncated=0",
        "indexes_rebuilt=",
    ] {
        assert!(summary.contains(field), "summary lacks {field}: {summary}");
    }
    let log = wait_for_log(&broker, "sealed segments CRC-checked");
    let report = log
        .lines()
        .find(|l| l.contains("corrupt batch in a sealed segment"))
        .unwrap_or_else(|| panic!("the corrupt batch was not reported:\n{log}"));
    eprintln!("report: {report}");
    for field in [
        format!("topic={topic}"),
        "partition=0".to_string(),
        format!("offset={bad_offset}"),
        format!("file={}", victim.display()),
    ] {
        assert!(report.contains(&field), "report lacks {field}: {report}");
    }
    assert!(report.contains("ERROR"), "reported as an error: {report}");
    let done = log
        .lines()
        .find(|l| l.contains("sealed segments CRC-checked"))
        .expect("scan summary");
    eprintln!("scan: {done}");
    assert!(
        done.contains("corrupt=1"),
        "exactly one corrupt batch: {done}"
    );
    assert_eq!(
        read_file(&victim),
        data,
        "the sealed segment is kept exactly as it was"
    );

    // Everything before the corrupt batch is served; reaching it is an error.
    let (before, err) = read_from(&broker, topic, 0, RECORDS);
    let (at, code, msg) = err.expect("a fetch that reaches the corrupt batch fails");
    eprintln!("fetch error at {at}: {msg}");
    assert_eq!(code, ErrorCode::CorruptData, "{msg}");
    assert_eq!(
        at, bad_offset,
        "the error comes exactly at the corrupt batch"
    );
    assert_eq!(before.len() as u64, bad_offset);
    for (o, v) in &before {
        assert_eq!(v, &value(*o), "record {o}");
    }
    // A fetch starting inside it fails the same way.
    let (none, err) = read_from(&broker, topic, bad_end - 1, RECORDS);
    assert!(none.is_empty());
    assert_eq!(err.map(|e| e.1), Some(ErrorCode::CorruptData));

    // The later segments serve everything.
    let (after, err) = read_from(&broker, topic, third_base, RECORDS);
    assert!(err.is_none(), "later segments: {err:?}");
    assert_eq!(after.len() as u64, RECORDS - third_base);
    for (o, v) in &after {
        assert_eq!(v, &value(*o), "record {o}");
    }
    assert!(broker.is_running());
}
