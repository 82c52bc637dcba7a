//! Unit tests of `protocol::codec`: a round trip for every message, the
//! request-level errors, and garbage or truncated input never panicking.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use rand::{Rng, SeedableRng};

use super::*;
use crate::protocol::batch::BatchBuilder;

pub(super) fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn batch() -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1000, Some(b"k"), Some(b"v"), &[]);
    b.push(1001, None, Some(b"w"), &[(b"h", None)]);
    b.finish()
}

pub(super) fn req(body: RequestBody) -> Request {
    Request {
        correlation_id: 42,
        api_version: PROTOCOL_VERSION,
        client_id: Some("test-client".into()),
        body,
    }
}

/// Every request kind (the consumer-group ones from `group_tests`, last).
fn all_requests() -> Vec<Request> {
    let mut all = vec![
        req(RequestBody::ApiVersions(ApiVersionsRequest {
            client_software: Some("corelog-test".into()),
        })),
        req(RequestBody::ApiVersions(ApiVersionsRequest::default())),
        req(RequestBody::CreateTopic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            configs: vec![ConfigEntry {
                key: "flush".into(),
                value: "always".into(),
            }],
        })),
        req(RequestBody::DeleteTopic(DeleteTopicRequest {
            name: "orders".into(),
        })),
        req(RequestBody::Metadata(MetadataRequest::default())),
        req(RequestBody::Metadata(MetadataRequest {
            topics: vec!["a".into(), "b".into()],
        })),
        req(RequestBody::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 1234,
            topics: vec![ProduceTopic {
                name: "orders".into(),
                partitions: vec![
                    ProducePartition {
                        partition: 0,
                        batch: batch(),
                    },
                    ProducePartition {
                        partition: 7,
                        batch: batch(),
                    },
                ],
            }],
        })),
        req(RequestBody::Produce(ProduceRequest {
            acks: Acks::None,
            timeout_ms: 0,
            topics: vec![],
        })),
        req(RequestBody::Fetch(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "orders".into(),
                partitions: vec![FetchPartition {
                    partition: 2,
                    fetch_offset: 99,
                    max_bytes: 4096,
                }],
            }],
        })),
        req(RequestBody::ListOffsets(ListOffsetsRequest {
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
        })),
        req(RequestBody::DeleteRecords(DeleteRecordsRequest {
            topic: "orders".into(),
            partition: 2,
            before_offset: 1234,
        })),
        req(RequestBody::InitProducerId(InitProducerIdRequest {
            current: None,
        })),
        req(RequestBody::InitProducerId(InitProducerIdRequest {
            current: Some(ProducerIdentity {
                producer_id: 4242,
                producer_epoch: 7,
            }),
        })),
        req(RequestBody::AlterTopicConfig(AlterTopicConfigRequest {
            name: "orders".into(),
            configs: vec![ConfigEntry {
                key: "retention_ms".into(),
                value: "1000".into(),
            }],
        })),
    ];
    all.extend(super::group_tests::group_requests());
    all
}

