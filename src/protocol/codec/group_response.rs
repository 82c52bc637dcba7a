//! Consumer-group responses (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups, DeleteGroups): one `encode_*` (the broker) and one
//! `decode_*` (the client, from a verified table) per message, called from
//! `codec/response.rs`. The parent module's invariants hold: member metadata
//! and assignments are `Bytes` slices of the frame; negative partitions,
//! offsets and leader epochs other than the -1 sentinel are errors.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::*;

type Encoded = (fb::ResponseBody, WIPOffset<UnionWIPOffset>);

// ------------------------------------------------------------------ decode

pub(super) fn decode_find_coordinator(
    b: fb::FindCoordinatorResponse<'_>,
) -> R<FindCoordinatorResponse> {
    // -1 (the schema default) is "no port", as with no coordinator.
    let port = match b.port() {
        -1 => 0,
        p => u16::try_from(p).map_err(|_| format!("find_coordinator: port {p} is out of range"))?,
    };
    Ok(FindCoordinatorResponse {
        error: wire_error(b.error_code(), b.error_message()),
        node_id: b.node_id(),
        host: string_or_empty(b.host()),
        port,
    })
}

pub(super) fn decode_join_group(
    frame: &Bytes,
    b: fb::JoinGroupResponse<'_>,
) -> R<JoinGroupResponse> {
    let members = map_vec(b.members(), |m| {
        Ok(JoinGroupMember {
            member_id: m.member_id().to_string(),
            group_instance_id: opt_string(m.group_instance_id()),
            metadata: bytes_of(frame, m.metadata()),
        })
    })?;
    Ok(JoinGroupResponse {
        error: wire_error(b.error_code(), b.error_message()),
        generation_id: b.generation_id(),
        protocol_type: opt_string(b.protocol_type()),
        protocol_name: opt_string(b.protocol_name()),
        leader: string_or_empty(b.leader()),
        member_id: string_or_empty(b.member_id()),
        members,
    })
}

pub(super) fn decode_sync_group(frame: &Bytes, b: fb::SyncGroupResponse<'_>) -> SyncGroupResponse {
    SyncGroupResponse {
        error: wire_error(b.error_code(), b.error_message()),
        protocol_type: opt_string(b.protocol_type()),
        protocol_name: opt_string(b.protocol_name()),
        assignment: bytes_of(frame, b.assignment()),
    }
}

pub(super) fn decode_heartbeat(b: fb::HeartbeatResponse<'_>) -> HeartbeatResponse {
    HeartbeatResponse {
        error: wire_error(b.error_code(), b.error_message()),
    }
}

pub(super) fn decode_leave_group(b: fb::LeaveGroupResponse<'_>) -> R<LeaveGroupResponse> {
    let members = map_vec(b.members(), |m| {
        Ok(LeaveGroupMemberResult {
            member_id: string_or_empty(m.member_id()),
            group_instance_id: opt_string(m.group_instance_id()),
            error: wire_error(m.error_code(), m.error_message()),
        })
    })?;
    Ok(LeaveGroupResponse {
        error: wire_error(b.error_code(), b.error_message()),
        members,
    })
}

pub(super) fn decode_offset_commit(b: fb::OffsetCommitResponse<'_>) -> R<OffsetCommitResponse> {
    let topics = map_vec(b.topics(), |t| {
        let ctx = format!("offset_commit: topic '{}'", t.name());
        let partitions = map_vec(t.partitions(), |p| {
            Ok(OffsetCommitPartitionResult {
                partition: partition_from_wire(p.partition(), &ctx)?,
                error: wire_error(p.error_code(), p.error_message()),
            })
        })?;
        Ok(OffsetCommitTopicResult {
            name: t.name().to_string(),
            partitions,
        })
    })?;
    Ok(OffsetCommitResponse { topics })
}

