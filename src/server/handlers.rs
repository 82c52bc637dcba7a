//! Request handlers: route each request to the shards that own its data and
//! map the outcome to a response. Kept thin: the work is in `shard`.
//!
//! Owns: [`start`] (the synchronous part of a request: a produce's appends
//! and forwards) and the per-API response building.
//!
//! Invariants: per-partition problems (unknown topic/partition, too large,
//! corrupt batch, offset out of range, storage error) are answered per
//! partition, never as a failed request; admin errors are request-level;
//! results keep the request's topic and partition order.

use std::rc::Rc;
use std::time::Duration;

use crate::protocol::messages::*;
use crate::protocol::{CorrelationId, ErrorCode, WireError};
use crate::shard::mesh::{InfoItem, OffsetItem, ProduceItem, ShardReply, ShardRequest};
use crate::shard::ops::LocalBoxFuture;
use crate::shard::route::ProduceInFlight;
use crate::shard::Shard;

use super::fetch;

/// A request whose ordered part is done; [`Pending::finish`] produces the response.
pub enum Pending {
    Produce {
        correlation_id: CorrelationId,
        /// (topic name, partition ids, index of each in the flat item list
        /// or the immediate error), in request order.
        layout: Vec<TopicLayout>,
        in_flight: ProduceInFlight,
        /// Longest wait for acknowledgement, in ms (0: no limit).
        timeout_ms: u32,
    },
    Later(LocalBoxFuture<'static, Response>),
}

impl Pending {
    pub async fn finish(self) -> Response {
        match self {
            Pending::Later(f) => f.await,
            Pending::Produce {
                correlation_id,
                layout,
                in_flight,
                timeout_ms,
            } => {
                let finished = if timeout_ms == 0 {
                    Some(in_flight.finish().await)
                } else {
                    futures_lite::future::or(async { Some(in_flight.finish().await) }, async {
                        crate::timer::sleep(Duration::from_millis(timeout_ms as u64)).await;
                        None
                    })
                    .await
                };
                let finished = finished.unwrap_or_else(|| {
                    let e = WireError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "not acknowledged within timeout_ms ({timeout_ms}); the batch may still be stored"
                        ),
                    );
                    (0..layout.iter().map(|(_, p)| p.len()).sum::<usize>())
                        .map(|_| Err(e.clone()))
                        .collect()
                });
                let mut results: Vec<Option<PartResult>> = finished.into_iter().map(Some).collect();
                let topics = layout
                    .into_iter()
                    .map(|(name, parts)| ProduceTopicResult {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|(partition, slot)| {
                                let r = match slot {
                                    Ok(i) => results.get_mut(i).and_then(Option::take).unwrap_or(
                                        Err(WireError::new(ErrorCode::Internal, "missing result")),
                                    ),
                                    Err(e) => Err(e),
                                };
                                ProducePartitionResult {
                                    partition,
                                    log_start_offset: r.as_ref().ok().map(|a| a.log_start_offset),
                                    result: r.map(|a| a.base_offset),
                                }
                            })
                            .collect(),
                    })
                    .collect();
                Response::ok(
                    correlation_id,
                    ResponseBody::Produce(ProduceResponse { topics }),
                )
            }
        }
    }
}

type PartResult = Result<crate::partition::AppendResult, WireError>;

/// A produce topic: its name and, per partition, the index of its item in
/// the dispatched list or the error it was refused with up front.
pub type TopicLayout = (String, Vec<(u32, Result<usize, WireError>)>);

