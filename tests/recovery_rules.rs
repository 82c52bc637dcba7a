//! Recovery rules against the real broker (docs/storage.md, "Recovery",
//! "Acknowledged damage"): a partition whose log holds batches of another
//! format (magic) is refused and goes offline while the broker serves the
//! others; a bit flip in acknowledged data below the recovery point is
//! reported, never truncated, the intact prefix is served and the rest and
//! appends are refused with CorruptData.
//!
//! Bounded: every wait is bounded (the harness's). No timing assertions.

mod common;

use common::{read_file, run_client, value_str, Broker};
use corelog::client::{Consumer, Producer, ProducerConfig, SeekTo};
use corelog::protocol::batch::{self, batches};
use corelog::protocol::ErrorCode;

/// Produces `n` records one batch each to `partition`; returns the values.
fn produce(broker: &Broker, topic: &str, partition: u32, n: u64) -> Vec<String> {
    let pcfg = ProducerConfig {
        linger_ms: 0,
        ..broker.producer_config()
    };
    let t = topic.to_string();
    let values: Vec<String> = (0..n).map(|i| format!("p{partition}-{i:04}")).collect();
    let vals = values.clone();
    run_client(move || async move {
        let p = Producer::connect(pcfg).await.expect("connect");
        for v in &vals {
            let d = p
                .send(common::record(&t, Some(partition), None, v))
                .await
                .expect("send");
            d.await.expect("ack");
        }
        p.close().await.expect("close");
    });
    values
}

/// Produces one record; the wire error code if refused.
fn try_produce(broker: &Broker, topic: &str, partition: u32) -> Result<u64, (ErrorCode, String)> {
    let pcfg = broker.producer_config();
    let t = topic.to_string();
    run_client(move || async move {
        let p = Producer::connect(pcfg).await.expect("connect");
        let d = p
            .send(common::record(&t, Some(partition), None, "late"))
            .await
            .expect("send");
        let r = d.await;
        // Close reports the refused send again: its result is `r`'s.
        let _ = p.close().await;
        r.map(|md| md.offset)
            .map_err(|e| (e.wire_code().unwrap_or(ErrorCode::Internal), e.to_string()))
    })
}

/// Reads `partition` from 0 until an error or `limit` records.
fn read(
    broker: &Broker,
    topic: &str,
    partition: u32,
    limit: usize,
) -> (Vec<String>, Option<(ErrorCode, String)>) {
    let cfg = broker.consumer_config();
    let t = topic.to_string();
    run_client(move || async move {
        let mut c = Consumer::connect(cfg).await.expect("consumer");
        c.assign(&t, &[partition], SeekTo::Offset(0))
            .await
            .expect("assign");
        let mut got = Vec::new();
        for _ in 0..1000 {
            if got.len() >= limit {
                return (got, None);
            }
            match c.poll().await {
                Ok(recs) => got.extend(recs.iter().map(value_str)),
                Err(e) => {
                    let code = e.wire_code().unwrap_or(ErrorCode::Internal);
                    return (got, Some((code, e.to_string())));
                }
            }
        }
        panic!("no progress reading {t}/{partition}");
    })
}

/// (position, length) of every batch in the active segment of a partition.
fn batch_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for b in batches(data) {
        let (_, bytes) = b.expect("batch");
        out.push((pos, bytes.len()));
        pos += bytes.len();
    }
    out
}

#[test]
fn unknown_magic_takes_only_that_partition_offline() {
    let mut broker = Broker::start();
    let topic = "magic";
    broker.create_topic(topic, 2);
    produce(&broker, topic, 0, 10);
    let kept = produce(&broker, topic, 1, 10);
    broker.stop();

    let seg = common::active_segment(&broker.partition_dir(topic, 0));
    let mut data = read_file(&seg);
    for (pos, _) in batch_spans(&data) {
        data[pos + batch::offsets::MAGIC] = 3; // magic: outside the CRC
    }
    std::fs::write(&seg, &data).expect("write");

    broker.start_again();
    let (code, msg) = try_produce(&broker, topic, 0).expect_err("partition 0 is offline");
    assert_eq!(code, ErrorCode::StorageError, "{msg}");
    assert!(msg.contains("unknown format"), "{msg}");
    let (got, err) = read(&broker, topic, 1, kept.len());
    assert!(err.is_none(), "partition 1 serves: {err:?}");
    assert_eq!(got, kept);
    assert_eq!(try_produce(&broker, topic, 1), Ok(10));
    assert!(
        broker.stderr_since_start().contains("unknown format"),
        "the refusal is logged"
    );
    broker.stop();
    assert!(read_file(&seg) == data, "the file is left as it was");
}

#[test]
fn bit_flip_below_the_recovery_point_is_kept_and_refused() {
    let mut broker = Broker::start();
    let topic = "ackflip";
    broker.create_topic(topic, 1);
    let values = produce(&broker, topic, 0, 20);
    broker.stop(); // clean close: the recovery point is the log end

    let dir = broker.partition_dir(topic, 0);
    let seg = common::active_segment(&dir);
    let mut data = read_file(&seg);
    let spans = batch_spans(&data);
    assert_eq!(spans.len(), 20);
    let (pos, _) = spans[7];
    data[pos + 61 + 3] ^= 0x10;
    std::fs::write(&seg, &data).expect("write");
    // As after a crash: no index, so recovery scans the whole segment.
    for ext in ["index", "timeindex"] {
        let _ = std::fs::remove_file(seg.with_extension(ext));
    }
    let len_before = data.len();

    broker.start_again();
    let (got, err) = read(&broker, topic, 0, values.len());
    assert_eq!(got, values[..7], "the intact prefix is served");
    let (code, msg) = err.expect("the damage is refused");
    assert_eq!(code, ErrorCode::CorruptData, "{msg}");
    let (code, msg) = try_produce(&broker, topic, 0).expect_err("appends refused");
    assert_eq!(code, ErrorCode::CorruptData, "{msg}");
    let log = broker.stderr_since_start();
    assert!(log.contains("NOT truncated"), "reported:\n{log}");
    broker.stop();
    let after = read_file(&seg);
    assert_eq!(after.len(), len_before, "nothing truncated");
    assert!(after == data, "nothing rewritten");
}
