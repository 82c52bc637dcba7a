//! The fuzz corpus on stable: replays every file under `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` through the same checks the cargo-fuzz
//! targets run (fuzz/src/lib.rs, included here with `#[path]`), so CI
//! exercises the corpus and every past finding without nightly flags.
//!
//! Also holds the corpus writer (`write_corpus`, ignored): real produce,
//! fetch, metadata, create-topic ... frames, valid record batches of
//! various shapes and broker responses, built with Corelog's own encoders.
//! Regenerate with `cargo test --test fuzz_corpus -- --ignored write_corpus`.
//!
//! Invariants: every corpus file is valid input for its target (the replay
//! asserts it, so the corpus cannot silently rot into garbage when the
//! protocol changes); regression files only have to pass the checks.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;
/// The consumer-group requests and responses of the corpus.
#[path = "fuzz_corpus/groups.rs"]
mod groups;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use corelog::protocol::batch::BatchBuilder;
use corelog::protocol::codec::{encode_request, encode_response};
use corelog::protocol::frame::length_prefix;
use corelog::protocol::messages::*;
use corelog::protocol::{ErrorCode, WireError};

const TARGETS: [&str; 3] = ["frame_decode", "batch_parse", "response_decode"];
/// Fewest files each target's checked-in corpus must have.
const MIN_CORPUS_FILES: usize = 10;
/// Largest corpus file, in bytes (the corpus stays small).
const MAX_CORPUS_FILE_BYTES: usize = 16 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// (name, contents) of every file in `dir`, sorted; empty if it is absent.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let p = e.path();
            let bytes =
                std::fs::read(&p).unwrap_or_else(|err| panic!("read {}: {err}", p.display()));
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_replays_through_the_fuzz_checks() {
    for target in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            corpus.len() >= MIN_CORPUS_FILES,
            "fuzz/corpus/{target} has {} files, want at least {MIN_CORPUS_FILES}",
            corpus.len()
        );
        for (name, data) in &corpus {
            assert!(
                data.len() <= MAX_CORPUS_FILE_BYTES,
                "{target}/{name} is {} bytes",
                data.len()
            );
            match target {
                "frame_decode" => {
                    let s = fuzz_checks::frame_decode(data);
                    assert!(
                        s.requests >= 1 && s.rejected == 0 && !s.truncated && !s.too_large,
                        "{target}/{name} is not a stream of valid requests: {s:?}"
                    );
                }
                "batch_parse" => {
                    let s = fuzz_checks::batch_parse(data);
                    assert!(
                        s.valid || s.batches > 1,
                        "{target}/{name} is neither a valid batch nor batches: {s:?}"
                    );
                }
                _ => {
                    assert!(
                        fuzz_checks::response_decode(data).is_some(),
                        "{target}/{name} does not decode as a response"
                    );
                }
            }
        }
    }
}

#[test]
fn regressions_replay_through_the_fuzz_checks() {
    for target in TARGETS {
        for (_name, data) in files(&fuzz_dir().join("regressions").join(target)) {
            match target {
                "frame_decode" => {
                    let _ = fuzz_checks::frame_decode(&data);
                }
                "batch_parse" => {
                    let _ = fuzz_checks::batch_parse(&data);
                }
                _ => {
                    let _ = fuzz_checks::response_decode(&data);
                }
            }
        }
    }
}

// ------------------------------------------------------------ corpus writer

type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// A batch of `n` records shaped by `shape` (key, value, headers).
fn batch_of(n: u32, t0: i64, shape: impl Fn(u32) -> (Option<Vec<u8>>, Option<Vec<u8>>)) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let (k, v) = shape(i);
        b.push(t0 + i as i64, k.as_deref(), v.as_deref(), &[]);
    }
    b.finish()
}

fn batch_with_headers(headers: &[Header<'_>]) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(
        1_700_000_000_000,
        Some(b"k"),
        Some(b"with headers"),
        headers,
    );
    b.push(1_700_000_000_001, None, Some(b"none"), &[]);
    b.finish()
}

