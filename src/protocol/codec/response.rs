//! Responses: broker encodes, client decodes (see the parent module's invariants).

use bytes::Bytes;

use crate::protocol::records::Records;
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::group_response as group;
use super::*;

// ------------------------------------------------------------------ responses

/// Decodes a broker response (the client side). Errors carry
/// `ErrorCode::CorruptData` and the correlation id when readable.
pub fn decode_response(frame: &Bytes, limits: &DecodeLimits) -> Result<Response, DecodeError> {
    let opts = limits.verifier_options();
    let root = match flatbuffers::root_with_opts::<fb::Response>(&opts, frame) {
        Ok(r) => r,
        Err(e) => {
            return Err(decode_err(
                peek_correlation_id(frame).unwrap_or(0),
                ErrorCode::CorruptData,
                format!("response does not verify as a FlatBuffer: {e}"),
            ))
        }
    };
    let cid = root.correlation_id();
    let error = wire_error(root.error_code(), root.error_message());
    let body = decode_response_body(frame, &root)
        .map_err(|m| decode_err(cid, ErrorCode::CorruptData, m))?;
    Ok(Response {
        correlation_id: cid,
        error,
        body,
    })
}

fn decode_response_body(frame: &Bytes, root: &fb::Response<'_>) -> R<Option<ResponseBody>> {
    const MISSING: &str = "missing body";
    let t = root.body_type();
    Ok(Some(match t {
        fb::ResponseBody::NONE => return Ok(None),
        fb::ResponseBody::ApiVersionsResponse => {
            let b = root.body_as_api_versions_response().ok_or(MISSING)?;
            let apis = map_vec(b.apis(), |a| {
                Ok(api_from_wire(a.api()).map(|api| ApiVersionRange {
                    api,
                    min_version: a.min_version(),
                    max_version: a.max_version(),
                }))
            })?
            .into_iter()
            .flatten()
            .collect();
            ResponseBody::ApiVersions(ApiVersionsResponse {
                apis,
                broker_software: b.broker_software().unwrap_or_default().to_string(),
                node_id: b.node_id(),
                shard_count: u32::try_from(b.shard_count())
                    .map_err(|_| format!("shard_count {} is negative", b.shard_count()))?,
            })
        }
        fb::ResponseBody::InitProducerIdResponse => {
            let b = root.body_as_init_producer_id_response().ok_or(MISSING)?;
            if b.producer_id() < 0 || b.producer_epoch() < 0 {
                return Err(format!(
                    "init_producer_id: producer_id {} epoch {} (both must be >= 0)",
                    b.producer_id(),
                    b.producer_epoch()
                ));
            }
            ResponseBody::InitProducerId(InitProducerIdResponse {
                identity: ProducerIdentity {
                    producer_id: b.producer_id(),
                    producer_epoch: b.producer_epoch(),
                },
            })
        }
        fb::ResponseBody::CreateTopicResponse => {
            let b = root.body_as_create_topic_response().ok_or(MISSING)?;
            ResponseBody::CreateTopic(CreateTopicResponse {
                name: b.name().unwrap_or_default().to_string(),
            })
        }
        fb::ResponseBody::DeleteTopicResponse => {
            let b = root.body_as_delete_topic_response().ok_or(MISSING)?;
            ResponseBody::DeleteTopic(DeleteTopicResponse {
                name: b.name().unwrap_or_default().to_string(),
            })
        }
        fb::ResponseBody::DeleteRecordsResponse => {
            let b = root.body_as_delete_records_response().ok_or(MISSING)?;
            let ctx = format!("delete_records: partition {}", b.partition());
            ResponseBody::DeleteRecords(DeleteRecordsResponse {
                topic: b.topic().unwrap_or_default().to_string(),
                partition: partition_from_wire(b.partition(), &ctx)?,
                log_start_offset: offset_from_wire(b.log_start_offset(), "log_start_offset", &ctx)?,
            })
        }
        fb::ResponseBody::AlterTopicConfigResponse => {
            let b = root.body_as_alter_topic_config_response().ok_or(MISSING)?;
            ResponseBody::AlterTopicConfig(AlterTopicConfigResponse {
                name: b.name().unwrap_or_default().to_string(),
                configs: configs_from_wire(b.configs())?,
            })
        }
        fb::ResponseBody::MetadataResponse => {
            let b = root.body_as_metadata_response().ok_or(MISSING)?;
            let brokers = map_vec(b.brokers(), |br| {
                Ok(BrokerInfo {
                    node_id: br.node_id(),
                    host: br.host().unwrap_or_default().to_string(),
                    port: u16::try_from(br.port())
                        .map_err(|_| format!("broker port {} is out of range", br.port()))?,
                })
            })?;
            let topics = map_vec(b.topics(), |t| {
                let ctx = format!("metadata: topic '{}'", t.name());
                let partitions = map_vec(t.partitions(), |p| {
                    let ctx = format!("{ctx} partition {}", p.partition());
                    Ok(PartitionInfo {
                        partition: partition_from_wire(p.partition(), &ctx)?,
                        leader_node: p.leader_node(),
                        leader_shard: usize::try_from(p.leader_shard())
                            .map_err(|_| format!("{ctx}: leader_shard is negative"))?,
                        log_start_offset: offset_from_wire(
                            p.log_start_offset(),
                            "log_start_offset",
                            &ctx,
                        )?,
                        log_end_offset: offset_from_wire(
                            p.log_end_offset(),
                            "log_end_offset",
                            &ctx,
                        )?,
                        high_watermark: offset_from_wire(
                            p.high_watermark(),
                            "high_watermark",
                            &ctx,
                        )?,
                    })
                })?;
                Ok(TopicInfo {
                    name: t.name().to_string(),
                    error: wire_error(t.error_code(), t.error_message()),
                    partitions,
                    configs: configs_from_wire(t.configs())?,
                })
            })?;
            ResponseBody::Metadata(MetadataResponse { brokers, topics })
        }
        fb::ResponseBody::ProduceResponse => {
            let b = root.body_as_produce_response().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let ctx = format!("produce: topic '{}'", t.name());
                let partitions = map_vec(t.partitions(), |p| {
                    let partition = partition_from_wire(p.partition(), &ctx)?;
                    let ctx = format!("{ctx} partition {partition}");
                    let result = match wire_error(p.error_code(), p.error_message()) {
                        Some(e) => Err(e),
                        None => Ok(offset_from_wire(p.base_offset(), "base_offset", &ctx)?),
                    };
                    Ok(ProducePartitionResult {
                        partition,
                        result,
                        log_start_offset: opt_offset_from_wire(
                            p.log_start_offset(),
                            "log_start_offset",
                            &ctx,
                        )?,
                    })
                })?;
                Ok(ProduceTopicResult {
                    name: t.name().to_string(),
                    partitions,
                })
            })?;
            ResponseBody::Produce(ProduceResponse { topics })
        }
        fb::ResponseBody::FetchResponse => {
            let b = root.body_as_fetch_response().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let ctx = format!("fetch: topic '{}'", t.name());
                let partitions = map_vec(t.partitions(), |p| {
                    let partition = partition_from_wire(p.partition(), &ctx)?;
                    let ctx = format!("{ctx} partition {partition}");
                    Ok(FetchPartitionResult {
                        partition,
                        error: wire_error(p.error_code(), p.error_message()),
                        high_watermark: opt_offset_from_wire(
                            p.high_watermark(),
                            "high_watermark",
                            &ctx,
                        )?,
                        log_start_offset: opt_offset_from_wire(
                            p.log_start_offset(),
                            "log_start_offset",
                            &ctx,
                        )?,
                        log_end_offset: opt_offset_from_wire(
                            p.log_end_offset(),
                            "log_end_offset",
                            &ctx,
                        )?,
                        records: Records::from(bytes_of(frame, p.records())),
                    })
                })?;
                Ok(FetchTopicResult {
                    name: t.name().to_string(),
                    partitions,
                })
            })?;
            ResponseBody::Fetch(FetchResponse { topics })
        }
        fb::ResponseBody::ListOffsetsResponse => {
            let b = root.body_as_list_offsets_response().ok_or(MISSING)?;
            let topics = map_vec(b.topics(), |t| {
                let ctx = format!("list_offsets: topic '{}'", t.name());
                let partitions = map_vec(t.partitions(), |p| {
                    let partition = partition_from_wire(p.partition(), &ctx)?;
                    let ctx = format!("{ctx} partition {partition}");
                    let result = match wire_error(p.error_code(), p.error_message()) {
                        Some(e) => Err(e),
                        None => Ok((offset_from_wire(p.offset(), "offset", &ctx)?, p.timestamp())),
                    };
                    Ok(ListOffsetsPartitionResult { partition, result })
                })?;
                Ok(ListOffsetsTopicResult {
                    name: t.name().to_string(),
                    partitions,
                })
            })?;
            ResponseBody::ListOffsets(ListOffsetsResponse { topics })
        }
        fb::ResponseBody::FindCoordinatorResponse => {
            let b = root.body_as_find_coordinator_response().ok_or(MISSING)?;
            ResponseBody::FindCoordinator(group::decode_find_coordinator(b)?)
        }
        fb::ResponseBody::JoinGroupResponse => {
            let b = root.body_as_join_group_response().ok_or(MISSING)?;
            ResponseBody::JoinGroup(group::decode_join_group(frame, b)?)
        }
        fb::ResponseBody::SyncGroupResponse => {
            let b = root.body_as_sync_group_response().ok_or(MISSING)?;
            ResponseBody::SyncGroup(group::decode_sync_group(frame, b))
        }
        fb::ResponseBody::HeartbeatResponse => {
            let b = root.body_as_heartbeat_response().ok_or(MISSING)?;
            ResponseBody::Heartbeat(group::decode_heartbeat(b))
        }
        fb::ResponseBody::LeaveGroupResponse => {
            let b = root.body_as_leave_group_response().ok_or(MISSING)?;
            ResponseBody::LeaveGroup(group::decode_leave_group(b)?)
        }
        fb::ResponseBody::OffsetCommitResponse => {
            let b = root.body_as_offset_commit_response().ok_or(MISSING)?;
            ResponseBody::OffsetCommit(group::decode_offset_commit(b)?)
        }
        fb::ResponseBody::OffsetFetchResponse => {
            let b = root.body_as_offset_fetch_response().ok_or(MISSING)?;
            ResponseBody::OffsetFetch(group::decode_offset_fetch(b)?)
        }
        fb::ResponseBody::ListGroupsResponse => {
            let b = root.body_as_list_groups_response().ok_or(MISSING)?;
            ResponseBody::ListGroups(group::decode_list_groups(b)?)
        }
        fb::ResponseBody::DescribeGroupsResponse => {
            let b = root.body_as_describe_groups_response().ok_or(MISSING)?;
            ResponseBody::DescribeGroups(group::decode_describe_groups(frame, b)?)
        }
        fb::ResponseBody::DeleteGroupsResponse => {
            let b = root.body_as_delete_groups_response().ok_or(MISSING)?;
            ResponseBody::DeleteGroups(group::decode_delete_groups(b)?)
        }
        other => return Err(format!("unknown response type {}", other.0)),
    }))
}

pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256 + fetch_records_bytes(resp));
    finish_response(&mut fbb, resp, None);
    fbb.finished_data().to_vec()
}

/// Record bytes of a fetch response (0 for other responses).
fn fetch_records_bytes(resp: &Response) -> usize {
    match &resp.body {
        Some(ResponseBody::Fetch(f)) => f
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.len() + 96)
            .sum::<usize>(),
        _ => 0,
    }
}

/// Builds the root table of `resp` into `fbb` and finishes it.
fn finish_response<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    resp: &Response,
    tails: Option<&mut Tails<'a>>,
) {
    let body = resp
        .body
        .as_ref()
        .map(|b| encode_response_body(fbb, b, tails));
    let (error_code, error_message) = error_to_wire(fbb, resp.error.as_ref());
    let root = fb::Response::create(
        fbb,
        &fb::ResponseArgs {
            correlation_id: resp.correlation_id,
            error_code,
            error_message,
            body_type: body.map(|b| b.0).unwrap_or(fb::ResponseBody::NONE),
            body: body.map(|b| b.1),
        },
    );
    fbb.finish(root, None);
}

/// Fetch records kept out of the FlatBuffer: each partition table's
/// `records` field first points at a shared empty vector (the placeholder)
/// and is re-pointed past the end of the buffer, where the records follow.
struct Tails<'a> {
    placeholder: WIPOffset<flatbuffers::Vector<'a, u8>>,
    list: Vec<(WIPOffset<fb::FetchPartitionResult<'a>>, Records)>,
}

