//! The consumer-group part of tests/fuzz_corpus.rs's corpus: one
//! frame_decode and one response_decode file per group API (ApiKeys 10-19),
//! built with Corelog's own encoders like the rest.

use bytes::Bytes;
use corelog::protocol::messages::*;
use corelog::protocol::{ErrorCode, WireError};

/// One file per consumer-group API (ApiKeys 10-19).
pub fn request_corpus(req: fn(u32, RequestBody) -> Request) -> Vec<(String, Vec<Request>)> {
    let meta = |s: &[u8]| Bytes::copy_from_slice(s);
    let one = |name: &str, cid: u32, body: RequestBody| (name.to_string(), vec![req(cid, body)]);
    vec![
        one(
            "find_coordinator",
            300,
            RequestBody::FindCoordinator(FindCoordinatorRequest {
                key: "payments".into(),
                key_type: FindCoordinatorRequest::KEY_TYPE_GROUP,
            }),
        ),
        (
            "join_group".into(),
            vec![
                req(
                    301,
                    RequestBody::JoinGroup(JoinGroupRequest {
                        group_id: "payments".into(),
                        session_timeout_ms: 45_000,
                        rebalance_timeout_ms: 300_000,
                        member_id: String::new(),
                        group_instance_id: None,
                        protocol_type: "consumer".into(),
                        protocols: vec![
                            JoinGroupProtocol {
                                name: "range".into(),
                                metadata: meta(b"\x00\x03\x00\x00\x00\x01\x00\x06orders"),
                            },
                            JoinGroupProtocol {
                                name: "cooperative-sticky".into(),
                                metadata: meta(b"\x00\x03"),
                            },
                        ],
                        reason: None,
                    }),
                ),
                req(
                    302,
                    RequestBody::JoinGroup(JoinGroupRequest {
                        group_id: "payments".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: -1,
                        member_id: "consumer-1-6f1c".into(),
                        group_instance_id: Some("host-a".into()),
                        protocol_type: "consumer".into(),
                        protocols: vec![JoinGroupProtocol {
                            name: "range".into(),
                            metadata: Bytes::new(),
                        }],
                        reason: Some("rejoining".into()),
                    }),
                ),
            ],
        ),
        one(
            "sync_group",
            303,
            RequestBody::SyncGroup(SyncGroupRequest {
                group_id: "payments".into(),
                generation_id: 1,
                member_id: "consumer-1-6f1c".into(),
                group_instance_id: None,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments: vec![
                    SyncGroupAssignment {
                        member_id: "consumer-1-6f1c".into(),
                        assignment: meta(&[
                            0, 3, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 1,
                            0, 0, 0, 0,
                        ]),
                    },
                    SyncGroupAssignment {
                        member_id: "consumer-2-91aa".into(),
                        assignment: Bytes::new(),
                    },
                ],
            }),
        ),
        one(
            "heartbeat",
            304,
            RequestBody::Heartbeat(HeartbeatRequest {
                group_id: "payments".into(),
                generation_id: 1,
                member_id: "consumer-1-6f1c".into(),
                group_instance_id: None,
            }),
        ),
        one(
            "leave_group",
            305,
            RequestBody::LeaveGroup(LeaveGroupRequest {
                group_id: "payments".into(),
                members: vec![
                    LeaveGroupMember {
                        member_id: "consumer-1-6f1c".into(),
                        group_instance_id: None,
                        reason: Some("closing".into()),
                    },
                    LeaveGroupMember {
                        member_id: String::new(),
                        group_instance_id: Some("host-b".into()),
                        reason: None,
                    },
                ],
            }),
        ),
        one(
            "offset_commit",
            306,
            RequestBody::OffsetCommit(OffsetCommitRequest {
                group_id: "payments".into(),
                generation_id: 1,
                member_id: "consumer-1-6f1c".into(),
                group_instance_id: None,
                topics: vec![OffsetCommitTopic {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetCommitPartition {
                            partition: 0,
                            offset: 42,
                            leader_epoch: Some(0),
                            metadata: Some(String::new()),
                        },
                        OffsetCommitPartition {
                            partition: 3,
                            offset: 1 << 33,
                            leader_epoch: None,
                            metadata: None,
                        },
                    ],
                }],
            }),
        ),
        (
            "offset_fetch".into(),
            vec![
                req(
                    307,
                    RequestBody::OffsetFetch(OffsetFetchRequest {
                        group_id: "payments".into(),
                        topics: None,
                    }),
                ),
                req(
                    308,
                    RequestBody::OffsetFetch(OffsetFetchRequest {
                        group_id: "payments".into(),
                        topics: Some(vec![OffsetFetchTopic {
                            name: "orders".into(),
                            partitions: vec![0, 1, 2, 3],
                        }]),
                    }),
                ),
            ],
        ),
        one(
            "list_groups",
            309,
            RequestBody::ListGroups(ListGroupsRequest {
                states_filter: vec!["Stable".into()],
            }),
        ),
        one(
            "describe_groups",
            310,
            RequestBody::DescribeGroups(DescribeGroupsRequest {
                groups: vec!["payments".into(), "audit".into()],
            }),
        ),
        one(
            "delete_groups",
            311,
            RequestBody::DeleteGroups(DeleteGroupsRequest {
                groups: vec!["old".into()],
            }),
        ),
    ]
}

