//! Frames for tests/flood.rs: valid requests (the templates the flood
//! mutates), hand-built FlatBuffers the typed API cannot express (negative
//! numbers, wrong union types) and the mutator.

use bytes::Bytes;
use corelog::protocol::batch::BatchBuilder;
use corelog::protocol::codec::encode_request;
use corelog::protocol::generated::fb;
use corelog::protocol::messages::*;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use rand::rngs::StdRng;
use rand::Rng;

use super::TARGET;

pub fn req(cid: u32, body: RequestBody) -> Vec<u8> {
    encode_request(&Request {
        correlation_id: cid,
        api_version: PROTOCOL_VERSION,
        client_id: Some("flood".into()),
        body,
    })
    .to_vec()
}

pub fn batch(value: &[u8], records: u32) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.push(1_700_000_000_000 + i as i64, Some(b"k"), Some(value), &[]);
    }
    b.finish()
}

pub fn produce_body(acks: Acks, topics: Vec<(String, Vec<(u32, Bytes)>)>) -> RequestBody {
    RequestBody::Produce(ProduceRequest {
        acks,
        timeout_ms: 20_000,
        topics: topics
            .into_iter()
            .map(|(name, parts)| ProduceTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(partition, batch)| ProducePartition { partition, batch })
                    .collect(),
            })
            .collect(),
    })
}

pub fn fetch_body(
    topic: &str,
    partition: u32,
    offset: u64,
    max_bytes: u32,
    wait_ms: u32,
) -> RequestBody {
    RequestBody::Fetch(FetchRequest {
        max_wait_ms: wait_ms,
        min_bytes: if wait_ms > 0 { u32::MAX } else { 0 },
        max_bytes,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition,
                fetch_offset: offset,
                max_bytes,
            }],
        }],
    })
}

/// Valid requests whose bytes the flood mutates and truncates.
pub fn templates() -> Vec<Vec<u8>> {
    let cfg = |k: &str, v: &str| ConfigEntry {
        key: k.into(),
        value: v.into(),
    };
    vec![
        req(
            7,
            RequestBody::ApiVersions(ApiVersionsRequest {
                client_software: Some("x".into()),
            }),
        ),
        req(
            7,
            RequestBody::Metadata(MetadataRequest {
                topics: vec![TARGET.into(), "nope".into()],
            }),
        ),
        req(
            7,
            RequestBody::CreateTopic(CreateTopicRequest {
                name: "mut-created".into(),
                partitions: 1,
                configs: vec![cfg("flush", "always")],
            }),
        ),
        req(
            7,
            RequestBody::DeleteTopic(DeleteTopicRequest {
                name: "no-such-topic".into(),
            }),
        ),
        req(
            7,
            RequestBody::DeleteRecords(DeleteRecordsRequest {
                topic: TARGET.into(),
                partition: 0,
                before_offset: 0,
            }),
        ),
        req(
            7,
            RequestBody::AlterTopicConfig(AlterTopicConfigRequest {
                name: TARGET.into(),
                configs: vec![cfg("retention_ms", "600000")],
            }),
        ),
        req(
            7,
            produce_body(
                Acks::Leader,
                vec![(
                    TARGET.into(),
                    vec![(0, batch(b"template", 3)), (1, batch(b"t2", 1))],
                )],
            ),
        ),
        req(7, fetch_body(TARGET, 1, 0, 1 << 16, 0)),
        req(
            7,
            RequestBody::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: TARGET.into(),
                    partitions: vec![
                        ListOffsetsPartition {
                            partition: 0,
                            spec: OffsetSpec::Earliest,
                        },
                        ListOffsetsPartition {
                            partition: 1,
                            spec: OffsetSpec::Timestamp(5),
                        },
                    ],
                }],
            }),
        ),
    ]
}

/// A request envelope around a body built by hand (any union type label).
pub fn raw_envelope(
    cid: u32,
    fbb: &mut FlatBufferBuilder<'_>,
    body_type: fb::RequestBody,
    body: WIPOffset<UnionWIPOffset>,
) -> Vec<u8> {
    let root = fb::Request::create(
        fbb,
        &fb::RequestArgs {
            correlation_id: cid,
            api_version: PROTOCOL_VERSION,
            client_id: None,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// A Fetch whose numbers the typed API cannot express (negative offsets
/// and partitions).
pub fn raw_fetch(cid: u32, partition: i32, fetch_offset: i64, max_bytes: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let p = fb::FetchPartition::create(
        &mut fbb,
        &fb::FetchPartitionArgs {
            partition,
            fetch_offset,
            max_bytes,
        },
    );
    let parts = fbb.create_vector(&[p]);
    let name = fbb.create_string(TARGET);
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
            max_bytes,
            ..Default::default()
        },
    );
    raw_envelope(
        cid,
        &mut fbb,
        fb::RequestBody::FetchRequest,
        o.as_union_value(),
    )
}

/// A DeleteRecords table labelled as another request type (or an unknown one).
pub fn wrong_union(cid: u32, label: u8) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    // Not a real topic: labelled DeleteTopic, this table deletes the topic
    // it names (field 0 is a name in both).
    let topic = fbb.create_string("wrong-union-topic");
    let o = fb::DeleteRecordsRequest::create(
        &mut fbb,
        &fb::DeleteRecordsRequestArgs {
            topic: Some(topic),
            partition: 0,
            before_offset: i64::MAX,
        },
    );
    raw_envelope(cid, &mut fbb, fb::RequestBody(label), o.as_union_value())
}

pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Mutates a template: byte flips, a truncation or a few random bytes appended.
pub fn mutate(rng: &mut StdRng, t: &[u8]) -> Vec<u8> {
    let mut v = t.to_vec();
    match rng.gen_range(0..4) {
        0 => v.truncate(rng.gen_range(0..v.len())),
        1 => v.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
        _ => {
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
        }
    }
    v
}
