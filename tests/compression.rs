//! Compressed batches against the real binary: round trips with every codec
//! through the client and the CLI, one consumer reading a mix of compressed
//! and plain batches, and hostile compressed batches (bombs, bad frames,
//! lying counts) refused while the broker keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{consume_all, record, run_client, value_str, Broker};
use corelog::client::{Compression, Connection, Producer, ProducerConfig};
use corelog::protocol::batch::{self, BatchBuilder, HEADER_BYTES};
use corelog::protocol::messages::*;
use corelog::protocol::ErrorCode;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn every_codec_round_trips_through_the_client_and_one_consumer_reads_the_mix() {
    let broker = Broker::start();
    broker.create_topic("mix", 1);
    let pcfg = broker.producer_config();
    let ccfg = broker.consumer_config();
    let mut want = Vec::new();
    for codec in Compression::ALL.into_iter().chain([Compression::None]) {
        let values: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "{{\"codec\":\"{codec}\",\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(i)
                )
            })
            .collect();
        want.extend(values.iter().cloned());
        let cfg = ProducerConfig {
            compression: codec,
            ..pcfg.clone()
        };
        run_client(move || async move {
            let producer = Producer::connect(cfg).await.expect("producer");
            let mut acks = Vec::new();
            for v in &values {
                acks.push(
                    producer
                        .send(record("mix", Some(0), None, v))
                        .await
                        .expect("send"),
                );
            }
            producer.flush().await.expect("flush");
            for a in acks {
                a.await.expect("acked");
            }
        });
    }
    let got = run_client(move || async move { consume_all(ccfg, "mix", LIMIT).await });
    let values: Vec<String> = got[&0].iter().map(value_str).collect();
    assert_eq!(values, want, "every record once, in order, across codecs");
}

#[test]
fn every_codec_round_trips_through_the_cli() {
    let broker = Broker::start();
    for codec in Compression::ALL {
        let topic = format!("cli-{codec}");
        broker.create_topic(&topic, 1);
        let input: String = (0..30).map(|i| format!("line {i} of {codec}\n")).collect();
        broker.cli_ok(&["produce", &topic, "--compression", codec.name()], &input);
        let out = broker.cli_ok(
            &["consume", &topic, "--from-beginning", "--count", "30"],
            "",
        );
        assert_eq!(out.stdout, input, "{codec}");
    }
    let out = broker.cli(&["produce", "cli-none", "--compression", "brotli"], "x\n");
    assert!(!out.status.success(), "an unknown codec is refused");
}

fn compressed(codec: Compression, values: &[&[u8]]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(1_700_000_000_000, None, Some(v), &[]);
    }
    b.finish_compressed(codec).to_vec()
}

/// Header of `head` over the compressed records of `body`, CRC fixed up.
fn splice(head: &[u8], body: &[u8]) -> Bytes {
    let mut b = head[..HEADER_BYTES].to_vec();
    b.extend_from_slice(body);
    batch::reseal(&mut b);
    Bytes::from(b)
}

#[test]
fn hostile_compressed_batches_are_refused_and_the_broker_keeps_serving() {
    let broker = Broker::start();
    broker.create_topic("hostile", 1);
    let client = broker.client_config();
    let pcfg = broker.producer_config();
    let ccfg = broker.consumer_config();
    run_client(move || async move {
        let conn = Connection::connect(&client).await.expect("connect");
        let produce = |b: Bytes| {
            RequestBody::Produce(ProduceRequest {
                acks: Acks::Leader,
                timeout_ms: 10_000,
                topics: vec![ProduceTopic {
                    name: "hostile".into(),
                    partitions: vec![ProducePartition {
                        partition: 0,
                        batch: b,
                    }],
                }],
            })
        };
        let zeros = vec![0u8; 1 << 20];
        let four = compressed(Compression::Snappy, &[b"a", b"b", b"c", b"d"]);
        let three = compressed(Compression::Snappy, &[b"a", b"b", b"c"]);
        let cases: Vec<(&str, Bytes, ErrorCode)> = vec![
            (
                // 100 MiB of zeros in well under max_batch_bytes: past the
                // default 64 MiB max_decompressed_batch_bytes.
                "zstd bomb",
                Bytes::from(compressed(Compression::Zstd, &[&zeros[..]; 100])),
                ErrorCode::MessageTooLarge,
            ),
            (
                "bad lz4 frame",
                splice(&four, b"\x04\x22\x4d\x18\x60\x40\x82garbage"),
                ErrorCode::CorruptBatch,
            ),
            (
                "truncated gzip",
                {
                    let g = compressed(Compression::Gzip, &[b"hello", b"world"]);
                    splice(&g, &g[HEADER_BYTES..g.len() - 10])
                },
                ErrorCode::CorruptBatch,
            ),
            (
                "lying record count",
                splice(&four, &three[HEADER_BYTES..]),
                ErrorCode::CorruptBatch,
            ),
        ];
        for (what, b, code) in cases {
            let r = conn.request(produce(b)).await.expect("answered");
            let ResponseBody::Produce(p) = r else {
                panic!("{what}: {r:?}")
            };
            let err = p.topics[0].partitions[0].result.clone().expect_err(what);
            assert_eq!(err.code, code, "{what}: {err}");
        }
        // The same connection and a fresh client still work.
        let producer = Producer::connect(ProducerConfig {
            compression: Compression::Lz4,
            ..pcfg
        })
        .await
        .expect("producer");
        producer
            .send(record("hostile", Some(0), None, "still serving"))
            .await
            .expect("send")
            .await
            .expect("acked");
        let got = consume_all(ccfg, "hostile", LIMIT).await;
        assert_eq!(
            got[&0].iter().map(value_str).collect::<Vec<_>>(),
            ["still serving"]
        );
    });
}
