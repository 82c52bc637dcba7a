//! Unit tests of the consumer-group messages in `protocol::codec`: the
//! requests and responses `tests.rs` adds to its every-message lists (round
//! trips, parts, garbage and truncations), plus what is particular to them:
//! member metadata and assignments as zero-copy slices of the frame, absent
//! fields decoding to their defaults, and hostile numbers refused.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::tests::{envelope, expect_err, limits, req};
use super::*;

fn bytes(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// One of every group request, with several members, bytes metadata, and
/// both `None` and `Some` (also `Some("")`) optional fields.
pub(super) fn group_requests() -> Vec<Request> {
    vec![
        req(RequestBody::FindCoordinator(FindCoordinatorRequest {
            key: "payments".into(),
            key_type: FindCoordinatorRequest::KEY_TYPE_GROUP,
        })),
        req(RequestBody::JoinGroup(JoinGroupRequest {
            group_id: "payments".into(),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: -1,
            member_id: String::new(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![
                JoinGroupProtocol {
                    name: "range".into(),
                    metadata: bytes(b"\x00\x03\x00\x00\x00\x01\x00\x06orders"),
                },
                JoinGroupProtocol {
                    name: "cooperative-sticky".into(),
                    metadata: Bytes::new(),
                },
            ],
            reason: Some("rebalance failed due to MemberIdRequired".into()),
        })),
        req(RequestBody::JoinGroup(JoinGroupRequest {
            group_id: "payments".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 300_000,
            member_id: "consumer-1-6f1c".into(),
            group_instance_id: Some("host-a".into()),
            protocol_type: "consumer".into(),
            protocols: vec![],
            reason: Some(String::new()),
        })),
        req(RequestBody::SyncGroup(SyncGroupRequest {
            group_id: "payments".into(),
            generation_id: 3,
            member_id: "consumer-1-6f1c".into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: vec![
                SyncGroupAssignment {
                    member_id: "consumer-1-6f1c".into(),
                    assignment: bytes(&[0, 3, 0, 0, 0, 1, 0, 6, b'o', b'r', 0, 0, 0, 0]),
                },
                SyncGroupAssignment {
                    member_id: "consumer-2-91aa".into(),
                    assignment: bytes(&[0, 3, 0, 0, 0, 0]),
                },
                SyncGroupAssignment {
                    member_id: "consumer-3-0000".into(),
                    assignment: Bytes::new(),
                },
            ],
        })),
        req(RequestBody::SyncGroup(SyncGroupRequest {
            group_id: "payments".into(),
            generation_id: 3,
            member_id: "consumer-2-91aa".into(),
            group_instance_id: Some("host-b".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        })),
        req(RequestBody::Heartbeat(HeartbeatRequest {
            group_id: "payments".into(),
            generation_id: 3,
            member_id: "consumer-2-91aa".into(),
            group_instance_id: Some("host-b".into()),
        })),
        req(RequestBody::LeaveGroup(LeaveGroupRequest {
            group_id: "payments".into(),
            members: vec![
                LeaveGroupMember {
                    member_id: "consumer-1-6f1c".into(),
                    group_instance_id: None,
                    reason: Some("the consumer is being closed".into()),
                },
                LeaveGroupMember {
                    member_id: String::new(),
                    group_instance_id: Some("host-b".into()),
                    reason: None,
                },
            ],
        })),
        req(RequestBody::OffsetCommit(OffsetCommitRequest {
            group_id: "payments".into(),
            generation_id: 3,
            member_id: "consumer-1-6f1c".into(),
            group_instance_id: Some("host-a".into()),
            topics: vec![
                OffsetCommitTopic {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetCommitPartition {
                            partition: 0,
                            offset: 1_234,
                            leader_epoch: Some(2),
                            metadata: Some("host-a".into()),
                        },
                        OffsetCommitPartition {
                            partition: 5,
                            offset: 0,
                            leader_epoch: None,
                            metadata: None,
                        },
                    ],
                },
                OffsetCommitTopic {
                    name: "refunds".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 1,
                        offset: 1 << 40,
                        leader_epoch: Some(0),
                        metadata: Some(String::new()),
                    }],
                },
            ],
        })),
        // An admin/standalone commit.
        req(RequestBody::OffsetCommit(OffsetCommitRequest {
            group_id: "payments".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![],
        })),
        req(RequestBody::OffsetFetch(OffsetFetchRequest {
            group_id: "payments".into(),
            topics: None,
        })),
        req(RequestBody::OffsetFetch(OffsetFetchRequest {
            group_id: "payments".into(),
            topics: Some(vec![]),
        })),
        req(RequestBody::OffsetFetch(OffsetFetchRequest {
            group_id: "payments".into(),
            topics: Some(vec![
                OffsetFetchTopic {
                    name: "orders".into(),
                    partitions: vec![0, 1, 5],
                },
                OffsetFetchTopic {
                    name: "refunds".into(),
                    partitions: vec![],
                },
            ]),
        })),
        req(RequestBody::ListGroups(ListGroupsRequest::default())),
        req(RequestBody::ListGroups(ListGroupsRequest {
            states_filter: vec!["Stable".into(), "Empty".into()],
        })),
        req(RequestBody::DescribeGroups(DescribeGroupsRequest {
            groups: vec!["payments".into(), "audit".into()],
        })),
        req(RequestBody::DeleteGroups(DeleteGroupsRequest {
            groups: vec!["old-group".into()],
        })),
    ]
}