pub(super) fn decode_offset_fetch(b: fb::OffsetFetchResponse<'_>) -> R<OffsetFetchResponse> {
    let topics = map_vec(b.topics(), |t| {
        let ctx = format!("offset_fetch: topic '{}'", t.name());
        let partitions = map_vec(t.partitions(), |p| {
            let partition = partition_from_wire(p.partition(), &ctx)?;
            let ctx = format!("{ctx} partition {partition}");
            Ok(OffsetFetchPartitionResult {
                partition,
                offset: opt_offset_from_wire(p.committed_offset(), "committed_offset", &ctx)?,
                leader_epoch: leader_epoch_from_wire(p.committed_leader_epoch(), &ctx)?,
                metadata: opt_string(p.metadata()),
                error: wire_error(p.error_code(), p.error_message()),
            })
        })?;
        Ok(OffsetFetchTopicResult {
            name: t.name().to_string(),
            partitions,
        })
    })?;
    Ok(OffsetFetchResponse {
        error: wire_error(b.error_code(), b.error_message()),
        topics,
    })
}

pub(super) fn decode_list_groups(b: fb::ListGroupsResponse<'_>) -> R<ListGroupsResponse> {
    let groups = map_vec(b.groups(), |g| {
        Ok(ListedGroup {
            group_id: g.group_id().to_string(),
            protocol_type: string_or_empty(g.protocol_type()),
            group_state: string_or_empty(g.group_state()),
        })
    })?;
    Ok(ListGroupsResponse {
        error: wire_error(b.error_code(), b.error_message()),
        groups,
    })
}

pub(super) fn decode_describe_groups(
    frame: &Bytes,
    b: fb::DescribeGroupsResponse<'_>,
) -> R<DescribeGroupsResponse> {
    let groups = map_vec(b.groups(), |g| {
        let members = map_vec(g.members(), |m| {
            Ok(DescribedGroupMember {
                member_id: m.member_id().to_string(),
                group_instance_id: opt_string(m.group_instance_id()),
                client_id: string_or_empty(m.client_id()),
                client_host: string_or_empty(m.client_host()),
                metadata: bytes_of(frame, m.member_metadata()),
                assignment: bytes_of(frame, m.member_assignment()),
            })
        })?;
        Ok(DescribedGroup {
            error: wire_error(g.error_code(), g.error_message()),
            group_id: g.group_id().to_string(),
            group_state: string_or_empty(g.group_state()),
            protocol_type: string_or_empty(g.protocol_type()),
            protocol_data: string_or_empty(g.protocol_data()),
            members,
        })
    })?;
    Ok(DescribeGroupsResponse { groups })
}

pub(super) fn decode_delete_groups(b: fb::DeleteGroupsResponse<'_>) -> R<DeleteGroupsResponse> {
    let results = map_vec(b.results(), |r| {
        Ok(DeletableGroupResult {
            group_id: r.group_id().to_string(),
            error: wire_error(r.error_code(), r.error_message()),
        })
    })?;
    Ok(DeleteGroupsResponse { results })
}

// ------------------------------------------------------------------ encode

pub(super) fn encode_find_coordinator(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &FindCoordinatorResponse,
) -> Encoded {
    let host = str_to_wire(fbb, &r.host);
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::FindCoordinatorResponse::create(
        fbb,
        &fb::FindCoordinatorResponseArgs {
            error_code,
            error_message,
            node_id: r.node_id,
            host,
            port: if r.port == 0 { -1 } else { i32::from(r.port) },
        },
    );
    (
        fb::ResponseBody::FindCoordinatorResponse,
        o.as_union_value(),
    )
}

pub(super) fn encode_join_group(fbb: &mut FlatBufferBuilder<'_>, r: &JoinGroupResponse) -> Encoded {
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            let member_id = Some(fbb.create_string(&m.member_id));
            let group_instance_id = opt_str_to_wire(fbb, m.group_instance_id.as_deref());
            let metadata = bytes_to_wire(fbb, &m.metadata);
            fb::JoinGroupMember::create(
                fbb,
                &fb::JoinGroupMemberArgs {
                    member_id,
                    group_instance_id,
                    metadata,
                },
            )
        })
        .collect();
    let members = Some(fbb.create_vector(&members));
    let protocol_type = opt_str_to_wire(fbb, r.protocol_type.as_deref());
    let protocol_name = opt_str_to_wire(fbb, r.protocol_name.as_deref());
    let leader = str_to_wire(fbb, &r.leader);
    let member_id = str_to_wire(fbb, &r.member_id);
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::JoinGroupResponse::create(
        fbb,
        &fb::JoinGroupResponseArgs {
            error_code,
            error_message,
            generation_id: r.generation_id,
            protocol_type,
            protocol_name,
            leader,
            member_id,
            members,
        },
    );
    (fb::ResponseBody::JoinGroupResponse, o.as_union_value())
}

