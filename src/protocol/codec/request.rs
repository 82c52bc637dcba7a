//! Requests: client encodes, broker decodes (see the parent module's invariants).

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::group_request as group;
use super::*;

// ------------------------------------------------------------------ requests

pub fn decode_request(frame: &Bytes, limits: &DecodeLimits) -> Result<Request, DecodeError> {
    let opts = limits.verifier_options();
    let root = match flatbuffers::root_with_opts::<fb::Request>(&opts, frame) {
        Ok(r) => r,
        Err(e) => {
            return Err(decode_err(
                peek_correlation_id(frame).unwrap_or(0),
                ErrorCode::InvalidRequest,
                format!("request does not verify as a FlatBuffer: {e}"),
            ))
        }
    };
    let cid = root.correlation_id();
    if root.api_version() != PROTOCOL_VERSION {
        return Err(decode_err(
            cid,
            ErrorCode::UnsupportedVersion,
            format!(
                "api_version {} is not supported (this broker speaks {PROTOCOL_VERSION})",
                root.api_version()
            ),
        ));
    }
    let body = decode_request_body(frame, &root)
        .map_err(|m| decode_err(cid, ErrorCode::InvalidRequest, m))?;
    Ok(Request {
        correlation_id: cid,
        api_version: root.api_version(),
        client_id: root.client_id().map(str::to_string),
        body,
    })
}

