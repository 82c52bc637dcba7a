//! Consumer-group requests (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups, DeleteGroups): one `decode_*` (the broker, from a
//! verified table) and one `encode_*` (the client) per message, called from
//! `codec/request.rs`. The parent module's invariants hold: member metadata
//! and assignments are `Bytes` slices of the frame; negative partitions,
//! offsets and leader epochs other than the -1 sentinel are errors.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::*;

type Encoded = (fb::RequestBody, WIPOffset<UnionWIPOffset>);

// ------------------------------------------------------------------ decode

pub(super) fn decode_find_coordinator(b: fb::FindCoordinatorRequest<'_>) -> FindCoordinatorRequest {
    FindCoordinatorRequest {
        key: b.key().to_string(),
        key_type: b.key_type(),
    }
}

pub(super) fn decode_join_group(frame: &Bytes, b: fb::JoinGroupRequest<'_>) -> R<JoinGroupRequest> {
    let protocols = map_vec(b.protocols(), |p| {
        Ok(JoinGroupProtocol {
            name: p.name().to_string(),
            metadata: bytes_of(frame, p.metadata()),
        })
    })?;
    Ok(JoinGroupRequest {
        group_id: b.group_id().to_string(),
        session_timeout_ms: b.session_timeout_ms(),
        rebalance_timeout_ms: b.rebalance_timeout_ms(),
        member_id: string_or_empty(b.member_id()),
        group_instance_id: opt_string(b.group_instance_id()),
        protocol_type: b.protocol_type().to_string(),
        protocols,
        reason: opt_string(b.reason()),
    })
}

pub(super) fn decode_sync_group(frame: &Bytes, b: fb::SyncGroupRequest<'_>) -> R<SyncGroupRequest> {
    let assignments = map_vec(b.assignments(), |a| {
        Ok(SyncGroupAssignment {
            member_id: a.member_id().to_string(),
            assignment: bytes_of(frame, a.assignment()),
        })
    })?;
    Ok(SyncGroupRequest {
        group_id: b.group_id().to_string(),
        generation_id: b.generation_id(),
        member_id: b.member_id().to_string(),
        group_instance_id: opt_string(b.group_instance_id()),
        protocol_type: opt_string(b.protocol_type()),
        protocol_name: opt_string(b.protocol_name()),
        assignments,
    })
}

pub(super) fn decode_heartbeat(b: fb::HeartbeatRequest<'_>) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: b.group_id().to_string(),
        generation_id: b.generation_id(),
        member_id: b.member_id().to_string(),
        group_instance_id: opt_string(b.group_instance_id()),
    }
}

pub(super) fn decode_leave_group(b: fb::LeaveGroupRequest<'_>) -> R<LeaveGroupRequest> {
    let members = map_vec(b.members(), |m| {
        Ok(LeaveGroupMember {
            member_id: string_or_empty(m.member_id()),
            group_instance_id: opt_string(m.group_instance_id()),
            reason: opt_string(m.reason()),
        })
    })?;
    Ok(LeaveGroupRequest {
        group_id: b.group_id().to_string(),
        members,
    })
}

pub(super) fn decode_offset_commit(b: fb::OffsetCommitRequest<'_>) -> R<OffsetCommitRequest> {
    let group_id = b.group_id();
    let topics = map_vec(b.topics(), |t| {
        let name = t.name();
        let ctx = format!("offset_commit: group '{group_id}' topic '{name}'");
        let partitions = map_vec(t.partitions(), |p| {
            let partition = partition_from_wire(p.partition(), &ctx)?;
            let ctx = format!("{ctx} partition {partition}");
            Ok(OffsetCommitPartition {
                partition,
                offset: offset_from_wire(p.committed_offset(), "committed_offset", &ctx)?,
                leader_epoch: leader_epoch_from_wire(p.committed_leader_epoch(), &ctx)?,
                metadata: opt_string(p.metadata()),
            })
        })?;
        Ok(OffsetCommitTopic {
            name: name.to_string(),
            partitions,
        })
    })?;
    Ok(OffsetCommitRequest {
        group_id: group_id.to_string(),
        generation_id: b.generation_id(),
        member_id: string_or_empty(b.member_id()),
        group_instance_id: opt_string(b.group_instance_id()),
        topics,
    })
}