pub(super) fn encode_sync_group(fbb: &mut FlatBufferBuilder<'_>, r: &SyncGroupResponse) -> Encoded {
    let protocol_type = opt_str_to_wire(fbb, r.protocol_type.as_deref());
    let protocol_name = opt_str_to_wire(fbb, r.protocol_name.as_deref());
    let assignment = bytes_to_wire(fbb, &r.assignment);
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::SyncGroupResponse::create(
        fbb,
        &fb::SyncGroupResponseArgs {
            error_code,
            error_message,
            protocol_type,
            protocol_name,
            assignment,
        },
    );
    (fb::ResponseBody::SyncGroupResponse, o.as_union_value())
}

pub(super) fn encode_heartbeat(fbb: &mut FlatBufferBuilder<'_>, r: &HeartbeatResponse) -> Encoded {
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::HeartbeatResponse::create(
        fbb,
        &fb::HeartbeatResponseArgs {
            error_code,
            error_message,
        },
    );
    (fb::ResponseBody::HeartbeatResponse, o.as_union_value())
}

pub(super) fn encode_leave_group(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &LeaveGroupResponse,
) -> Encoded {
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            let member_id = str_to_wire(fbb, &m.member_id);
            let group_instance_id = opt_str_to_wire(fbb, m.group_instance_id.as_deref());
            let (error_code, error_message) = error_to_wire(fbb, m.error.as_ref());
            fb::LeaveGroupMemberResult::create(
                fbb,
                &fb::LeaveGroupMemberResultArgs {
                    member_id,
                    group_instance_id,
                    error_code,
                    error_message,
                },
            )
        })
        .collect();
    let members = Some(fbb.create_vector(&members));
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::LeaveGroupResponse::create(
        fbb,
        &fb::LeaveGroupResponseArgs {
            error_code,
            error_message,
            members,
        },
    );
    (fb::ResponseBody::LeaveGroupResponse, o.as_union_value())
}

pub(super) fn encode_offset_commit(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &OffsetCommitResponse,
) -> Encoded {
    let topics: Vec<_> = r
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    let (error_code, error_message) = error_to_wire(fbb, p.error.as_ref());
                    fb::OffsetCommitPartitionResult::create(
                        fbb,
                        &fb::OffsetCommitPartitionResultArgs {
                            partition: partition_to_wire(p.partition),
                            error_code,
                            error_message,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&parts));
            let name = Some(fbb.create_string(&t.name));
            fb::OffsetCommitTopicResult::create(
                fbb,
                &fb::OffsetCommitTopicResultArgs { name, partitions },
            )
        })
        .collect();
    let topics = Some(fbb.create_vector(&topics));
    let o = fb::OffsetCommitResponse::create(fbb, &fb::OffsetCommitResponseArgs { topics });
    (fb::ResponseBody::OffsetCommitResponse, o.as_union_value())
}

pub(super) fn encode_offset_fetch(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &OffsetFetchResponse,
) -> Encoded {
    let topics: Vec<_> = r
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    let metadata = opt_str_to_wire(fbb, p.metadata.as_deref());
                    let (error_code, error_message) = error_to_wire(fbb, p.error.as_ref());
                    fb::OffsetFetchPartitionResult::create(
                        fbb,
                        &fb::OffsetFetchPartitionResultArgs {
                            partition: partition_to_wire(p.partition),
                            committed_offset: opt_offset_to_wire(p.offset),
                            committed_leader_epoch: leader_epoch_to_wire(p.leader_epoch),
                            metadata,
                            error_code,
                            error_message,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&parts));
            let name = Some(fbb.create_string(&t.name));
            fb::OffsetFetchTopicResult::create(
                fbb,
                &fb::OffsetFetchTopicResultArgs { name, partitions },
            )
        })
        .collect();
    let topics = Some(fbb.create_vector(&topics));
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::OffsetFetchResponse::create(
        fbb,
        &fb::OffsetFetchResponseArgs {
            error_code,
            error_message,
            topics,
        },
    );
    (fb::ResponseBody::OffsetFetchResponse, o.as_union_value())
}