/// Every response kind (the consumer-group ones from `group_tests`, last).
fn all_responses() -> Vec<Response> {
    let err = WireError::new(ErrorCode::UnknownTopicOrPartition, "no such topic 'x'");
    let mut all = vec![
        Response::error(7, ErrorCode::MessageTooLarge, "frame of 10 bytes exceeds 5"),
        Response::ok(
            1,
            ResponseBody::ApiVersions(ApiVersionsResponse {
                apis: vec![ApiVersionRange {
                    api: ApiKey::Fetch,
                    min_version: 1,
                    max_version: 1,
                }],
                broker_software: "corelog 0.1.0".into(),
                node_id: 0,
                shard_count: 4,
            }),
        ),
        Response::ok(
            2,
            ResponseBody::CreateTopic(CreateTopicResponse { name: "t".into() }),
        ),
        Response::ok(
            3,
            ResponseBody::DeleteTopic(DeleteTopicResponse { name: "t".into() }),
        ),
        Response::ok(
            3,
            ResponseBody::InitProducerId(InitProducerIdResponse {
                identity: ProducerIdentity {
                    producer_id: 1 << 40,
                    producer_epoch: 3,
                },
            }),
        ),
        Response::ok(
            3,
            ResponseBody::DeleteRecords(DeleteRecordsResponse {
                topic: "t".into(),
                partition: 1,
                log_start_offset: 77,
            }),
        ),
        Response::ok(
            3,
            ResponseBody::AlterTopicConfig(AlterTopicConfigResponse {
                name: "t".into(),
                configs: vec![ConfigEntry {
                    key: "retention_bytes".into(),
                    value: "-1".into(),
                }],
            }),
        ),
        Response::ok(
            4,
            ResponseBody::Metadata(MetadataResponse {
                brokers: vec![BrokerInfo {
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 9700,
                }],
                topics: vec![
                    TopicInfo {
                        name: "t".into(),
                        error: None,
                        partitions: vec![PartitionInfo {
                            partition: 0,
                            leader_node: 0,
                            leader_shard: 1,
                            log_start_offset: 0,
                            log_end_offset: 10,
                            high_watermark: 9,
                        }],
                        configs: vec![ConfigEntry {
                            key: "segment_bytes".into(),
                            value: "1048576".into(),
                        }],
                    },
                    TopicInfo {
                        name: "x".into(),
                        error: Some(err.clone()),
                        partitions: vec![],
                        configs: vec![],
                    },
                ],
            }),
        ),
        Response::ok(
            5,
            ResponseBody::Produce(ProduceResponse {
                topics: vec![ProduceTopicResult {
                    name: "t".into(),
                    partitions: vec![
                        ProducePartitionResult {
                            partition: 0,
                            result: Ok(17),
                            log_start_offset: Some(0),
                        },
                        ProducePartitionResult {
                            partition: 1,
                            result: Err(err.clone()),
                            log_start_offset: None,
                        },
                    ],
                }],
            }),
        ),
        Response::ok(
            6,
            ResponseBody::Fetch(FetchResponse {
                topics: vec![FetchTopicResult {
                    name: "t".into(),
                    partitions: vec![
                        FetchPartitionResult {
                            partition: 0,
                            error: None,
                            high_watermark: Some(2),
                            log_start_offset: Some(0),
                            log_end_offset: Some(2),
                            records: batch().into(),
                        },
                        FetchPartitionResult {
                            partition: 1,
                            error: Some(WireError::new(ErrorCode::OffsetOutOfRange, "")),
                            high_watermark: None,
                            log_start_offset: None,
                            log_end_offset: None,
                            records: Bytes::new().into(),
                        },
                    ],
                }],
            }),
        ),
        Response::ok(
            8,
            ResponseBody::ListOffsets(ListOffsetsResponse {
                topics: vec![ListOffsetsTopicResult {
                    name: "t".into(),
                    partitions: vec![
                        ListOffsetsPartitionResult {
                            partition: 0,
                            result: Ok((5, 1000)),
                        },
                        ListOffsetsPartitionResult {
                            partition: 1,
                            result: Ok((9, -1)),
                        },
                        ListOffsetsPartitionResult {
                            partition: 2,
                            result: Err(err),
                        },
                    ],
                }],
            }),
        ),
    ];
    all.extend(super::group_tests::group_responses());
    all
}

#[test]
fn every_request_round_trips() {
    for r in all_requests() {
        let bytes = encode_request(&r);
        let back = decode_request(&bytes, &limits()).expect("decodes");
        assert_eq!(back, r);
    }
}

#[test]
fn every_response_round_trips() {
    for r in all_responses() {
        let bytes = Bytes::from(encode_response(&r));
        let back = decode_response(&bytes, &limits()).expect("decodes");
        assert_eq!(back, r);
    }
}

