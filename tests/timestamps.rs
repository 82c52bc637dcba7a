//! Fetch by timestamp: seeking to Timestamp(t) lands on the first offset whose
//! record timestamp is >= t, through the client and `consume --from-timestamp`.

mod common;

use common::{record, run_client, value_str, Broker};
use corelog::client::{Consumer, Producer, ProducerConfig, SeekTo};

const T0: i64 = 1_700_000_000_000;
const N: i64 = 200;
const STEP_MS: i64 = 1_000;

fn ts(i: i64) -> i64 {
    T0 + i * STEP_MS
}

#[test]
fn seek_by_timestamp_finds_first_offset_at_or_after() {
    let broker = Broker::start();
    let topic = "by-time";
    broker.create_topic(topic, 1);

    // Records with explicit, increasing timestamps, several per batch (linger
    // lets them group), so lookups must look inside batches.
    let pcfg = ProducerConfig {
        linger_ms: 20,
        ..broker.producer_config()
    };
    run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("connect");
        let mut pending = Vec::new();
        for i in 0..N {
            let rec = record(topic, Some(0), None, &format!("at-{i}")).with_timestamp(ts(i));
            pending.push(producer.send(rec).await.expect("send"));
        }
        for (i, d) in pending.into_iter().enumerate() {
            let md = d.await.expect("delivery");
            assert_eq!(md.offset, i as u64);
        }
        producer.close().await.expect("close");
    });

    // (timestamp asked, expected offset)
    let mut cases: Vec<(i64, u64)> = vec![(0, 0), (T0 - 1, 0), (T0, 0)];
    for i in [1, 7, 50, 99, 150, N - 1] {
        cases.push((ts(i), i as u64)); // exact hit
        cases.push((ts(i) - 1, i as u64)); // just before: the same record
        cases.push((ts(i - 1) + 1, i as u64)); // just after the previous one
    }
    let ccfg = broker.consumer_config();
    run_client(move || async move {
        let mut consumer = Consumer::connect(ccfg).await.expect("connect");
        consumer
            .assign(topic, &[0], SeekTo::Earliest)
            .await
            .expect("assign");
        for (t, want) in cases {
            let got = consumer
                .seek(topic, 0, SeekTo::Timestamp(t))
                .await
                .expect("seek");
            assert_eq!(got, want, "seek to timestamp {t}");
            assert_eq!(consumer.position(topic, 0), Some(want));
            // The first record polled is the one at that offset.
            let mut first = None;
            for _ in 0..50 {
                if let Some(r) = consumer.poll().await.expect("poll").into_iter().next() {
                    first = Some(r);
                    break;
                }
            }
            let r = first.expect("a record after seeking");
            assert_eq!(r.offset, want);
            assert_eq!(r.timestamp_ms, ts(want as i64));
            assert_eq!(value_str(&r), format!("at-{want}"));
        }
        // Past the last timestamp: the end of the log.
        let end = consumer
            .seek(topic, 0, SeekTo::Timestamp(ts(N - 1) + 1))
            .await
            .expect("seek past end");
        assert_eq!(end, N as u64, "no record at or after t: the high watermark");
        let none = consumer.poll().await.expect("poll at end");
        assert!(none.is_empty(), "nothing past the end");
    });

    // The CLI: --from-timestamp.
    let out = broker.cli_ok(
        &[
            "consume",
            topic,
            "--partition",
            "0",
            "--from-timestamp",
            &(ts(42) - 500).to_string(),
            "--count",
            "3",
            "--format",
            "json",
            "--max-wait-ms",
            "1000",
        ],
        "",
    );
    let recs: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(recs.len(), 3, "{}", out.stdout);
    for (j, r) in recs.iter().enumerate() {
        let i = 42 + j as i64;
        assert_eq!(r["offset"], i);
        assert_eq!(r["timestamp"], ts(i));
        assert_eq!(r["value"], format!("at-{i}"));
    }
}