pub(super) fn decode_offset_fetch(b: fb::OffsetFetchRequest<'_>) -> R<OffsetFetchRequest> {
    let group_id = b.group_id();
    let topics = match b.topics() {
        None => None,
        Some(v) => Some(map_vec(Some(v), |t| {
            let name = t.name();
            let ctx = format!("offset_fetch: group '{group_id}' topic '{name}'");
            let partitions = match t.partitions() {
                None => Vec::new(),
                Some(ps) => ps
                    .iter()
                    .map(|p| partition_from_wire(p, &ctx))
                    .collect::<R<Vec<_>>>()?,
            };
            Ok(OffsetFetchTopic {
                name: name.to_string(),
                partitions,
            })
        })?),
    };
    Ok(OffsetFetchRequest {
        group_id: group_id.to_string(),
        topics,
    })
}

pub(super) fn decode_list_groups(b: fb::ListGroupsRequest<'_>) -> ListGroupsRequest {
    ListGroupsRequest {
        states_filter: strings_from_wire(b.states_filter()),
    }
}

pub(super) fn decode_describe_groups(b: fb::DescribeGroupsRequest<'_>) -> DescribeGroupsRequest {
    DescribeGroupsRequest {
        groups: strings_from_wire(b.groups()),
    }
}

pub(super) fn decode_delete_groups(b: fb::DeleteGroupsRequest<'_>) -> DeleteGroupsRequest {
    DeleteGroupsRequest {
        groups: strings_from_wire(b.groups()),
    }
}

// ------------------------------------------------------------------ encode

pub(super) fn encode_find_coordinator(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &FindCoordinatorRequest,
) -> Encoded {
    let key = Some(fbb.create_string(&r.key));
    let o = fb::FindCoordinatorRequest::create(
        fbb,
        &fb::FindCoordinatorRequestArgs {
            key,
            key_type: r.key_type,
        },
    );
    (fb::RequestBody::FindCoordinatorRequest, o.as_union_value())
}

pub(super) fn encode_join_group(fbb: &mut FlatBufferBuilder<'_>, r: &JoinGroupRequest) -> Encoded {
    let protocols: Vec<_> = r
        .protocols
        .iter()
        .map(|p| {
            let name = Some(fbb.create_string(&p.name));
            let metadata = bytes_to_wire(fbb, &p.metadata);
            fb::JoinGroupProtocol::create(fbb, &fb::JoinGroupProtocolArgs { name, metadata })
        })
        .collect();
    let protocols = Some(fbb.create_vector(&protocols));
    let group_id = Some(fbb.create_string(&r.group_id));
    let member_id = str_to_wire(fbb, &r.member_id);
    let group_instance_id = opt_str_to_wire(fbb, r.group_instance_id.as_deref());
    let protocol_type = Some(fbb.create_string(&r.protocol_type));
    let reason = opt_str_to_wire(fbb, r.reason.as_deref());
    let o = fb::JoinGroupRequest::create(
        fbb,
        &fb::JoinGroupRequestArgs {
            group_id,
            session_timeout_ms: r.session_timeout_ms,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            member_id,
            group_instance_id,
            protocol_type,
            protocols,
            reason,
        },
    );
    (fb::RequestBody::JoinGroupRequest, o.as_union_value())
}

pub(super) fn encode_sync_group(fbb: &mut FlatBufferBuilder<'_>, r: &SyncGroupRequest) -> Encoded {
    let assignments: Vec<_> = r
        .assignments
        .iter()
        .map(|a| {
            let member_id = Some(fbb.create_string(&a.member_id));
            let assignment = bytes_to_wire(fbb, &a.assignment);
            fb::SyncGroupAssignment::create(
                fbb,
                &fb::SyncGroupAssignmentArgs {
                    member_id,
                    assignment,
                },
            )
        })
        .collect();
    let assignments = Some(fbb.create_vector(&assignments));
    let group_id = Some(fbb.create_string(&r.group_id));
    let member_id = Some(fbb.create_string(&r.member_id));
    let group_instance_id = opt_str_to_wire(fbb, r.group_instance_id.as_deref());
    let protocol_type = opt_str_to_wire(fbb, r.protocol_type.as_deref());
    let protocol_name = opt_str_to_wire(fbb, r.protocol_name.as_deref());
    let o = fb::SyncGroupRequest::create(
        fbb,
        &fb::SyncGroupRequestArgs {
            group_id,
            generation_id: r.generation_id,
            member_id,
            group_instance_id,
            protocol_type,
            protocol_name,
            assignments,
        },
    );
    (fb::RequestBody::SyncGroupRequest, o.as_union_value())
}

