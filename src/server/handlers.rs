//! The FlatBuffers front end's handler: maps each decoded request to the
//! partition service and the answer back to a response. Only mapping lives
//! here; the work is in `service`.
//!
//! Owns: [`FlatBuffersHandler`] (the ordered part of a request: a produce's
//! appends and forwards, then the rest) and the per-API response building
//! (nested topics/partitions ↔ the service's flat, in-order item lists).
//!
//! Invariants: per-partition problems (unknown topic/partition, too large,
//! corrupt batch, offset out of range, storage error) are answered per
//! partition, never as a failed request; admin errors are request-level;
//! results keep the request's topic and partition order (the service answers
//! one result per item, in order; asserted when mapping back).
//!
//! Must not know: frames, sockets, shards, partitions.

use std::time::Duration;

use crate::protocol::messages::*;
use crate::protocol::records::Records;
use crate::protocol::{CorrelationId, WireError};
use crate::service::types::{self as svc, PartResult};
use crate::service::Service;
use crate::shard::ops::LocalBoxFuture;

use super::codec::Handler;

/// Handles Corelog's FlatBuffers requests on one shard.
pub struct FlatBuffersHandler {
    pub service: Service,
}

impl Handler<Request, Response> for FlatBuffersHandler {
    // The outer future is the ordered part; it yields the rest on purpose.
    #[allow(clippy::async_yields_async)]
    fn start(
        &self,
        req: Request,
        peer: &str,
    ) -> LocalBoxFuture<'_, LocalBoxFuture<'static, Response>> {
        let req = match super::group_handlers::start(&self.service, req, peer) {
            Ok(rest) => return Box::pin(async move { rest }),
            Err(req) => req,
        };
        Box::pin(async move { start(&self.service, req.correlation_id, req.body).await })
    }
}

fn failed(correlation_id: CorrelationId, e: WireError) -> Response {
    Response {
        correlation_id,
        error: Some(e),
        body: None,
    }
}

/// Does the part of a request that must happen before the next frame is
/// read, and returns the rest.
pub async fn start(
    service: &Service,
    correlation_id: CorrelationId,
    body: RequestBody,
) -> LocalBoxFuture<'static, Response> {
    let s = service.clone();
    let cid = correlation_id;
    match body {
        RequestBody::Produce(req) => produce(service, cid, req).await,
        RequestBody::ApiVersions(_) => {
            let resp = api_versions(service, cid);
            Box::pin(async move { resp })
        }
        RequestBody::CreateTopic(req) => Box::pin(async move {
            let name = req.name.clone();
            match s.create_topic(req.name, req.partitions, req.configs).await {
                Ok(()) => {
                    Response::ok(cid, ResponseBody::CreateTopic(CreateTopicResponse { name }))
                }
                Err(e) => failed(cid, e),
            }
        }),
        RequestBody::DeleteTopic(req) => Box::pin(async move {
            let name = req.name.clone();
            match s.delete_topic(req.name).await {
                Ok(()) => {
                    Response::ok(cid, ResponseBody::DeleteTopic(DeleteTopicResponse { name }))
                }
                Err(e) => failed(cid, e),
            }
        }),
        RequestBody::AlterTopicConfig(req) => Box::pin(async move {
            let name = req.name.clone();
            match s.alter_topic_config(req.name, req.configs).await {
                Ok(configs) => Response::ok(
                    cid,
                    ResponseBody::AlterTopicConfig(AlterTopicConfigResponse { name, configs }),
                ),
                Err(e) => failed(cid, e),
            }
        }),
        RequestBody::Metadata(req) => Box::pin(async move { metadata(&s, cid, req).await }),
        RequestBody::Fetch(req) => Box::pin(async move { fetch(&s, cid, req).await }),
        RequestBody::ListOffsets(req) => Box::pin(async move { list_offsets(&s, cid, req).await }),
        RequestBody::InitProducerId(req) => Box::pin(async move {
            match s.init_producer_id(req.current).await {
                Ok(identity) => Response::ok(
                    cid,
                    ResponseBody::InitProducerId(InitProducerIdResponse { identity }),
                ),
                Err(e) => failed(cid, e),
            }
        }),
        RequestBody::DeleteRecords(req) => Box::pin(async move {
            match s
                .delete_records(&req.topic, req.partition, req.before_offset)
                .await
            {
                Ok(log_start_offset) => Response::ok(
                    cid,
                    ResponseBody::DeleteRecords(DeleteRecordsResponse {
                        topic: req.topic,
                        partition: req.partition,
                        log_start_offset,
                    }),
                ),
                Err(e) => failed(cid, e),
            }
        }),
        // Consumer groups: answered by group_handlers before this match.
        RequestBody::FindCoordinator(_)
        | RequestBody::JoinGroup(_)
        | RequestBody::SyncGroup(_)
        | RequestBody::Heartbeat(_)
        | RequestBody::LeaveGroup(_)
        | RequestBody::OffsetCommit(_)
        | RequestBody::OffsetFetch(_)
        | RequestBody::ListGroups(_)
        | RequestBody::DescribeGroups(_)
        | RequestBody::DeleteGroups(_) => {
            unreachable!("group requests are routed by group_handlers::start")
        }
    }
}

fn api_versions(service: &Service, correlation_id: CorrelationId) -> Response {
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
        ApiKey::InitProducerId,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
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
            node_id: service.node_id(),
            shard_count: service.shard_count() as u32,
        }),
    )
}