fn decode_request_body(frame: &Bytes, root: &fb::Request<'_>) -> R<RequestBody> {
    const MISSING: &str = "missing body";
    let t = root.body_type();
    Ok(match t {
        fb::RequestBody::NONE => return Err(MISSING.into()),
        fb::RequestBody::ApiVersionsRequest => {
            let b = root.body_as_api_versions_request().ok_or(MISSING)?;
            RequestBody::ApiVersions(ApiVersionsRequest {
                client_software: b.client_software().map(str::to_string),
            })
        }
        fb::RequestBody::CreateTopicRequest => {
            let b = root.body_as_create_topic_request().ok_or(MISSING)?;
            if b.partitions() < 0 {
                return Err(format!(
                    "create_topic: partitions {} is negative",
                    b.partitions()
                ));
            }
            RequestBody::CreateTopic(CreateTopicRequest {
                name: b.name().to_string(),
                partitions: b.partitions(),
                configs: configs_from_wire(b.configs())?,
            })
        }
        fb::RequestBody::DeleteTopicRequest => {
            let b = root.body_as_delete_topic_request().ok_or(MISSING)?;
            RequestBody::DeleteTopic(DeleteTopicRequest {
                name: b.name().to_string(),
            })
        }
        fb::RequestBody::DeleteRecordsRequest => {
            let b = root.body_as_delete_records_request().ok_or(MISSING)?;
            let ctx = format!(
                "delete_records: topic '{}' partition {}",
                b.topic(),
                b.partition()
            );
            RequestBody::DeleteRecords(DeleteRecordsRequest {
                topic: b.topic().to_string(),
                partition: partition_from_wire(b.partition(), &ctx)?,
                before_offset: offset_from_wire(b.before_offset(), "before_offset", &ctx)?,
            })
        }
        fb::RequestBody::InitProducerIdRequest => {
            let b = root.body_as_init_producer_id_request().ok_or(MISSING)?;
            let current = match (b.producer_id(), b.producer_epoch()) {
                (-1, -1) => None,
                (id, epoch) if id >= 0 && epoch >= 0 => Some(ProducerIdentity {
                    producer_id: id,
                    producer_epoch: epoch,
                }),
                (id, epoch) => {
                    return Err(format!(
                        "init_producer_id: producer_id {id} with epoch {epoch} \
                         (both -1 for a new id, or both >= 0 to bump an epoch)"
                    ))
                }
            };
            RequestBody::InitProducerId(InitProducerIdRequest { current })
        }
        fb::RequestBody::AlterTopicConfigRequest => {
            let b = root.body_as_alter_topic_config_request().ok_or(MISSING)?;
            RequestBody::AlterTopicConfig(AlterTopicConfigRequest {
                name: b.name().to_string(),
                configs: configs_from_wire(b.configs())?,
            })
        }
        fb::RequestBody::MetadataRequest => {
            let b = root.body_as_metadata_request().ok_or(MISSING)?;
            RequestBody::Metadata(MetadataRequest {
                topics: b
                    .topics()
                    .map(|v| v.iter().map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        }
        fb::RequestBody::ProduceRequest => {
            let b = root.body_as_produce_request().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let name = t.name();
                let partitions = map_vec(t.partitions(), |p| {
                    let ctx = format!("produce: topic '{name}'");
                    Ok(ProducePartition {
                        partition: partition_from_wire(p.partition(), &ctx)?,
                        batch: bytes_of(frame, p.batch()),
                    })
                })?;
                Ok(ProduceTopic {
                    name: name.to_string(),
                    partitions,
                })
            })?;
            RequestBody::Produce(ProduceRequest {
                acks: acks_from_wire(b.acks())?,
                timeout_ms: b.timeout_ms(),
                topics,
            })
        }
        fb::RequestBody::FetchRequest => {
            let b = root.body_as_fetch_request().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let name = t.name();
                let partitions = map_vec(t.partitions(), |p| {
                    let ctx = format!("fetch: topic '{name}' partition {}", p.partition());
                    Ok(FetchPartition {
                        partition: partition_from_wire(p.partition(), &ctx)?,
                        fetch_offset: offset_from_wire(p.fetch_offset(), "fetch_offset", &ctx)?,
                        max_bytes: p.max_bytes(),
                    })
                })?;
                Ok(FetchTopic {
                    name: name.to_string(),
                    partitions,
                })
            })?;
            RequestBody::Fetch(FetchRequest {
                max_wait_ms: b.max_wait_ms(),
                min_bytes: b.min_bytes(),
                max_bytes: b.max_bytes(),
                topics,
            })
        }
        fb::RequestBody::ListOffsetsRequest => {
            let b = root.body_as_list_offsets_request().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let name = t.name();
                let partitions = map_vec(t.partitions(), |p| {
                    let ctx = format!("list_offsets: topic '{name}'");
                    let partition = partition_from_wire(p.partition(), &ctx)?;
                    let spec = OffsetSpec::from_wire(p.timestamp()).ok_or_else(|| {
                        format!(
                            "{ctx} partition {partition}: timestamp {} is negative (only -1 latest and -2 earliest are allowed)",
                            p.timestamp()
                        )
                    })?;
                    Ok(ListOffsetsPartition { partition, spec })
                })?;
                Ok(ListOffsetsTopic {
                    name: name.to_string(),
                    partitions,
                })
            })?;
            RequestBody::ListOffsets(ListOffsetsRequest { topics })
        }
        fb::RequestBody::FindCoordinatorRequest => {
            let b = root.body_as_find_coordinator_request().ok_or(MISSING)?;
            RequestBody::FindCoordinator(group::decode_find_coordinator(b))
        }
        fb::RequestBody::JoinGroupRequest => {
            let b = root.body_as_join_group_request().ok_or(MISSING)?;
            RequestBody::JoinGroup(group::decode_join_group(frame, b)?)
        }
        fb::RequestBody::SyncGroupRequest => {
            let b = root.body_as_sync_group_request().ok_or(MISSING)?;
            RequestBody::SyncGroup(group::decode_sync_group(frame, b)?)
        }
        fb::RequestBody::HeartbeatRequest => {
            let b = root.body_as_heartbeat_request().ok_or(MISSING)?;
            RequestBody::Heartbeat(group::decode_heartbeat(b))
        }
        fb::RequestBody::LeaveGroupRequest => {
            let b = root.body_as_leave_group_request().ok_or(MISSING)?;
            RequestBody::LeaveGroup(group::decode_leave_group(b)?)
        }
        fb::RequestBody::OffsetCommitRequest => {
            let b = root.body_as_offset_commit_request().ok_or(MISSING)?;
            RequestBody::OffsetCommit(group::decode_offset_commit(b)?)
        }
        fb::RequestBody::OffsetFetchRequest => {
            let b = root.body_as_offset_fetch_request().ok_or(MISSING)?;
            RequestBody::OffsetFetch(group::decode_offset_fetch(b)?)
        }
        fb::RequestBody::ListGroupsRequest => {
            let b = root.body_as_list_groups_request().ok_or(MISSING)?;
            RequestBody::ListGroups(group::decode_list_groups(b))
        }
        fb::RequestBody::DescribeGroupsRequest => {
            let b = root.body_as_describe_groups_request().ok_or(MISSING)?;
            RequestBody::DescribeGroups(group::decode_describe_groups(b))
        }
        fb::RequestBody::DeleteGroupsRequest => {
            let b = root.body_as_delete_groups_request().ok_or(MISSING)?;
            RequestBody::DeleteGroups(group::decode_delete_groups(b))
        }
        other => return Err(format!("unknown request type {}", other.0)),
    })
}