/// Named valid batches of various shapes.
fn batches() -> Vec<(&'static str, Bytes)> {
    let value = |i: u32| Some(format!("value-{i}").into_bytes());
    vec![
        (
            "one_record",
            batch_of(1, 1_700_000_000_000, |_| {
                (Some(b"key".to_vec()), Some(b"v".to_vec()))
            }),
        ),
        (
            "ten_keyed",
            batch_of(10, 1_700_000_000_000, |i| {
                (Some(format!("k{i}").into_bytes()), value(i))
            }),
        ),
        ("null_keys", batch_of(5, 0, |i| (None, value(i)))),
        (
            "null_values",
            batch_of(4, 42, |i| (Some(vec![i as u8; 3]), None)),
        ),
        (
            "empty_key_and_value",
            batch_of(3, -5, |_| (Some(Vec::new()), Some(Vec::new()))),
        ),
        (
            "large_value",
            batch_of(1, 7, |_| (None, Some(vec![0xab; 3000]))),
        ),
        (
            "many_small",
            batch_of(200, 1, |i| (None, Some(vec![i as u8]))),
        ),
        (
            "headers",
            batch_with_headers(&[
                (b"trace", Some(b"abc123")),
                (b"empty", Some(b"")),
                (b"null", None),
            ]),
        ),
        (
            "binary_payload",
            batch_of(3, i64::MAX - 10, |i| {
                (Some(vec![0, 0xff, i as u8]), Some((0..=255u8).collect()))
            }),
        ),
        ("negative_ts_deltas", {
            let mut b = BatchBuilder::new();
            for ts in [1000, 900, 1100, -50] {
                b.push(ts, None, Some(b"t"), &[]);
            }
            b.finish()
        }),
    ]
}

fn req(correlation_id: u32, body: RequestBody) -> Request {
    Request {
        correlation_id,
        api_version: PROTOCOL_VERSION,
        client_id: Some("corpus".into()),
        body,
    }
}

fn framed(reqs: &[Request]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        let p = encode_request(r);
        out.extend_from_slice(&length_prefix(p.len()));
        out.extend_from_slice(&p);
    }
    out
}

fn produce(acks: Acks, topics: Vec<(&str, Vec<(u32, Bytes)>)>) -> RequestBody {
    RequestBody::Produce(ProduceRequest {
        acks,
        timeout_ms: 30_000,
        topics: topics
            .into_iter()
            .map(|(name, parts)| ProduceTopic {
                name: name.into(),
                partitions: parts
                    .into_iter()
                    .map(|(partition, batch)| ProducePartition { partition, batch })
                    .collect(),
            })
            .collect(),
    })
}

fn fetch(max_bytes: u32, parts: Vec<(&str, u32, u64)>) -> RequestBody {
    RequestBody::Fetch(FetchRequest {
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes,
        topics: parts
            .into_iter()
            .map(|(name, partition, fetch_offset)| FetchTopic {
                name: name.into(),
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset,
                    max_bytes: 1 << 20,
                }],
            })
            .collect(),
    })
}