/// One of every group response, errors set and unset.
pub(super) fn group_responses() -> Vec<Response> {
    let not_coordinator = WireError::new(ErrorCode::NotCoordinator, "shard 1 coordinates it");
    let unknown_member = WireError::new(ErrorCode::UnknownMemberId, "");
    vec![
        Response::ok(
            20,
            ResponseBody::FindCoordinator(FindCoordinatorResponse {
                error: None,
                node_id: 0,
                host: "127.0.0.1".into(),
                port: 9700,
            }),
        ),
        Response::ok(
            21,
            ResponseBody::FindCoordinator(FindCoordinatorResponse {
                error: Some(WireError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    "loading",
                )),
                node_id: -1,
                host: String::new(),
                port: 0,
            }),
        ),
        Response::ok(
            22,
            ResponseBody::JoinGroup(JoinGroupResponse {
                error: None,
                generation_id: 4,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader: "consumer-1-6f1c".into(),
                member_id: "consumer-1-6f1c".into(),
                members: vec![
                    JoinGroupMember {
                        member_id: "consumer-1-6f1c".into(),
                        group_instance_id: Some("host-a".into()),
                        metadata: bytes(b"\x00\x03\x00\x00\x00\x01\x00\x06orders"),
                    },
                    JoinGroupMember {
                        member_id: "consumer-2-91aa".into(),
                        group_instance_id: None,
                        metadata: Bytes::new(),
                    },
                ],
            }),
        ),
        Response::ok(
            23,
            ResponseBody::JoinGroup(JoinGroupResponse {
                error: Some(WireError::new(
                    ErrorCode::MemberIdRequired,
                    "rejoin with the member id",
                )),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id: "consumer-3-77aa".into(),
                members: vec![],
            }),
        ),
        Response::ok(
            24,
            ResponseBody::SyncGroup(SyncGroupResponse {
                error: None,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: bytes(&[0, 3, 0, 0, 0, 1, 0, 6, b'o', b'r', 0, 0, 0, 0]),
            }),
        ),
        Response::ok(
            25,
            ResponseBody::SyncGroup(SyncGroupResponse {
                error: Some(WireError::new(ErrorCode::RebalanceInProgress, "")),
                ..Default::default()
            }),
        ),
        Response::ok(26, ResponseBody::Heartbeat(HeartbeatResponse::default())),
        Response::ok(
            27,
            ResponseBody::Heartbeat(HeartbeatResponse {
                error: Some(WireError::new(
                    ErrorCode::IllegalGeneration,
                    "generation 2 != 3",
                )),
            }),
        ),
        Response::ok(
            28,
            ResponseBody::LeaveGroup(LeaveGroupResponse {
                error: None,
                members: vec![
                    LeaveGroupMemberResult {
                        member_id: "consumer-1-6f1c".into(),
                        group_instance_id: None,
                        error: None,
                    },
                    LeaveGroupMemberResult {
                        member_id: String::new(),
                        group_instance_id: Some("host-b".into()),
                        error: Some(unknown_member.clone()),
                    },
                ],
            }),
        ),
        Response::ok(
            29,
            ResponseBody::OffsetCommit(OffsetCommitResponse {
                topics: vec![
                    OffsetCommitTopicResult {
                        name: "orders".into(),
                        partitions: vec![
                            OffsetCommitPartitionResult {
                                partition: 0,
                                error: None,
                            },
                            OffsetCommitPartitionResult {
                                partition: 5,
                                error: Some(WireError::new(
                                    ErrorCode::OffsetMetadataTooLarge,
                                    "metadata of 5000 bytes",
                                )),
                            },
                        ],
                    },
                    OffsetCommitTopicResult {
                        name: "refunds".into(),
                        partitions: vec![OffsetCommitPartitionResult {
                            partition: 1,
                            error: Some(WireError::new(
                                ErrorCode::UnknownTopicOrPartition,
                                "no such topic 'refunds'",
                            )),
                        }],
                    },
                ],
            }),
        ),
        Response::ok(
            30,
            ResponseBody::OffsetFetch(OffsetFetchResponse {
                error: None,
                topics: vec![OffsetFetchTopicResult {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetFetchPartitionResult {
                            partition: 0,
                            offset: Some(1_234),
                            leader_epoch: Some(2),
                            metadata: Some("host-a".into()),
                            error: None,
                        },
                        OffsetFetchPartitionResult {
                            partition: 1,
                            offset: None,
                            leader_epoch: None,
                            metadata: None,
                            error: None,
                        },
                        OffsetFetchPartitionResult {
                            partition: 9,
                            offset: None,
                            leader_epoch: None,
                            metadata: None,
                            error: Some(WireError::new(ErrorCode::UnknownTopicOrPartition, "")),
                        },
                    ],
                }],
            }),
        ),
        Response::ok(
            31,
            ResponseBody::OffsetFetch(OffsetFetchResponse {
                error: Some(WireError::new(ErrorCode::CoordinatorLoadInProgress, "")),
                topics: vec![],
            }),
        ),
        Response::ok(
            32,
            ResponseBody::ListGroups(ListGroupsResponse {
                error: None,
                groups: vec![
                    ListedGroup {
                        group_id: "payments".into(),
                        protocol_type: "consumer".into(),
                        group_state: "Stable".into(),
                    },
                    ListedGroup {
                        group_id: "offsets-only".into(),
                        protocol_type: String::new(),
                        group_state: "Empty".into(),
                    },
                ],
            }),
        ),
        Response::ok(
            33,
            ResponseBody::DescribeGroups(DescribeGroupsResponse {
                groups: vec![
                    DescribedGroup {
                        error: None,
                        group_id: "payments".into(),
                        group_state: "Stable".into(),
                        protocol_type: "consumer".into(),
                        protocol_data: "range".into(),
                        members: vec![
                            DescribedGroupMember {
                                member_id: "consumer-1-6f1c".into(),
                                group_instance_id: Some("host-a".into()),
                                client_id: "consumer-1".into(),
                                client_host: "/10.0.0.1".into(),
                                metadata: bytes(b"\x00\x03meta"),
                                assignment: bytes(b"\x00\x03assign"),
                            },
                            DescribedGroupMember {
                                member_id: "consumer-2-91aa".into(),
                                group_instance_id: None,
                                client_id: String::new(),
                                client_host: String::new(),
                                metadata: Bytes::new(),
                                assignment: Bytes::new(),
                            },
                        ],
                    },
                    DescribedGroup {
                        error: Some(not_coordinator.clone()),
                        group_id: "audit".into(),
                        group_state: String::new(),
                        protocol_type: String::new(),
                        protocol_data: String::new(),
                        members: vec![],
                    },
                ],
            }),
        ),
        Response::ok(
            34,
            ResponseBody::DeleteGroups(DeleteGroupsResponse {
                results: vec![
                    DeletableGroupResult {
                        group_id: "old-group".into(),
                        error: None,
                    },
                    DeletableGroupResult {
                        group_id: "payments".into(),
                        error: Some(WireError::new(ErrorCode::NonEmptyGroup, "3 members")),
                    },
                    DeletableGroupResult {
                        group_id: "audit".into(),
                        error: Some(not_coordinator),
                    },
                ],
            }),
        ),
    ]
}