/// Does the part of a request that must happen before the next frame is
/// read, and returns the rest.
pub async fn start(shard: &Rc<Shard>, correlation_id: CorrelationId, body: RequestBody) -> Pending {
    let s = shard.clone();
    match body {
        RequestBody::Produce(req) => produce(shard, correlation_id, req).await,
        RequestBody::ApiVersions(_) => {
            let resp = api_versions(shard, correlation_id);
            Pending::Later(Box::pin(async move { resp }))
        }
        RequestBody::CreateTopic(req) => Pending::Later(Box::pin(async move {
            let name = req.name.clone();
            let reply = s
                .call(
                    0,
                    ShardRequest::CreateTopic {
                        name: req.name,
                        partitions: req.partitions,
                        configs: req.configs,
                    },
                )
                .await;
            admin_response(correlation_id, reply, |_| {
                ResponseBody::CreateTopic(CreateTopicResponse { name })
            })
        })),
        RequestBody::DeleteTopic(req) => Pending::Later(Box::pin(async move {
            let name = req.name.clone();
            let reply = s
                .call(0, ShardRequest::DeleteTopic { name: req.name })
                .await;
            admin_response(correlation_id, reply, |_| {
                ResponseBody::DeleteTopic(DeleteTopicResponse { name })
            })
        })),
        RequestBody::Metadata(req) => {
            Pending::Later(Box::pin(
                async move { metadata(&s, correlation_id, req).await },
            ))
        }
        RequestBody::Fetch(req) => Pending::Later(Box::pin(async move {
            fetch::handle(&s, correlation_id, req).await
        })),
        RequestBody::ListOffsets(req) => Pending::Later(Box::pin(async move {
            list_offsets(&s, correlation_id, req).await
        })),
        RequestBody::DeleteRecords(req) => Pending::Later(Box::pin(async move {
            delete_records(&s, correlation_id, req).await
        })),
        RequestBody::AlterTopicConfig(req) => Pending::Later(Box::pin(async move {
            let name = req.name.clone();
            let reply = s
                .call(
                    0,
                    ShardRequest::AlterTopicConfig {
                        name: req.name,
                        configs: req.configs,
                    },
                )
                .await;
            // Shard 0 answers only after every shard has the new table entry.
            let configs = s
                .topic(&name)
                .map(|m| {
                    m.config
                        .entries()
                        .into_iter()
                        .map(|(key, value)| ConfigEntry { key, value })
                        .collect()
                })
                .unwrap_or_default();
            admin_response(correlation_id, reply, |_| {
                ResponseBody::AlterTopicConfig(AlterTopicConfigResponse { name, configs })
            })
        })),
    }
}

/// DeleteRecords: runs on the partition's owner.
async fn delete_records(
    s: &Rc<Shard>,
    correlation_id: CorrelationId,
    req: DeleteRecordsRequest,
) -> Response {
    let owner = match s.owner_of(&req.topic, req.partition) {
        Ok(o) => o,
        Err(e) => {
            return Response {
                correlation_id,
                error: Some(e),
                body: None,
            }
        }
    };
    let reply = s
        .call(
            owner,
            ShardRequest::DeleteRecords {
                topic: req.topic.clone(),
                partition: req.partition,
                before: req.before_offset,
            },
        )
        .await;
    match reply {
        ShardReply::LogStart(Ok(log_start_offset)) => Response::ok(
            correlation_id,
            ResponseBody::DeleteRecords(DeleteRecordsResponse {
                topic: req.topic,
                partition: req.partition,
                log_start_offset,
            }),
        ),
        ShardReply::LogStart(Err(e)) | ShardReply::Done(Err(e)) => Response {
            correlation_id,
            error: Some(e),
            body: None,
        },
        other => Response::error(
            correlation_id,
            ErrorCode::Internal,
            format!("unexpected reply {other:?}"),
        ),
    }
}

fn admin_response(
    correlation_id: CorrelationId,
    reply: ShardReply,
    ok: impl FnOnce(()) -> ResponseBody,
) -> Response {
    match reply {
        ShardReply::Done(Ok(())) => Response::ok(correlation_id, ok(())),
        ShardReply::Done(Err(e)) => Response {
            correlation_id,
            error: Some(e),
            body: None,
        },
        other => Response::error(
            correlation_id,
            ErrorCode::Internal,
            format!("unexpected reply {other:?}"),
        ),
    }
}

fn api_versions(shard: &Shard, correlation_id: CorrelationId) -> Response {
    let apis = [
        ApiKey::ApiVersions,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::Metadata,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::DeleteRecords,
        ApiKey::AlterTopicConfig,
    ]
    .into_iter()
    .map(|api| ApiVersionRange {
        api,
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
    })
    .collect();
    Response::ok(
        correlation_id,
        ResponseBody::ApiVersions(ApiVersionsResponse {
            apis,
            broker_software: format!("corelog {}", crate::VERSION),
            node_id: shard.config.node_id,
            shard_count: shard.count as u32,
        }),
    )
}