/// Encodes a response as the buffers of one frame payload, in order. A fetch
/// response's record bytes are not copied: the FlatBuffer comes first and
/// each partition's records follow it as a `[u32 length][bytes]` vector
/// (4-byte aligned) that its table points to, so the buffers can be written
/// with one vectored write. The payload decodes exactly as
/// [`encode_response`]'s does.
pub fn encode_response_parts(resp: &Response) -> Vec<Bytes> {
    if fetch_records_bytes(resp) == 0 {
        return vec![Bytes::from(encode_response(resp))];
    }
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let placeholder = fbb.create_vector::<u8>(&[]);
    let mut tails = Tails {
        placeholder,
        list: Vec::new(),
    };
    finish_response(&mut fbb, resp, Some(&mut tails));
    let (mut buf, head) = fbb.collapse();
    let fb_len = buf.len() - head;
    let pieces: usize = tails.list.iter().map(|(_, r)| r.pieces().len()).sum();
    let mut parts = Vec::with_capacity(1 + tails.list.len() + pieces);
    // Lengths and alignment padding of the appended vectors, in one buffer.
    let mut headers = Vec::with_capacity(8 * tails.list.len());
    let mut tail_pos = fb_len;
    let mut spans = Vec::with_capacity(tails.list.len());
    for (table, records) in &tails.list {
        let pad = (4 - tail_pos % 4) % 4;
        let header_start = headers.len();
        headers.resize(header_start + pad, 0);
        tail_pos += pad;
        let field = records_field_position(&buf[head..], *table);
        let relative = u32::try_from(tail_pos - field).unwrap_or(u32::MAX);
        buf[head + field..head + field + 4].copy_from_slice(&relative.to_le_bytes());
        let len = u32::try_from(records.len()).unwrap_or(u32::MAX);
        headers.extend_from_slice(&len.to_le_bytes());
        spans.push((header_start, headers.len(), records.clone()));
        tail_pos += 4 + records.len();
    }
    let mut fb_bytes = Bytes::from(buf);
    parts.push(fb_bytes.split_off(head));
    let headers = Bytes::from(headers);
    for (from, to, records) in spans {
        parts.push(headers.slice(from..to));
        parts.extend(records.into_pieces());
    }
    debug_assert_eq!(parts.iter().map(Bytes::len).sum::<usize>(), tail_pos);
    parts
}