pub(super) fn encode_heartbeat(fbb: &mut FlatBufferBuilder<'_>, r: &HeartbeatRequest) -> Encoded {
    let group_id = Some(fbb.create_string(&r.group_id));
    let member_id = Some(fbb.create_string(&r.member_id));
    let group_instance_id = opt_str_to_wire(fbb, r.group_instance_id.as_deref());
    let o = fb::HeartbeatRequest::create(
        fbb,
        &fb::HeartbeatRequestArgs {
            group_id,
            generation_id: r.generation_id,
            member_id,
            group_instance_id,
        },
    );
    (fb::RequestBody::HeartbeatRequest, o.as_union_value())
}

pub(super) fn encode_leave_group(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &LeaveGroupRequest,
) -> Encoded {
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            let member_id = str_to_wire(fbb, &m.member_id);
            let group_instance_id = opt_str_to_wire(fbb, m.group_instance_id.as_deref());
            let reason = opt_str_to_wire(fbb, m.reason.as_deref());
            fb::LeaveGroupMember::create(
                fbb,
                &fb::LeaveGroupMemberArgs {
                    member_id,
                    group_instance_id,
                    reason,
                },
            )
        })
        .collect();
    let members = Some(fbb.create_vector(&members));
    let group_id = Some(fbb.create_string(&r.group_id));
    let o = fb::LeaveGroupRequest::create(fbb, &fb::LeaveGroupRequestArgs { group_id, members });
    (fb::RequestBody::LeaveGroupRequest, o.as_union_value())
}

pub(super) fn encode_offset_commit(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &OffsetCommitRequest,
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
                    fb::OffsetCommitPartition::create(
                        fbb,
                        &fb::OffsetCommitPartitionArgs {
                            partition: partition_to_wire(p.partition),
                            committed_offset: offset_to_wire(p.offset),
                            committed_leader_epoch: leader_epoch_to_wire(p.leader_epoch),
                            metadata,
                        },
                    )
                })
                .collect();
            let partitions = Some(fbb.create_vector(&parts));
            let name = Some(fbb.create_string(&t.name));
            fb::OffsetCommitTopic::create(fbb, &fb::OffsetCommitTopicArgs { name, partitions })
        })
        .collect();
    let topics = Some(fbb.create_vector(&topics));
    let group_id = Some(fbb.create_string(&r.group_id));
    let member_id = str_to_wire(fbb, &r.member_id);
    let group_instance_id = opt_str_to_wire(fbb, r.group_instance_id.as_deref());
    let o = fb::OffsetCommitRequest::create(
        fbb,
        &fb::OffsetCommitRequestArgs {
            group_id,
            generation_id: r.generation_id,
            member_id,
            group_instance_id,
            topics,
        },
    );
    (fb::RequestBody::OffsetCommitRequest, o.as_union_value())
}

pub(super) fn encode_offset_fetch(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &OffsetFetchRequest,
) -> Encoded {
    // `None` stays absent (every partition); `Some(vec![])` is an empty list.
    let topics = r.topics.as_ref().map(|topics| {
        let topics: Vec<_> = topics
            .iter()
            .map(|t| {
                let parts: Vec<i32> = t.partitions.iter().map(|&p| partition_to_wire(p)).collect();
                let partitions = Some(fbb.create_vector(&parts));
                let name = Some(fbb.create_string(&t.name));
                fb::OffsetFetchTopic::create(fbb, &fb::OffsetFetchTopicArgs { name, partitions })
            })
            .collect();
        fbb.create_vector(&topics)
    });
    let group_id = Some(fbb.create_string(&r.group_id));
    let o = fb::OffsetFetchRequest::create(fbb, &fb::OffsetFetchRequestArgs { group_id, topics });
    (fb::RequestBody::OffsetFetchRequest, o.as_union_value())
}

pub(super) fn encode_list_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &ListGroupsRequest,
) -> Encoded {
    let states_filter = strings_to_wire(fbb, &r.states_filter);
    let o = fb::ListGroupsRequest::create(fbb, &fb::ListGroupsRequestArgs { states_filter });
    (fb::RequestBody::ListGroupsRequest, o.as_union_value())
}

pub(super) fn encode_describe_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &DescribeGroupsRequest,
) -> Encoded {
    let groups = strings_to_wire(fbb, &r.groups);
    let o = fb::DescribeGroupsRequest::create(fbb, &fb::DescribeGroupsRequestArgs { groups });
    (fb::RequestBody::DescribeGroupsRequest, o.as_union_value())
}

pub(super) fn encode_delete_groups(
    fbb: &mut FlatBufferBuilder<'_>,
    r: &DeleteGroupsRequest,
) -> Encoded {
    let groups = strings_to_wire(fbb, &r.groups);
    let o = fb::DeleteGroupsRequest::create(fbb, &fb::DeleteGroupsRequestArgs { groups });
    (fb::RequestBody::DeleteGroupsRequest, o.as_union_value())
}