async fn produce(shard: &Rc<Shard>, correlation_id: CorrelationId, req: ProduceRequest) -> Pending {
    let max_batch_bytes = shard.config.limits.max_batch_bytes;
    let mut items = Vec::new();
    let mut layout = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            // Refuse oversized batches here rather than ship them to the owner.
            let slot = if p.batch.len() > max_batch_bytes as usize {
                Err(WireError::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "batch of {} bytes exceeds max_batch_bytes ({max_batch_bytes})",
                        p.batch.len()
                    ),
                ))
            } else {
                items.push(ProduceItem {
                    topic: t.name.clone(),
                    partition: p.partition,
                    batch: p.batch,
                });
                Ok(items.len() - 1)
            };
            parts.push((p.partition, slot));
        }
        layout.push((t.name, parts));
    }
    let in_flight = shard.produce_dispatch(req.acks, items).await;
    Pending::Produce {
        timeout_ms: req.timeout_ms,
        correlation_id,
        layout,
        in_flight,
    }
}

async fn metadata(
    shard: &Rc<Shard>,
    correlation_id: CorrelationId,
    req: MetadataRequest,
) -> Response {
    let names = if req.topics.is_empty() {
        shard.topic_names()
    } else {
        req.topics
    };
    let metas: Vec<_> = names.iter().map(|n| shard.topic(n)).collect();
    let mut items = Vec::new();
    for meta in metas.iter().flatten() {
        for p in 0..meta.partitions {
            items.push(InfoItem {
                topic: meta.name.clone(),
                partition: p,
            });
        }
    }
    let mut infos = shard.partition_info_many(items).await.into_iter();
    let mut topics = Vec::with_capacity(names.len());
    for (name, meta) in names.into_iter().zip(metas) {
        let Some(meta) = meta else {
            topics.push(TopicInfo {
                error: Some(WireError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic '{name}'"),
                )),
                name,
                partitions: Vec::new(),
                configs: Vec::new(),
            });
            continue;
        };
        let partitions = (0..meta.partitions)
            .map(|p| {
                let (start, end, hw) = match infos.next() {
                    Some(Ok(o)) => o,
                    Some(Err(e)) => {
                        tracing::debug!("metadata for {name}/{p}: {e}");
                        (0, 0, 0)
                    }
                    None => (0, 0, 0),
                };
                PartitionInfo {
                    partition: p,
                    leader_node: shard.config.node_id,
                    leader_shard: meta.owner(p).unwrap_or(0),
                    log_start_offset: start,
                    log_end_offset: end,
                    high_watermark: hw,
                }
            })
            .collect();
        topics.push(TopicInfo {
            name,
            error: None,
            partitions,
            configs: meta
                .config
                .entries()
                .into_iter()
                .map(|(key, value)| ConfigEntry { key, value })
                .collect(),
        });
    }
    let addr = shard.listen_addr();
    let brokers = vec![BrokerInfo {
        node_id: shard.config.node_id,
        host: addr
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| shard.config.listen.ip().to_string()),
        port: addr.map(|a| a.port()).unwrap_or(shard.config.listen.port()),
    }];
    Response::ok(
        correlation_id,
        ResponseBody::Metadata(MetadataResponse { brokers, topics }),
    )
}

async fn list_offsets(
    shard: &Rc<Shard>,
    correlation_id: CorrelationId,
    req: ListOffsetsRequest,
) -> Response {
    let items: Vec<OffsetItem> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OffsetItem {
                topic: t.name.clone(),
                partition: p.partition,
                spec: p.spec,
            })
        })
        .collect();
    let mut results = shard.list_offsets_many(items).await.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| ListOffsetsTopicResult {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| ListOffsetsPartitionResult {
                    partition: p.partition,
                    result: results
                        .next()
                        .unwrap_or(Err(WireError::new(ErrorCode::Internal, "missing result"))),
                })
                .collect(),
        })
        .collect();
    Response::ok(
        correlation_id,
        ResponseBody::ListOffsets(ListOffsetsResponse { topics }),
    )
}