#[test]
fn every_response_round_trips_as_parts_without_copying_records() {
    // Odd record lengths force alignment padding between appended vectors.
    let odd = |n: usize| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>());
    let part = |partition, records: Bytes| FetchPartitionResult {
        partition,
        error: None,
        high_watermark: Some(9),
        log_start_offset: Some(1),
        log_end_offset: Some(10),
        records: records.into(),
    };
    let records = [odd(5), odd(0), odd(4097), odd(1)];
    let fetch = Response::ok(
        77,
        ResponseBody::Fetch(FetchResponse {
            topics: vec![
                FetchTopicResult {
                    name: "a".into(),
                    partitions: vec![part(0, records[0].clone()), part(1, records[1].clone())],
                },
                FetchTopicResult {
                    name: "b".into(),
                    partitions: vec![part(2, records[2].clone()), part(3, records[3].clone())],
                },
            ],
        }),
    );
    for r in all_responses().into_iter().chain([fetch]) {
        let parts = encode_response_parts(&r);
        let joined = Bytes::from(parts.concat());
        let back = decode_response(&joined, &limits()).expect("decodes");
        assert_eq!(back, r);
        // Every non-empty records buffer is one of the parts, not a copy.
        if let Some(ResponseBody::Fetch(f)) = &r.body {
            for p in f.topics.iter().flat_map(|t| &t.partitions) {
                if !p.records.is_empty() {
                    for piece in p.records.pieces() {
                        assert!(parts.iter().any(|x| x.as_ptr() == piece.as_ptr()));
                    }
                }
            }
        }
    }
}

#[test]
fn batches_are_zero_copy_slices_of_the_frame() {
    let r = &all_requests()[6];
    let frame = encode_request(r);
    let RequestBody::Produce(p) = decode_request(&frame, &limits()).expect("decodes").body else {
        panic!("not a produce")
    };
    let b = &p.topics[0].partitions[0].batch;
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    assert!(range.contains(&(b.as_ptr() as usize)));
    crate::protocol::batch::validate(b).expect("valid batch");
}

pub(super) fn envelope(
    fbb: &mut FlatBufferBuilder<'_>,
    api_version: u16,
    body_type: fb::RequestBody,
    body: Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
) -> Bytes {
    let root = fb::Request::create(
        fbb,
        &fb::RequestArgs {
            correlation_id: 99,
            api_version,
            client_id: None,
            body_type,
            body,
        },
    );
    fbb.finish(root, None);
    Bytes::copy_from_slice(fbb.finished_data())
}

pub(super) fn expect_err(frame: &Bytes, code: ErrorCode, needle: &str) {
    let e = decode_request(frame, &limits()).expect_err("must fail");
    assert_eq!(e.error.code, code, "{e}");
    assert_eq!(e.correlation_id, 99, "{e}");
    assert!(e.error.message.contains(needle), "{e} lacks {needle}");
}

#[test]
fn missing_body_and_unknown_type() {
    let mut fbb = FlatBufferBuilder::new();
    let f = envelope(&mut fbb, 1, fb::RequestBody::NONE, None);
    expect_err(&f, ErrorCode::InvalidRequest, "missing body");

    let mut fbb = FlatBufferBuilder::new();
    let f = envelope(&mut fbb, 1, fb::RequestBody::FetchRequest, None);
    // The verifier itself rejects a union type without a value.
    expect_err(&f, ErrorCode::InvalidRequest, "body");

    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("t");
    let o =
        fb::DeleteTopicRequest::create(&mut fbb, &fb::DeleteTopicRequestArgs { name: Some(name) });
    let f = envelope(&mut fbb, 1, fb::RequestBody(42), Some(o.as_union_value()));
    expect_err(&f, ErrorCode::InvalidRequest, "unknown request type");
}

#[test]
fn unsupported_version() {
    let mut fbb = FlatBufferBuilder::new();
    let o = fb::MetadataRequest::create(&mut fbb, &fb::MetadataRequestArgs { topics: None });
    let f = envelope(
        &mut fbb,
        2,
        fb::RequestBody::MetadataRequest,
        Some(o.as_union_value()),
    );
    expect_err(&f, ErrorCode::UnsupportedVersion, "api_version 2");
}