/// Position (from the start of the finished buffer `data`) of the `records`
/// uoffset field of the FetchPartitionResult table `table`.
fn records_field_position(data: &[u8], table: WIPOffset<fb::FetchPartitionResult<'_>>) -> usize {
    let u16_at = |at: usize| u16::from_le_bytes([data[at], data[at + 1]]) as usize;
    let table_pos = data.len() - table.value() as usize;
    let soffset = i32::from_le_bytes([
        data[table_pos],
        data[table_pos + 1],
        data[table_pos + 2],
        data[table_pos + 3],
    ]);
    let vtable = usize::try_from(table_pos as i64 - i64::from(soffset))
        .unwrap_or_else(|_| panic!("vtable of a table we built is out of the buffer"));
    let slot = fb::FetchPartitionResult::VT_RECORDS as usize;
    assert!(
        slot + 2 <= u16_at(vtable),
        "records slot missing from the vtable"
    );
    let field = u16_at(vtable + slot);
    assert!(field != 0, "records field not written");
    table_pos + field
}

fn encode_response_body<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    body: &ResponseBody,
    mut tails: Option<&mut Tails<'a>>,
) -> (fb::ResponseBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match body {
        ResponseBody::ApiVersions(r) => {
            let apis: Vec<_> = r
                .apis
                .iter()
                .map(|a| {
                    fb::ApiVersionRange::create(
                        fbb,
                        &fb::ApiVersionRangeArgs {
                            api: api_to_wire(a.api),
                            min_version: a.min_version,
                            max_version: a.max_version,
                        },
                    )
                })
                .collect();
            let apis = Some(fbb.create_vector(&apis));
            let broker_software = Some(fbb.create_string(&r.broker_software));
            let o = fb::ApiVersionsResponse::create(
                fbb,
                &fb::ApiVersionsResponseArgs {
                    apis,
                    broker_software,
                    node_id: r.node_id,
                    shard_count: i32::try_from(r.shard_count).unwrap_or(i32::MAX),
                },
            );
            (fb::ResponseBody::ApiVersionsResponse, o.as_union_value())
        }
        ResponseBody::CreateTopic(r) => {
            let name = Some(fbb.create_string(&r.name));
            let o = fb::CreateTopicResponse::create(fbb, &fb::CreateTopicResponseArgs { name });
            (fb::ResponseBody::CreateTopicResponse, o.as_union_value())
        }
        ResponseBody::DeleteTopic(r) => {
            let name = Some(fbb.create_string(&r.name));
            let o = fb::DeleteTopicResponse::create(fbb, &fb::DeleteTopicResponseArgs { name });
            (fb::ResponseBody::DeleteTopicResponse, o.as_union_value())
        }
        ResponseBody::DeleteRecords(r) => {
            let topic = Some(fbb.create_string(&r.topic));
            let o = fb::DeleteRecordsResponse::create(
                fbb,
                &fb::DeleteRecordsResponseArgs {
                    topic,
                    partition: partition_to_wire(r.partition),
                    log_start_offset: offset_to_wire(r.log_start_offset),
                },
            );
            (fb::ResponseBody::DeleteRecordsResponse, o.as_union_value())
        }
        ResponseBody::InitProducerId(r) => {
            let o = fb::InitProducerIdResponse::create(
                fbb,
                &fb::InitProducerIdResponseArgs {
                    producer_id: r.identity.producer_id,
                    producer_epoch: r.identity.producer_epoch,
                },
            );
            (fb::ResponseBody::InitProducerIdResponse, o.as_union_value())
        }
        ResponseBody::AlterTopicConfig(r) => {
            let name = Some(fbb.create_string(&r.name));
            let configs = configs_to_wire(fbb, &r.configs);
            let o = fb::AlterTopicConfigResponse::create(
                fbb,
                &fb::AlterTopicConfigResponseArgs { name, configs },
            );
            (
                fb::ResponseBody::AlterTopicConfigResponse,
                o.as_union_value(),
            )
        }
        ResponseBody::Metadata(r) => {
            let brokers: Vec<_> = r
                .brokers
                .iter()
                .map(|b| {
                    let host = Some(fbb.create_string(&b.host));
                    fb::BrokerInfo::create(
                        fbb,
                        &fb::BrokerInfoArgs {
                            node_id: b.node_id,
                            host,
                            port: i32::from(b.port),
                        },
                    )
                })
                .collect();
            let brokers = Some(fbb.create_vector(&brokers));
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            fb::PartitionInfo::create(
                                fbb,
                                &fb::PartitionInfoArgs {
                                    partition: partition_to_wire(p.partition),
                                    leader_node: p.leader_node,
                                    leader_shard: i32::try_from(p.leader_shard).unwrap_or(i32::MAX),
                                    log_start_offset: offset_to_wire(p.log_start_offset),
                                    log_end_offset: offset_to_wire(p.log_end_offset),
                                    high_watermark: offset_to_wire(p.high_watermark),
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let configs = configs_to_wire(fbb, &t.configs);
                    let (error_code, error_message) = error_to_wire(fbb, t.error.as_ref());
                    let name = Some(fbb.create_string(&t.name));
                    fb::TopicInfo::create(
                        fbb,
                        &fb::TopicInfoArgs {
                            name,
                            error_code,
                            error_message,
                            partitions,
                            configs,
                        },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o =
                fb::MetadataResponse::create(fbb, &fb::MetadataResponseArgs { brokers, topics });
            (fb::ResponseBody::MetadataResponse, o.as_union_value())
        }
        ResponseBody::Produce(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let (error_code, error_message) =
                                error_to_wire(fbb, p.result.as_ref().err());
                            fb::ProducePartitionResult::create(
                                fbb,
                                &fb::ProducePartitionResultArgs {
                                    partition: partition_to_wire(p.partition),
                                    error_code,
                                    error_message,
                                    base_offset: p
                                        .result
                                        .as_ref()
                                        .map(|o| offset_to_wire(*o))
                                        .unwrap_or(-1),
                                    log_start_offset: opt_offset_to_wire(p.log_start_offset),
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::ProduceTopicResult::create(
                        fbb,
                        &fb::ProduceTopicResultArgs { name, partitions },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::ProduceResponse::create(fbb, &fb::ProduceResponseArgs { topics });
            (fb::ResponseBody::ProduceResponse, o.as_union_value())
        }
        ResponseBody::Fetch(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let records = if p.records.is_empty() {
                                None
                            } else if let Some(t) = tails.as_deref() {
                                Some(t.placeholder)
                            } else {
                                Some(fbb.create_vector(&p.records.to_bytes()[..]))
                            };
                            let (error_code, error_message) = error_to_wire(fbb, p.error.as_ref());
                            let table = fb::FetchPartitionResult::create(
                                fbb,
                                &fb::FetchPartitionResultArgs {
                                    partition: partition_to_wire(p.partition),
                                    error_code,
                                    error_message,
                                    high_watermark: opt_offset_to_wire(p.high_watermark),
                                    log_start_offset: opt_offset_to_wire(p.log_start_offset),
                                    log_end_offset: opt_offset_to_wire(p.log_end_offset),
                                    records,
                                },
                            );
                            if let (Some(t), false) = (tails.as_deref_mut(), p.records.is_empty()) {
                                t.list.push((table, p.records.clone()));
                            }
                            table
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::FetchTopicResult::create(
                        fbb,
                        &fb::FetchTopicResultArgs { name, partitions },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::FetchResponse::create(fbb, &fb::FetchResponseArgs { topics });
            (fb::ResponseBody::FetchResponse, o.as_union_value())
        }
        ResponseBody::ListOffsets(r) => {
            let topics: Vec<_> = r
                .topics
                .iter()
                .map(|t| {
                    let parts: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let (error_code, error_message) =
                                error_to_wire(fbb, p.result.as_ref().err());
                            let (offset, timestamp) = match &p.result {
                                Ok((o, ts)) => (offset_to_wire(*o), *ts),
                                Err(_) => (-1, -1),
                            };
                            fb::ListOffsetsPartitionResult::create(
                                fbb,
                                &fb::ListOffsetsPartitionResultArgs {
                                    partition: partition_to_wire(p.partition),
                                    error_code,
                                    error_message,
                                    offset,
                                    timestamp,
                                },
                            )
                        })
                        .collect();
                    let partitions = Some(fbb.create_vector(&parts));
                    let name = Some(fbb.create_string(&t.name));
                    fb::ListOffsetsTopicResult::create(
                        fbb,
                        &fb::ListOffsetsTopicResultArgs { name, partitions },
                    )
                })
                .collect();
            let topics = Some(fbb.create_vector(&topics));
            let o = fb::ListOffsetsResponse::create(fbb, &fb::ListOffsetsResponseArgs { topics });
            (fb::ResponseBody::ListOffsetsResponse, o.as_union_value())
        }
        ResponseBody::FindCoordinator(r) => group::encode_find_coordinator(fbb, r),
        ResponseBody::JoinGroup(r) => group::encode_join_group(fbb, r),
        ResponseBody::SyncGroup(r) => group::encode_sync_group(fbb, r),
        ResponseBody::Heartbeat(r) => group::encode_heartbeat(fbb, r),
        ResponseBody::LeaveGroup(r) => group::encode_leave_group(fbb, r),
        ResponseBody::OffsetCommit(r) => group::encode_offset_commit(fbb, r),
        ResponseBody::OffsetFetch(r) => group::encode_offset_fetch(fbb, r),
        ResponseBody::ListGroups(r) => group::encode_list_groups(fbb, r),
        ResponseBody::DescribeGroups(r) => group::encode_describe_groups(fbb, r),
        ResponseBody::DeleteGroups(r) => group::encode_delete_groups(fbb, r),
    }
}