#[test]
fn every_group_api_is_in_the_lists() {
    use std::collections::HashSet;
    use std::mem::discriminant;
    let reqs: HashSet<_> = group_requests()
        .iter()
        .map(|r| discriminant(&r.body))
        .collect();
    let resps: HashSet<_> = group_responses()
        .iter()
        .filter_map(|r| r.body.as_ref().map(discriminant))
        .collect();
    assert_eq!(reqs.len(), 10, "one request of each of the 10 group APIs");
    assert_eq!(resps.len(), 10, "one response of each of the 10 group APIs");
}

/// Whether `b` points into `frame` (a slice of it, not a copy).
fn inside(frame: &Bytes, b: &Bytes) -> bool {
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    range.contains(&(b.as_ptr() as usize)) && b.as_ptr() as usize + b.len() <= range.end
}

#[test]
fn group_bytes_are_zero_copy_slices_of_the_frame() {
    let join = group_requests()
        .into_iter()
        .find(|r| matches!(&r.body, RequestBody::JoinGroup(j) if j.member_id.is_empty()))
        .expect("a join");
    let frame = encode_request(&join);
    let RequestBody::JoinGroup(j) = decode_request(&frame, &limits()).expect("decodes").body else {
        panic!("not a join")
    };
    assert!(inside(&frame, &j.protocols[0].metadata));

    let sync = group_requests()
        .into_iter()
        .find(|r| matches!(&r.body, RequestBody::SyncGroup(s) if !s.assignments.is_empty()))
        .expect("a leader's sync");
    let frame = encode_request(&sync);
    let RequestBody::SyncGroup(s) = decode_request(&frame, &limits()).expect("decodes").body else {
        panic!("not a sync")
    };
    assert!(s.assignments[..2]
        .iter()
        .all(|a| inside(&frame, &a.assignment)));

    for r in group_responses() {
        let frame = Bytes::from(encode_response(&r));
        let back = decode_response(&frame, &limits()).expect("decodes");
        let pieces: Vec<Bytes> = match back.body {
            Some(ResponseBody::JoinGroup(j)) => j.members.into_iter().map(|m| m.metadata).collect(),
            Some(ResponseBody::SyncGroup(s)) => vec![s.assignment],
            Some(ResponseBody::DescribeGroups(d)) => d
                .groups
                .into_iter()
                .flat_map(|g| g.members)
                .flat_map(|m| [m.metadata, m.assignment])
                .collect(),
            _ => continue,
        };
        for b in pieces.iter().filter(|b| !b.is_empty()) {
            assert!(inside(&frame, b), "{b:?} copied");
        }
    }
}