pub fn encode_request(req: &Request) -> Bytes {
    let hint = match &req.body {
        RequestBody::Produce(p) => p
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.batch.len() + 64)
            .sum::<usize>(),
        _ => 0,
    };
    let mut fbb = FlatBufferBuilder::with_capacity(256 + hint);
    let (body_type, body) = encode_request_body(&mut fbb, &req.body);
    let client_id = req.client_id.as_deref().map(|s| fbb.create_string(s));
    let root = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            correlation_id: req.correlation_id,
            api_version: req.api_version,
            client_id,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(root, None);
    // The builder's own buffer, from where the finished data starts: no
    // copy of the frame (a produce request's record bytes are in it).
    let (buf, head) = fbb.collapse();
    Bytes::from(buf).slice(head..)
}

fn encode_request_body(
    fbb: &mut FlatBufferBuilder<'_>,
    body: &RequestBody,
) -> (fb::RequestBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match body {
        RequestBody::ApiVersions(r) => {
            let client_software = r.client_software.as_deref().map(|s| fbb.create_string(s));
            let o = fb::ApiVersionsRequest::create(
                fbb,
                &fb::ApiVersionsRequestArgs { client_software },
            );
            (fb::RequestBody::ApiVersionsRequest, o.as_union_value())
        }
        RequestBody::CreateTopic(r) => {
            let name = Some(fbb.create_string(&r.name));
            let configs = configs_to_wire(fbb, &r.configs);
            let o = fb::CreateTopicRequest::create(
                fbb,
                &fb::CreateTopicRequestArgs {
                    name,
                    partitions: r.partitions,
                    configs,
                },
            );
            (fb::RequestBody::CreateTopicRequest, o.as_union_value())
        }
        RequestBody::DeleteTopic(r) => {
            let name = Some(fbb.create_string(&r.name));
            let o = fb::DeleteTopicRequest::create(fbb, &fb::DeleteTopicRequestArgs { name });
            (fb::RequestBody::DeleteTopicRequest, o.as_union_value())
        }
        RequestBody::DeleteRecords(r) => {
            let topic = Some(fbb.create_string(&r.topic));
            let o = fb::DeleteRecordsRequest::create(
                fbb,
                &fb::DeleteRecordsRequestArgs {
                    topic,
                    partition: partition_to_wire(r.partition),
                    before_offset: offset_to_wire(r.before_offset),
                },
            );
            (fb::RequestBody::DeleteRecordsRequest, o.as_union_value())
        }
        RequestBody::InitProducerId(r) => {
            let (producer_id, producer_epoch) = r
                .current
                .map_or((-1, -1), |c| (c.producer_id, c.producer_epoch));
            let o = fb::InitProducerIdRequest::create(
                fbb,
                &fb::InitProducerIdRequestArgs {
                    producer_id,
                    producer_epoch,
                },
            );
            (fb::RequestBody::InitProducerIdRequest, o.as_union_value())
        }
        RequestBody::AlterTopicConfig(r) => {
            let name = Some(fbb.create_string(&r.name));
            let configs = configs_to_wire(fbb, &r.configs);
            let o = fb::AlterTopicConfigRequest::create(
                fbb,
                &fb::AlterTopicConfigRequestArgs { name, configs },
            );
            (fb::RequestBody::AlterTopicConfigRequest, o.as_union_value())
        }
        RequestBody::Metadata(r) => {
            let topics = if r.topics.is_empty() {
                None
            } else {
                let names: Vec<_> = r.topics.iter().map(|t| fbb.create_string(t)).collect();
                Some(fbb.create_vector(&names))
            };
            let o = fb::MetadataRequest::create(fbb, &fb::MetadataRequestArgs { topics });
            (fb::RequestBody::MetadataRequest, o.as_union_value())
        }
        RequestBody::Produce(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let batch = Some(fbb.create_vector(&p.batch[..]));
                            fb::ProducePartition::create(
                                fbb,
                                &fb::ProducePartitionArgs {
                                    partition: partition_to_wire(p.partition),
                                    batch,
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::ProduceTopic::create(fbb, &fb::ProduceTopicArgs { name, partitions })
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::ProduceRequest::create(
                fbb,
                &fb::ProduceRequestArgs {
                    acks: acks_to_wire(r.acks),
                    timeout_ms: r.timeout_ms,
                    topics,
                },
            );
            (fb::RequestBody::ProduceRequest, o.as_union_value())
        }
        RequestBody::Fetch(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            fb::FetchPartition::create(
                                fbb,
                                &fb::FetchPartitionArgs {
                                    partition: partition_to_wire(p.partition),
                                    fetch_offset: offset_to_wire(p.fetch_offset),
                                    max_bytes: p.max_bytes,
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::FetchTopic::create(fbb, &fb::FetchTopicArgs { name, partitions })
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::FetchRequest::create(
                fbb,
                &fb::FetchRequestArgs {
                    max_wait_ms: r.max_wait_ms,
                    min_bytes: r.min_bytes,
                    max_bytes: r.max_bytes,
                    topics,
                },
            );
            (fb::RequestBody::FetchRequest, o.as_union_value())
        }
        RequestBody::ListOffsets(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            fb::ListOffsetsPartition::create(
                                fbb,
                                &fb::ListOffsetsPartitionArgs {
                                    partition: partition_to_wire(p.partition),
                                    timestamp: p.spec.to_wire(),
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::ListOffsetsTopic::create(
                        fbb,
                        &fb::ListOffsetsTopicArgs { name, partitions },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::ListOffsetsRequest::create(fbb, &fb::ListOffsetsRequestArgs { topics });
            (fb::RequestBody::ListOffsetsRequest, o.as_union_value())
        }
        RequestBody::FindCoordinator(r) => group::encode_find_coordinator(fbb, r),
        RequestBody::JoinGroup(r) => group::encode_join_group(fbb, r),
        RequestBody::SyncGroup(r) => group::encode_sync_group(fbb, r),
        RequestBody::Heartbeat(r) => group::encode_heartbeat(fbb, r),
        RequestBody::LeaveGroup(r) => group::encode_leave_group(fbb, r),
        RequestBody::OffsetCommit(r) => group::encode_offset_commit(fbb, r),
        RequestBody::OffsetFetch(r) => group::encode_offset_fetch(fbb, r),
        RequestBody::ListGroups(r) => group::encode_list_groups(fbb, r),
        RequestBody::DescribeGroups(r) => group::encode_describe_groups(fbb, r),
        RequestBody::DeleteGroups(r) => group::encode_delete_groups(fbb, r),
    }
}