fn request_corpus() -> Vec<(String, Vec<u8>)> {
    let b = batches();
    let batch = |name: &str| {
        b.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let configs = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| ConfigEntry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect::<Vec<_>>()
    };
    let mut out: Vec<(String, Vec<Request>)> = vec![
        (
            "api_versions".into(),
            vec![req(
                1,
                RequestBody::ApiVersions(ApiVersionsRequest {
                    client_software: Some("corelog-corpus 1".into()),
                }),
            )],
        ),
        (
            "api_versions_bare".into(),
            vec![Request {
                client_id: None,
                ..req(0, RequestBody::ApiVersions(ApiVersionsRequest::default()))
            }],
        ),
        (
            "create_topic".into(),
            vec![req(
                2,
                RequestBody::CreateTopic(CreateTopicRequest {
                    name: "orders".into(),
                    partitions: 4,
                    configs: vec![],
                }),
            )],
        ),
        (
            "create_topic_configs".into(),
            vec![req(
                3,
                RequestBody::CreateTopic(CreateTopicRequest {
                    name: "telemetry.v1".into(),
                    partitions: 1,
                    configs: configs(&[
                        ("flush", "always"),
                        ("retention_ms", "60000"),
                        ("segment_bytes", "1048576"),
                    ]),
                }),
            )],
        ),
        (
            "delete_topic".into(),
            vec![req(
                4,
                RequestBody::DeleteTopic(DeleteTopicRequest {
                    name: "orders".into(),
                }),
            )],
        ),
        (
            "delete_records".into(),
            vec![req(
                5,
                RequestBody::DeleteRecords(DeleteRecordsRequest {
                    topic: "orders".into(),
                    partition: 3,
                    before_offset: 1000,
                }),
            )],
        ),
        (
            "init_producer_id".into(),
            vec![
                req(
                    7,
                    RequestBody::InitProducerId(InitProducerIdRequest { current: None }),
                ),
                req(
                    8,
                    RequestBody::InitProducerId(InitProducerIdRequest {
                        current: Some(ProducerIdentity {
                            producer_id: 12,
                            producer_epoch: 3,
                        }),
                    }),
                ),
            ],
        ),
        (
            "alter_topic_config".into(),
            vec![req(
                6,
                RequestBody::AlterTopicConfig(AlterTopicConfigRequest {
                    name: "orders".into(),
                    configs: configs(&[("retention_bytes", "1073741824")]),
                }),
            )],
        ),
        (
            "metadata_all".into(),
            vec![req(7, RequestBody::Metadata(MetadataRequest::default()))],
        ),
        (
            "metadata_named".into(),
            vec![req(
                8,
                RequestBody::Metadata(MetadataRequest {
                    topics: vec!["orders".into(), "telemetry.v1".into(), "missing".into()],
                }),
            )],
        ),
        (
            "list_offsets".into(),
            vec![req(
                9,
                RequestBody::ListOffsets(ListOffsetsRequest {
                    topics: vec![ListOffsetsTopic {
                        name: "orders".into(),
                        partitions: vec![
                            ListOffsetsPartition {
                                partition: 0,
                                spec: OffsetSpec::Earliest,
                            },
                            ListOffsetsPartition {
                                partition: 1,
                                spec: OffsetSpec::Latest,
                            },
                            ListOffsetsPartition {
                                partition: 2,
                                spec: OffsetSpec::Timestamp(1_700_000_000_000),
                            },
                        ],
                    }],
                }),
            )],
        ),
        (
            "fetch_one".into(),
            vec![req(10, fetch(1 << 20, vec![("orders", 0, 0)]))],
        ),
        (
            "fetch_many".into(),
            vec![req(
                11,
                fetch(
                    u32::MAX,
                    vec![
                        ("orders", 0, 17),
                        ("orders", 3, 9_000_000_000),
                        ("telemetry.v1", 0, 0),
                    ],
                ),
            )],
        ),
        (
            "fetch_zero_max_bytes".into(),
            vec![req(
                12,
                RequestBody::Fetch(FetchRequest {
                    max_wait_ms: u32::MAX,
                    min_bytes: u32::MAX,
                    max_bytes: 0,
                    topics: vec![],
                }),
            )],
        ),
        (
            "produce_empty".into(),
            vec![req(13, produce(Acks::None, vec![]))],
        ),
        (
            "pipelined".into(),
            vec![
                req(20, RequestBody::ApiVersions(ApiVersionsRequest::default())),
                req(
                    21,
                    produce(
                        Acks::Leader,
                        vec![("orders", vec![(0, batch("one_record"))])],
                    ),
                ),
                req(22, fetch(4096, vec![("orders", 0, 0)])),
            ],
        ),
    ];
    for (i, (name, bt)) in b.iter().enumerate() {
        let acks = [Acks::None, Acks::Leader, Acks::All][i % 3];
        out.push((
            format!("produce_{name}"),
            vec![req(
                100 + i as u32,
                produce(acks, vec![("orders", vec![(i as u32 % 4, bt.clone())])]),
            )],
        ));
    }
    out.push((
        "produce_multi_topic".into(),
        vec![req(
            200,
            produce(
                Acks::All,
                vec![
                    (
                        "orders",
                        vec![(0, batch("ten_keyed")), (1, batch("null_keys"))],
                    ),
                    ("telemetry.v1", vec![(0, batch("headers"))]),
                ],
            ),
        )],
    ));
    out.extend(groups::request_corpus(req));
    out.into_iter()
        .map(|(n, reqs)| (n, framed(&reqs)))
        .collect()
}

fn batch_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = batches()
        .into_iter()
        .map(|(name, b)| {
            let mut v = vec![0u8];
            v.extend_from_slice(&b);
            (name.to_string(), v)
        })
        .collect();
    // Stamped as the broker stores them.
    let mut stamped = batches()[1].1.to_vec();
    corelog::protocol::batch::set_base_offset(&mut stamped, 1_234_567);
    corelog::protocol::batch::set_leader_epoch(&mut stamped, 3);
    out.push(("stamped".into(), [&[0u8][..], &stamped].concat()));
    // The CRC fix-up mode over a valid batch.
    out.push((
        "fix_crc_mode".into(),
        [&[fuzz_checks::BATCH_FIX_CRC][..], &batches()[0].1].concat(),
    ));
    // Back-to-back batches, as a fetch response or a segment holds them,
    // with zero padding after them as in a segment file.
    let mut concat = vec![0u8];
    for (i, (_, b)) in batches().into_iter().take(4).enumerate() {
        let mut b = b.to_vec();
        corelog::protocol::batch::set_base_offset(&mut b, 10 * i as u64);
        concat.extend_from_slice(&b);
    }
    concat.extend_from_slice(&[0u8; 64]);
    out.push(("concatenated_padded".into(), concat));
    out
}

