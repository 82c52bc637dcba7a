//! Typed messages <-> FlatBuffers. The only place that touches generated code.
//!
//! Invariants:
//! - `decode_request` / `decode_response` verify the buffer exactly once with
//!   [`DecodeLimits`] and then copy out only names and numbers; record batches
//!   become `Bytes` slices of the input frame (`frame.slice_ref`, no copy).
//! - Nothing read from the wire is cast with wrapping: a negative partition,
//!   offset or count where the message type is unsigned is a decode error.
//! - Decoding never panics, whatever the input bytes.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};

use super::error::{ErrorCode, WireError};
use super::generated::fb;
use super::ids::CorrelationId;
use super::messages::*;

/// Verifier limits applied at ingress.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_tables: usize,
    pub max_depth: usize,
    pub max_apparent_size_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_tables: 1_000_000,
            max_depth: 64,
            max_apparent_size_bytes: 1 << 31,
        }
    }
}

impl DecodeLimits {
    fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_apparent_size_bytes,
            ignore_missing_null_terminator: false,
        }
    }
}

/// A request that could not be decoded. `correlation_id` is set when the
/// envelope verified far enough to read it (0 otherwise).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub correlation_id: CorrelationId,
    pub error: WireError,
}

type R<T> = Result<T, String>;

fn decode_err(correlation_id: CorrelationId, code: ErrorCode, message: String) -> DecodeError {
    DecodeError {
        correlation_id,
        error: WireError::new(code, message),
    }
}

/// Reads `correlation_id` (field 0, u32) of the root table of a buffer that
/// did not verify as a whole, with every access bounds-checked. Returns None
/// when the envelope itself is unreadable.
fn peek_correlation_id(buf: &[u8]) -> Option<CorrelationId> {
    let u32_at = |at: usize| -> Option<u32> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = buf.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    };
    let table = u32_at(0)? as usize;
    let soffset = u32_at(table)? as i32 as i64;
    let vtable = usize::try_from(table as i64 - soffset).ok()?;
    let vtable_len = u16_at(vtable)? as usize;
    let table_len = u16_at(vtable.checked_add(2)?)? as usize;
    // Field 0 sits at vtable + 4.
    if vtable_len < 6 {
        return Some(0);
    }
    let field = u16_at(vtable + 4)? as usize;
    if field == 0 {
        return Some(0);
    }
    if field + 4 > table_len {
        return None;
    }
    u32_at(table.checked_add(field)?)
}

// ------------------------------------------------------------------ helpers

fn partition_from_wire(v: i32, ctx: &str) -> R<u32> {
    u32::try_from(v).map_err(|_| format!("{ctx}: partition {v} is negative"))
}

fn offset_from_wire(v: i64, what: &str, ctx: &str) -> R<u64> {
    u64::try_from(v).map_err(|_| format!("{ctx}: {what} {v} is negative"))
}

/// -1 (the schema default) means absent; other negatives are errors.
fn opt_offset_from_wire(v: i64, what: &str, ctx: &str) -> R<Option<u64>> {
    match v {
        -1 => Ok(None),
        v => offset_from_wire(v, what, ctx).map(Some),
    }
}

fn opt_offset_to_wire(v: Option<u64>) -> i64 {
    v.map(offset_to_wire).unwrap_or(-1)
}