#[test]
fn negative_numbers_are_errors() {
    // Fetch with a negative partition, then with a negative offset.
    for (partition, offset, needle) in [
        (-3, 0, "partition -3 is negative"),
        (0, -5, "fetch_offset -5 is negative"),
    ] {
        let mut fbb = FlatBufferBuilder::new();
        let p = fb::FetchPartition::create(
            &mut fbb,
            &fb::FetchPartitionArgs {
                partition,
                fetch_offset: offset,
                max_bytes: 10,
            },
        );
        let parts = fbb.create_vector(&[p]);
        let name = fbb.create_string("t");
        let t = fb::FetchTopic::create(
            &mut fbb,
            &fb::FetchTopicArgs {
                name: Some(name),
                partitions: Some(parts),
            },
        );
        let topics = fbb.create_vector(&[t]);
        let o = fb::FetchRequest::create(
            &mut fbb,
            &fb::FetchRequestArgs {
                topics: Some(topics),
                ..Default::default()
            },
        );
        let f = envelope(
            &mut fbb,
            1,
            fb::RequestBody::FetchRequest,
            Some(o.as_union_value()),
        );
        expect_err(&f, ErrorCode::InvalidRequest, needle);
    }

    // CreateTopic with negative partitions.
    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("t");
    let o = fb::CreateTopicRequest::create(
        &mut fbb,
        &fb::CreateTopicRequestArgs {
            name: Some(name),
            partitions: -1,
            configs: None,
        },
    );
    let f = envelope(
        &mut fbb,
        1,
        fb::RequestBody::CreateTopicRequest,
        Some(o.as_union_value()),
    );
    expect_err(&f, ErrorCode::InvalidRequest, "partitions -1 is negative");

    // ListOffsets with a negative timestamp that is not a sentinel.
    let mut fbb = FlatBufferBuilder::new();
    let p = fb::ListOffsetsPartition::create(
        &mut fbb,
        &fb::ListOffsetsPartitionArgs {
            partition: 0,
            timestamp: -7,
        },
    );
    let parts = fbb.create_vector(&[p]);
    let name = fbb.create_string("t");
    let t = fb::ListOffsetsTopic::create(
        &mut fbb,
        &fb::ListOffsetsTopicArgs {
            name: Some(name),
            partitions: Some(parts),
        },
    );
    let topics = fbb.create_vector(&[t]);
    let o = fb::ListOffsetsRequest::create(
        &mut fbb,
        &fb::ListOffsetsRequestArgs {
            topics: Some(topics),
        },
    );
    let f = envelope(
        &mut fbb,
        1,
        fb::RequestBody::ListOffsetsRequest,
        Some(o.as_union_value()),
    );
    expect_err(&f, ErrorCode::InvalidRequest, "timestamp -7");
}

#[test]
fn verifier_limits_apply() {
    let frame = encode_request(&all_requests()[6]);
    let tight = DecodeLimits {
        max_tables: 2,
        max_depth: 64,
        max_apparent_size_bytes: 1 << 20,
    };
    let e = decode_request(&frame, &tight).expect_err("too many tables");
    assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    assert_eq!(e.correlation_id, 42, "envelope readable: {e}");
}

#[test]
fn garbage_and_truncations_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut frames: Vec<Vec<u8>> = all_requests()
        .iter()
        .map(|r| encode_request(r).to_vec())
        .collect();
    frames.extend(all_responses().iter().map(encode_response));
    for f in &frames {
        for cut in 0..f.len() {
            let b = Bytes::copy_from_slice(&f[..cut]);
            let _ = decode_request(&b, &limits());
            let _ = decode_response(&b, &limits());
        }
        // Random byte flips of a valid frame.
        for _ in 0..200 {
            let mut g = f.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..g.len());
                g[i] = rng.gen();
            }
            let b = Bytes::from(g);
            let _ = decode_request(&b, &limits());
            let _ = decode_response(&b, &limits());
        }
    }
    for _ in 0..2000 {
        let len = rng.gen_range(0..256);
        let g: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let b = Bytes::from(g);
        assert!(decode_request(&b, &limits()).is_err() || len >= 8);
        let _ = decode_response(&b, &limits());
    }
}