fn response_corpus() -> Vec<(String, Vec<u8>)> {
    let err = WireError::new(
        ErrorCode::UnknownTopicOrPartition,
        "unknown topic 'missing'",
    );
    let records: Bytes = batches()
        .iter()
        .take(3)
        .flat_map(|(_, b)| b.to_vec())
        .collect::<Vec<u8>>()
        .into();
    let resps: Vec<(&str, Response)> = vec![
        ("error", Response::error(0, ErrorCode::MessageTooLarge, "request frame of 70000000 bytes exceeds max_frame_bytes (67108864); closing the connection")),
        ("invalid_request", Response::error(9, ErrorCode::InvalidRequest, "request does not verify as a FlatBuffer")),
        ("api_versions", Response::ok(1, ResponseBody::ApiVersions(ApiVersionsResponse {
            apis: [ApiKey::ApiVersions, ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata]
                .into_iter()
                .map(|api| ApiVersionRange { api, min_version: 1, max_version: 1 })
                .collect(),
            broker_software: "corelog 0.1.0".into(),
            node_id: 0,
            shard_count: 2,
        }))),
        ("create_topic", Response::ok(2, ResponseBody::CreateTopic(CreateTopicResponse { name: "orders".into() }))),
        ("delete_topic", Response::ok(3, ResponseBody::DeleteTopic(DeleteTopicResponse { name: "orders".into() }))),
        ("delete_records", Response::ok(4, ResponseBody::DeleteRecords(DeleteRecordsResponse { topic: "orders".into(), partition: 1, log_start_offset: 500 }))),
        ("init_producer_id", Response::ok(5, ResponseBody::InitProducerId(InitProducerIdResponse {
            identity: ProducerIdentity { producer_id: 1 << 33, producer_epoch: 2 },
        }))),
        ("alter_topic_config", Response::ok(5, ResponseBody::AlterTopicConfig(AlterTopicConfigResponse {
            name: "orders".into(),
            configs: vec![ConfigEntry { key: "flush".into(), value: "always".into() }],
        }))),
        ("metadata", Response::ok(6, ResponseBody::Metadata(MetadataResponse {
            brokers: vec![BrokerInfo { node_id: 0, host: "127.0.0.1".into(), port: 9700 }],
            topics: vec![
                TopicInfo {
                    name: "orders".into(),
                    error: None,
                    partitions: (0..3)
                        .map(|p| PartitionInfo { partition: p, leader_node: 0, leader_shard: p as usize % 2, log_start_offset: 0, log_end_offset: 10 * p as u64, high_watermark: 10 * p as u64 })
                        .collect(),
                    configs: vec![ConfigEntry { key: "segment_bytes".into(), value: "1073741824".into() }],
                },
                TopicInfo { name: "missing".into(), error: Some(err.clone()), partitions: vec![], configs: vec![] },
            ],
        }))),
        ("produce", Response::ok(7, ResponseBody::Produce(ProduceResponse { topics: vec![ProduceTopicResult {
            name: "orders".into(),
            partitions: vec![
                ProducePartitionResult { partition: 0, result: Ok(42), log_start_offset: Some(0) },
                ProducePartitionResult { partition: 9, result: Err(err.clone()), log_start_offset: None },
                ProducePartitionResult { partition: 1, result: Err(WireError::new(ErrorCode::CorruptBatch, "CRC32C mismatch")), log_start_offset: None },
            ],
        }] }))),
        ("fetch", Response::ok(8, ResponseBody::Fetch(FetchResponse { topics: vec![FetchTopicResult {
            name: "orders".into(),
            partitions: vec![
                FetchPartitionResult { partition: 0, error: None, high_watermark: Some(14), log_start_offset: Some(0), log_end_offset: Some(14), records: records.clone().into() },
                FetchPartitionResult { partition: 1, error: Some(WireError::new(ErrorCode::OffsetOutOfRange, "offset 99 is outside [0, 5)")), high_watermark: None, log_start_offset: None, log_end_offset: None, records: Bytes::new().into() },
                FetchPartitionResult { partition: 2, error: None, high_watermark: Some(0), log_start_offset: Some(0), log_end_offset: Some(0), records: Bytes::new().into() },
            ],
        }] }))),
        ("list_offsets", Response::ok(9, ResponseBody::ListOffsets(ListOffsetsResponse { topics: vec![ListOffsetsTopicResult {
            name: "orders".into(),
            partitions: vec![
                ListOffsetsPartitionResult { partition: 0, result: Ok((0, -1)) },
                ListOffsetsPartitionResult { partition: 1, result: Ok((7, 1_700_000_000_000)) },
                ListOffsetsPartitionResult { partition: 2, result: Err(err) },
            ],
        }] }))),
    ];
    resps
        .into_iter()
        .chain(groups::response_corpus())
        .map(|(n, r)| (n.to_string(), encode_response(&r)))
        .collect()
}

/// Writes the corpus into fuzz/corpus/<target>/ (deterministic contents).
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the protocol changes"]
fn write_corpus() {
    for (target, files) in [
        ("frame_decode", request_corpus()),
        ("batch_parse", batch_corpus()),
        ("response_decode", response_corpus()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for (name, data) in files {
            let path = dir.join(&name);
            std::fs::write(&path, &data)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
}