/// Takes the next `n` results of `flat` (the service's in-order answers).
fn next_n<T>(flat: &mut std::vec::IntoIter<T>, n: usize) -> Vec<T> {
    let got: Vec<T> = flat.by_ref().take(n).collect();
    assert_eq!(
        got.len(),
        n,
        "the service answered fewer results than items"
    );
    got
}

async fn produce(
    service: &Service,
    correlation_id: CorrelationId,
    req: ProduceRequest,
) -> LocalBoxFuture<'static, Response> {
    // The shape to answer in: (topic, its partition ids), in request order.
    let mut layout: Vec<(String, Vec<u32>)> = Vec::with_capacity(req.topics.len());
    let mut items = Vec::new();
    for t in req.topics {
        let mut ids = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            ids.push(p.partition);
            items.push(svc::ProduceItem {
                topic: t.name.clone(),
                partition: p.partition,
                batch: p.batch,
            });
        }
        layout.push((t.name, ids));
    }
    let timeout = match req.timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(u64::from(ms))),
    };
    let in_flight = service
        .produce(svc::ProduceRequest {
            acks: req.acks,
            timeout,
            items,
        })
        .await;
    Box::pin(async move {
        let mut results = in_flight.finish().await.into_iter();
        let topics = layout
            .into_iter()
            .map(|(name, ids)| {
                let rs = next_n(&mut results, ids.len());
                ProduceTopicResult {
                    name,
                    partitions: ids
                        .into_iter()
                        .zip(rs)
                        .map(|(partition, r)| ProducePartitionResult {
                            partition,
                            log_start_offset: r.as_ref().ok().map(|a| a.log_start_offset),
                            result: r.map(|a| a.base_offset),
                        })
                        .collect(),
                }
            })
            .collect();
        Response::ok(
            correlation_id,
            ResponseBody::Produce(ProduceResponse { topics }),
        )
    })
}

async fn fetch(service: &Service, correlation_id: CorrelationId, req: FetchRequest) -> Response {
    // 0 means "as much as the broker allows" in this protocol.
    let unbounded = |n: u32| if n == 0 { u32::MAX } else { n };
    let items = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| svc::FetchItem {
                topic: t.name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: unbounded(p.max_bytes),
            })
        })
        .collect();
    let fetched = service
        .fetch(svc::FetchRequest {
            items,
            max_bytes: unbounded(req.max_bytes),
            min_bytes: req.min_bytes,
            max_wait: Duration::from_millis(u64::from(req.max_wait_ms)),
        })
        .await;
    let mut results = fetched.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let rs = next_n(&mut results, t.partitions.len());
            FetchTopicResult {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .zip(rs)
                    .map(|(p, r)| fetch_partition_result(p.partition, r))
                    .collect(),
            }
        })
        .collect();
    Response::ok(
        correlation_id,
        ResponseBody::Fetch(FetchResponse { topics }),
    )
}

fn fetch_partition_result(partition: u32, r: PartResult<svc::Fetched>) -> FetchPartitionResult {
    match r {
        Ok(f) => FetchPartitionResult {
            partition,
            error: None,
            high_watermark: Some(f.high_watermark),
            log_start_offset: Some(f.log_start_offset),
            log_end_offset: Some(f.log_end_offset),
            records: f.records,
        },
        Err(e) => FetchPartitionResult {
            partition,
            error: Some(e),
            high_watermark: None,
            log_start_offset: None,
            log_end_offset: None,
            records: Records::new(),
        },
    }
}

async fn metadata(
    service: &Service,
    correlation_id: CorrelationId,
    req: MetadataRequest,
) -> Response {
    let node_id = service.node_id();
    let topics = service
        .metadata(req.topics)
        .await
        .into_iter()
        .map(|(name, d)| match d {
            Err(e) => TopicInfo {
                name,
                error: Some(e),
                partitions: Vec::new(),
                configs: Vec::new(),
            },
            Ok(d) => TopicInfo {
                name,
                error: None,
                partitions: d
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let o = p.offsets.unwrap_or_else(|e| {
                            tracing::debug!("metadata for partition {}: {e}", p.partition);
                            svc::PartitionOffsets {
                                log_start_offset: 0,
                                log_end_offset: 0,
                                high_watermark: 0,
                            }
                        });
                        PartitionInfo {
                            partition: p.partition,
                            leader_node: node_id,
                            leader_shard: p.owner_shard,
                            log_start_offset: o.log_start_offset,
                            log_end_offset: o.log_end_offset,
                            high_watermark: o.high_watermark,
                        }
                    })
                    .collect(),
                configs: d.configs,
            },
        })
        .collect();
    let addr = service.listen_addr();
    let brokers = vec![BrokerInfo {
        node_id,
        host: addr.ip().to_string(),
        port: addr.port(),
    }];
    Response::ok(
        correlation_id,
        ResponseBody::Metadata(MetadataResponse { brokers, topics }),
    )
}

async fn list_offsets(
    service: &Service,
    correlation_id: CorrelationId,
    req: ListOffsetsRequest,
) -> Response {
    let items = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| svc::OffsetQuery {
                topic: t.name.clone(),
                partition: p.partition,
                spec: p.spec,
            })
        })
        .collect();
    let mut results = service.list_offsets(items).await.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let rs = next_n(&mut results, t.partitions.len());
            ListOffsetsTopicResult {
                name: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .zip(rs)
                    .map(|(p, result)| ListOffsetsPartitionResult {
                        partition: p.partition,
                        result,
                    })
                    .collect(),
            }
        })
        .collect();
    Response::ok(
        correlation_id,
        ResponseBody::ListOffsets(ListOffsetsResponse { topics }),
    )
}