/// Offsets above i64::MAX cannot be represented on the wire; they saturate
/// (no layer produces them).
fn offset_to_wire(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn partition_to_wire(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

fn wire_error(code: fb::ErrorCode, message: Option<&str>) -> Option<WireError> {
    let code = ErrorCode::from_wire(code);
    if code == ErrorCode::None {
        None
    } else {
        Some(WireError::new(code, message.unwrap_or_default()))
    }
}

fn error_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    e: Option<&WireError>,
) -> (fb::ErrorCode, Option<WIPOffset<&'a str>>) {
    match e {
        None => (fb::ErrorCode::None, None),
        Some(e) => (
            e.code.to_wire(),
            if e.message.is_empty() {
                None
            } else {
                Some(fbb.create_string(&e.message))
            },
        ),
    }
}

fn acks_to_wire(a: Acks) -> fb::Acks {
    match a {
        Acks::None => fb::Acks::None,
        Acks::Leader => fb::Acks::Leader,
        Acks::All => fb::Acks::All,
    }
}

fn acks_from_wire(a: fb::Acks) -> R<Acks> {
    match a {
        fb::Acks::None => Ok(Acks::None),
        fb::Acks::Leader => Ok(Acks::Leader),
        fb::Acks::All => Ok(Acks::All),
        other => Err(format!("produce: unknown acks value {}", other.0)),
    }
}

fn api_to_wire(a: ApiKey) -> fb::ApiKey {
    match a {
        ApiKey::ApiVersions => fb::ApiKey::ApiVersions,
        ApiKey::CreateTopic => fb::ApiKey::CreateTopic,
        ApiKey::DeleteTopic => fb::ApiKey::DeleteTopic,
        ApiKey::Metadata => fb::ApiKey::Metadata,
        ApiKey::Produce => fb::ApiKey::Produce,
        ApiKey::Fetch => fb::ApiKey::Fetch,
        ApiKey::ListOffsets => fb::ApiKey::ListOffsets,
    }
}

fn api_from_wire(a: fb::ApiKey) -> Option<ApiKey> {
    Some(match a {
        fb::ApiKey::ApiVersions => ApiKey::ApiVersions,
        fb::ApiKey::CreateTopic => ApiKey::CreateTopic,
        fb::ApiKey::DeleteTopic => ApiKey::DeleteTopic,
        fb::ApiKey::Metadata => ApiKey::Metadata,
        fb::ApiKey::Produce => ApiKey::Produce,
        fb::ApiKey::Fetch => ApiKey::Fetch,
        fb::ApiKey::ListOffsets => ApiKey::ListOffsets,
        _ => return None,
    })
}

/// Maps an optional FlatBuffers vector of tables through `f`.
fn map_vec<'a, T: flatbuffers::Follow<'a> + 'a, U>(
    v: Option<Vector<'a, ForwardsUOffset<T>>>,
    mut f: impl FnMut(T::Inner) -> R<U>,
) -> R<Vec<U>> {
    match v {
        None => Ok(Vec::new()),
        Some(v) => {
            let mut out = Vec::with_capacity(v.len());
            for item in v.iter() {
                out.push(f(item)?);
            }
            Ok(out)
        }
    }
}

fn configs_from_wire<'a>(
    v: Option<Vector<'a, ForwardsUOffset<fb::ConfigEntry<'a>>>>,
) -> R<Vec<ConfigEntry>> {
    map_vec(v, |c| {
        Ok(ConfigEntry {
            key: c.key().to_string(),
            value: c.value().to_string(),
        })
    })
}

fn configs_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    configs: &[ConfigEntry],
) -> Option<WIPOffset<Vector<'a, ForwardsUOffset<fb::ConfigEntry<'a>>>>> {
    if configs.is_empty() {
        return None;
    }
    let items: Vec<_> = configs
        .iter()
        .map(|c| {
            let key = Some(fbb.create_string(&c.key));
            let value = Some(fbb.create_string(&c.value));
            fb::ConfigEntry::create(fbb, &fb::ConfigEntryArgs { key, value })
        })
        .collect();
    Some(fbb.create_vector(&items))
}

fn bytes_of(frame: &Bytes, v: Option<Vector<'_, u8>>) -> Bytes {
    match v {
        Some(v) if !v.is_empty() => frame.slice_ref(v.bytes()),
        _ => Bytes::new(),
    }
}

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
        other => return Err(format!("unknown request type {}", other.0)),
    })
}

pub fn encode_request(req: &Request) -> Vec<u8> {
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
    fbb.finished_data().to_vec()
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
    }
}

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
                        records: bytes_of(frame, p.records()),
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
        other => return Err(format!("unknown response type {}", other.0)),
    }))
}

pub fn encode_response(resp: &Response) -> Vec<u8> {
    let hint = match &resp.body {
        Some(ResponseBody::Fetch(f)) => f
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.len() + 96)
            .sum::<usize>(),
        _ => 0,
    };
    let mut fbb = FlatBufferBuilder::with_capacity(256 + hint);
    let body = resp
        .body
        .as_ref()
        .map(|b| encode_response_body(&mut fbb, b));
    let (error_code, error_message) = error_to_wire(&mut fbb, resp.error.as_ref());
    let root = fb::Response::create(
        &mut fbb,
        &fb::ResponseArgs {
            correlation_id: resp.correlation_id,
            error_code,
            error_message,
            body_type: body.map(|b| b.0).unwrap_or(fb::ResponseBody::NONE),
            body: body.map(|b| b.1),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn encode_response_body(
    fbb: &mut FlatBufferBuilder<'_>,
    body: &ResponseBody,
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
                            } else {
                                Some(fbb.create_vector(&p.records[..]))
                            };
                            let (error_code, error_message) = error_to_wire(fbb, p.error.as_ref());
                            fb::FetchPartitionResult::create(
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
                            )
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
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