/// One file per consumer-group API (ApiKeys 10-19).
pub fn response_corpus() -> Vec<(&'static str, Response)> {
    let meta = |s: &[u8]| Bytes::copy_from_slice(s);
    let err = |code, m: &str| Some(WireError::new(code, m));
    vec![
        (
            "find_coordinator",
            Response::ok(
                300,
                ResponseBody::FindCoordinator(FindCoordinatorResponse {
                    error: None,
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 9700,
                }),
            ),
        ),
        (
            "join_group",
            Response::ok(
                301,
                ResponseBody::JoinGroup(JoinGroupResponse {
                    error: None,
                    generation_id: 1,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    leader: "consumer-1-6f1c".into(),
                    member_id: "consumer-1-6f1c".into(),
                    members: vec![
                        JoinGroupMember {
                            member_id: "consumer-1-6f1c".into(),
                            group_instance_id: None,
                            metadata: meta(b"\x00\x03\x00\x00\x00\x01\x00\x06orders"),
                        },
                        JoinGroupMember {
                            member_id: "consumer-2-91aa".into(),
                            group_instance_id: Some("host-b".into()),
                            metadata: Bytes::new(),
                        },
                    ],
                }),
            ),
        ),
        (
            "sync_group",
            Response::ok(
                302,
                ResponseBody::SyncGroup(SyncGroupResponse {
                    error: None,
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignment: meta(&[
                        0, 3, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 1, 0,
                        0, 0, 0,
                    ]),
                }),
            ),
        ),
        (
            "heartbeat",
            Response::ok(
                303,
                ResponseBody::Heartbeat(HeartbeatResponse {
                    error: err(ErrorCode::RebalanceInProgress, "rejoin"),
                }),
            ),
        ),
        (
            "leave_group",
            Response::ok(
                304,
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
                            error: err(ErrorCode::UnknownMemberId, ""),
                        },
                    ],
                }),
            ),
        ),
        (
            "offset_commit",
            Response::ok(
                305,
                ResponseBody::OffsetCommit(OffsetCommitResponse {
                    topics: vec![OffsetCommitTopicResult {
                        name: "orders".into(),
                        partitions: vec![
                            OffsetCommitPartitionResult {
                                partition: 0,
                                error: None,
                            },
                            OffsetCommitPartitionResult {
                                partition: 3,
                                error: err(ErrorCode::IllegalGeneration, "generation 1 is not 2"),
                            },
                        ],
                    }],
                }),
            ),
        ),
        (
            "offset_fetch",
            Response::ok(
                306,
                ResponseBody::OffsetFetch(OffsetFetchResponse {
                    error: None,
                    topics: vec![OffsetFetchTopicResult {
                        name: "orders".into(),
                        partitions: vec![
                            OffsetFetchPartitionResult {
                                partition: 0,
                                offset: Some(42),
                                leader_epoch: Some(0),
                                metadata: Some(String::new()),
                                error: None,
                            },
                            OffsetFetchPartitionResult {
                                partition: 1,
                                offset: None,
                                leader_epoch: None,
                                metadata: None,
                                error: None,
                            },
                        ],
                    }],
                }),
            ),
        ),
        (
            "list_groups",
            Response::ok(
                307,
                ResponseBody::ListGroups(ListGroupsResponse {
                    error: None,
                    groups: vec![ListedGroup {
                        group_id: "payments".into(),
                        protocol_type: "consumer".into(),
                        group_state: "Stable".into(),
                    }],
                }),
            ),
        ),
        (
            "describe_groups",
            Response::ok(
                308,
                ResponseBody::DescribeGroups(DescribeGroupsResponse {
                    groups: vec![
                        DescribedGroup {
                            error: None,
                            group_id: "payments".into(),
                            group_state: "Stable".into(),
                            protocol_type: "consumer".into(),
                            protocol_data: "range".into(),
                            members: vec![DescribedGroupMember {
                                member_id: "consumer-1-6f1c".into(),
                                group_instance_id: None,
                                client_id: "consumer-1".into(),
                                client_host: "/127.0.0.1".into(),
                                metadata: meta(b"\x00\x03meta"),
                                assignment: meta(b"\x00\x03assignment"),
                            }],
                        },
                        DescribedGroup {
                            error: err(ErrorCode::GroupIdNotFound, "no group 'audit'"),
                            group_id: "audit".into(),
                            group_state: String::new(),
                            protocol_type: String::new(),
                            protocol_data: String::new(),
                            members: vec![],
                        },
                    ],
                }),
            ),
        ),
        (
            "delete_groups",
            Response::ok(
                309,
                ResponseBody::DeleteGroups(DeleteGroupsResponse {
                    results: vec![
                        DeletableGroupResult {
                            group_id: "old".into(),
                            error: None,
                        },
                        DeletableGroupResult {
                            group_id: "payments".into(),
                            error: err(ErrorCode::NonEmptyGroup, "2 members"),
                        },
                    ],
                }),
            ),
        ),
    ]
}