pub(super) fn encode_list_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &ListGroupsResponse,
) -> Encoded {
    let groups: Vec<_> = r
        .groups
        .iter()
        .map(|g| {
            let group_id = Some(fbb.create_string(&g.group_id));
            let protocol_type = str_to_wire(fbb, &g.protocol_type);
            let group_state = str_to_wire(fbb, &g.group_state);
            fb::ListedGroup::create(
                fbb,
                &fb::ListedGroupArgs {
                    group_id,
                    protocol_type,
                    group_state,
                },
            )
        })
        .collect();
    let groups = Some(fbb.create_vector(&groups));
    let (error_code, error_message) = error_to_wire(fbb, r.error.as_ref());
    let o = fb::ListGroupsResponse::create(
        fbb,
        &fb::ListGroupsResponseArgs {
            error_code,
            error_message,
            groups,
        },
    );
    (fb::ResponseBody::ListGroupsResponse, o.as_union_value())
}

pub(super) fn encode_describe_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &DescribeGroupsResponse,
) -> Encoded {
    let groups: Vec<_> = r
        .groups
        .iter()
        .map(|g| {
            let members: Vec<_> = g
                .members
                .iter()
                .map(|m| {
                    let member_id = Some(fbb.create_string(&m.member_id));
                    let group_instance_id = opt_str_to_wire(fbb, m.group_instance_id.as_deref());
                    let client_id = str_to_wire(fbb, &m.client_id);
                    let client_host = str_to_wire(fbb, &m.client_host);
                    let member_metadata = bytes_to_wire(fbb, &m.metadata);
                    let member_assignment = bytes_to_wire(fbb, &m.assignment);
                    fb::DescribedGroupMember::create(
                        fbb,
                        &fb::DescribedGroupMemberArgs {
                            member_id,
                            group_instance_id,
                            client_id,
                            client_host,
                            member_metadata,
                            member_assignment,
                        },
                    )
                })
                .collect();
            let members = Some(fbb.create_vector(&members));
            let group_id = Some(fbb.create_string(&g.group_id));
            let group_state = str_to_wire(fbb, &g.group_state);
            let protocol_type = str_to_wire(fbb, &g.protocol_type);
            let protocol_data = str_to_wire(fbb, &g.protocol_data);
            let (error_code, error_message) = error_to_wire(fbb, g.error.as_ref());
            fb::DescribedGroup::create(
                fbb,
                &fb::DescribedGroupArgs {
                    error_code,
                    error_message,
                    group_id,
                    group_state,
                    protocol_type,
                    protocol_data,
                    members,
                },
            )
        })
        .collect();
    let groups = Some(fbb.create_vector(&groups));
    let o = fb::DescribeGroupsResponse::create(fbb, &fb::DescribeGroupsResponseArgs { groups });
    (fb::ResponseBody::DescribeGroupsResponse, o.as_union_value())
}

pub(super) fn encode_delete_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &DeleteGroupsResponse,
) -> Encoded {
    let results: Vec<_> = r
        .results
        .iter()
        .map(|g| {
            let group_id = Some(fbb.create_string(&g.group_id));
            let (error_code, error_message) = error_to_wire(fbb, g.error.as_ref());
            fb::DeletableGroupResult::create(
                fbb,
                &fb::DeletableGroupResultArgs {
                    group_id,
                    error_code,
                    error_message,
                },
            )
        })
        .collect();
    let results = Some(fbb.create_vector(&results));
    let o = fb::DeleteGroupsResponse::create(fbb, &fb::DeleteGroupsResponseArgs { results });
    (fb::ResponseBody::DeleteGroupsResponse, o.as_union_value())
}