#[test]
fn absent_optional_fields_decode_to_their_defaults() {
    let mut fbb = FlatBufferBuilder::new();
    let group_id = fbb.create_string("g");
    let protocol_type = fbb.create_string("consumer");
    let o = fb::JoinGroupRequest::create(
        &mut fbb,
        &fb::JoinGroupRequestArgs {
            group_id: Some(group_id),
            protocol_type: Some(protocol_type),
            ..Default::default()
        },
    );
    let f = envelope(
        &mut fbb,
        1,
        fb::RequestBody::JoinGroupRequest,
        Some(o.as_union_value()),
    );
    let RequestBody::JoinGroup(j) = decode_request(&f, &limits()).expect("decodes").body else {
        panic!("not a join")
    };
    assert_eq!(
        j,
        JoinGroupRequest {
            group_id: "g".into(),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: -1,
            member_id: String::new(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![],
            reason: None,
        }
    );

    // A response table with every field absent.
    let mut fbb = FlatBufferBuilder::new();
    let o =
        fb::FindCoordinatorResponse::create(&mut fbb, &fb::FindCoordinatorResponseArgs::default());
    let back = decode_response(&response_frame(fbb, o.as_union_value(), FIND), &limits())
        .expect("decodes");
    assert_eq!(
        back.body,
        Some(ResponseBody::FindCoordinator(FindCoordinatorResponse {
            error: None,
            node_id: -1,
            host: String::new(),
            port: 0,
        }))
    );
}

const FIND: fb::ResponseBody = fb::ResponseBody::FindCoordinatorResponse;

fn response_frame(
    mut fbb: FlatBufferBuilder<'_>,
    body: WIPOffset<flatbuffers::UnionWIPOffset>,
    body_type: fb::ResponseBody,
) -> Bytes {
    let root = fb::Response::create(
        &mut fbb,
        &fb::ResponseArgs {
            correlation_id: 99,
            body_type,
            body: Some(body),
            ..Default::default()
        },
    );
    fbb.finish(root, None);
    Bytes::copy_from_slice(fbb.finished_data())
}

/// An OffsetCommit request with one partition, built by hand.
fn offset_commit_frame(partition: i32, offset: i64, leader_epoch: i32) -> Bytes {
    let mut fbb = FlatBufferBuilder::new();
    let p = fb::OffsetCommitPartition::create(
        &mut fbb,
        &fb::OffsetCommitPartitionArgs {
            partition,
            committed_offset: offset,
            committed_leader_epoch: leader_epoch,
            metadata: None,
        },
    );
    let parts = fbb.create_vector(&[p]);
    let name = fbb.create_string("orders");
    let t = fb::OffsetCommitTopic::create(
        &mut fbb,
        &fb::OffsetCommitTopicArgs {
            name: Some(name),
            partitions: Some(parts),
        },
    );
    let topics = fbb.create_vector(&[t]);
    let group_id = fbb.create_string("g");
    let o = fb::OffsetCommitRequest::create(
        &mut fbb,
        &fb::OffsetCommitRequestArgs {
            group_id: Some(group_id),
            topics: Some(topics),
            ..Default::default()
        },
    );
    envelope(
        &mut fbb,
        1,
        fb::RequestBody::OffsetCommitRequest,
        Some(o.as_union_value()),
    )
}

#[test]
fn hostile_group_requests_are_invalid_not_panics() {
    // OffsetCommit: a negative partition, a negative offset, a negative
    // leader epoch that is not the -1 sentinel.
    for (partition, offset, epoch, needle) in [
        (-3, 0, -1, "partition -3 is negative"),
        (0, -5, -1, "committed_offset -5 is negative"),
        (i32::MIN, i64::MIN, i32::MIN, "is negative"),
        (0, 7, -7, "leader_epoch -7 is negative"),
    ] {
        let f = offset_commit_frame(partition, offset, epoch);
        expect_err(&f, ErrorCode::InvalidRequest, needle);
        assert!(expect_err_mentions_group(&f));
    }
    // The sentinel and the largest values are fine.
    let f = offset_commit_frame(i32::MAX, i64::MAX, -1);
    let RequestBody::OffsetCommit(c) = decode_request(&f, &limits()).expect("decodes").body else {
        panic!("not a commit")
    };
    let p = &c.topics[0].partitions[0];
    assert_eq!(
        (p.partition, p.offset, p.leader_epoch),
        (i32::MAX as u32, i64::MAX as u64, None)
    );

    // OffsetFetch: a negative partition in the scalar list.
    let mut fbb = FlatBufferBuilder::new();
    let parts = fbb.create_vector(&[0i32, -2]);
    let name = fbb.create_string("orders");
    let t = fb::OffsetFetchTopic::create(
        &mut fbb,
        &fb::OffsetFetchTopicArgs {
            name: Some(name),
            partitions: Some(parts),
        },
    );
    let topics = fbb.create_vector(&[t]);
    let group_id = fbb.create_string("g");
    let o = fb::OffsetFetchRequest::create(
        &mut fbb,
        &fb::OffsetFetchRequestArgs {
            group_id: Some(group_id),
            topics: Some(topics),
        },
    );
    let f = envelope(
        &mut fbb,
        1,
        fb::RequestBody::OffsetFetchRequest,
        Some(o.as_union_value()),
    );
    expect_err(&f, ErrorCode::InvalidRequest, "partition -2 is negative");
}

/// Decode errors name the group and topic they are about.
fn expect_err_mentions_group(f: &Bytes) -> bool {
    decode_request(f, &limits())
        .err()
        .is_some_and(|e| e.error.message.contains("group 'g' topic 'orders'"))
}

#[test]
fn hostile_group_responses_are_corrupt_not_panics() {
    // OffsetFetch: an offset below the -1 sentinel, a negative partition.
    for (partition, offset, needle) in [
        (0, -5, "committed_offset -5 is negative"),
        (-1, 3, "partition -1 is negative"),
    ] {
        let mut fbb = FlatBufferBuilder::new();
        let p = fb::OffsetFetchPartitionResult::create(
            &mut fbb,
            &fb::OffsetFetchPartitionResultArgs {
                partition,
                committed_offset: offset,
                ..Default::default()
            },
        );
        let parts = fbb.create_vector(&[p]);
        let name = fbb.create_string("orders");
        let t = fb::OffsetFetchTopicResult::create(
            &mut fbb,
            &fb::OffsetFetchTopicResultArgs {
                name: Some(name),
                partitions: Some(parts),
            },
        );
        let topics = fbb.create_vector(&[t]);
        let o = fb::OffsetFetchResponse::create(
            &mut fbb,
            &fb::OffsetFetchResponseArgs {
                topics: Some(topics),
                ..Default::default()
            },
        );
        let f = response_frame(
            fbb,
            o.as_union_value(),
            fb::ResponseBody::OffsetFetchResponse,
        );
        let e = decode_response(&f, &limits()).expect_err("must fail");
        assert_eq!(e.error.code, ErrorCode::CorruptData, "{e}");
        assert_eq!(e.correlation_id, 99);
        assert!(e.error.message.contains(needle), "{e} lacks {needle}");
    }

    // FindCoordinator: a port that is not a port.
    for port in [70_000, -2] {
        let mut fbb = FlatBufferBuilder::new();
        let o = fb::FindCoordinatorResponse::create(
            &mut fbb,
            &fb::FindCoordinatorResponseArgs {
                port,
                ..Default::default()
            },
        );
        let f = response_frame(fbb, o.as_union_value(), FIND);
        let e = decode_response(&f, &limits()).expect_err("must fail");
        assert_eq!(e.error.code, ErrorCode::CorruptData, "{e}");
        assert!(e.error.message.contains("out of range"), "{e}");
    }
}
