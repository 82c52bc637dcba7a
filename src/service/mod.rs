//! The partition service: one protocol-neutral entry point per operation,
//! above shard routing and below the front ends (the FlatBuffers server
//! today, a Kafka listener tomorrow).
//!
//! Owns: [`Service`] (produce with acks none/leader/all and an ack timeout,
//! fetch with long poll and the byte budget, list offsets, delete records,
//! topic create/delete/alter, metadata), its request/response types
//! ([`types`]), and the owner-side ops ([`owner`]: the only code that calls
//! the `Partition` API for a client).
//!
//! Invariants: results come back one per input item, in input order; each
//! check happens once, here or on the owner: a batch above `max_batch_bytes`
//! is refused before it is routed ([`Service::produce`]), the fetch budget is
//! applied once ([`fetch::apply_budget`]), offsets and leader epoch are
//! stamped only by the partition. Admin operations run on shard 0.
//!
//! Must not know: any wire protocol, codec, frame or socket; correlation ids;
//! how a front end nests topics and partitions.

pub mod fetch;
pub mod groups;
pub mod owner;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
pub mod types;

use std::rc::Rc;
use std::time::Duration;

use crate::io::Clock;
use crate::protocol::messages::ConfigEntry;
use crate::protocol::{ErrorCode, NodeId, Offset, PartitionId, WireError};
use crate::shard::admin::{AlterTopicConfig, CreateTopic, DeleteTopic};
use crate::shard::producer_ids::{InitProducerIdOp, PRODUCER_ID_OWNER};
use crate::shard::route::Scattered;
use crate::shard::{PartResult, Shard};

use owner::{DeleteRecordsOp, InfoOp, ListOffsetsOp, ProduceOp};
use types::*;

/// The partition service of one shard (cheap to clone).
#[derive(Clone)]
pub struct Service {
    shard: Rc<Shard>,
}

/// A produce whose appends are done (or handed to their owners, in order)
/// and whose acknowledgements are pending.
pub struct ProduceInFlight {
    refused: Vec<(usize, WireError)>,
    /// Index in the request of each routed item.
    routed: Vec<usize>,
    scattered: Scattered<Produced>,
    len: usize,
    timeout: Option<Duration>,
    /// The shard's clock, which the timeout is measured on.
    clock: Clock,
}

impl ProduceInFlight {
    /// Waits for every partition's outcome (at most the request's timeout);
    /// one result per item, in request order.
    pub async fn finish(self) -> Vec<PartResult<Produced>> {
        let ProduceInFlight {
            refused,
            routed,
            scattered,
            len,
            timeout,
            clock,
        } = self;
        let acked = match timeout {
            None => Some(scattered.finish().await),
            Some(t) => {
                futures_lite::future::or(async { Some(scattered.finish().await) }, async {
                    clock.sleep(t).await;
                    None
                })
                .await
            }
        };
        let acked = acked.unwrap_or_else(|| {
            let ms = timeout.map_or(0, |t| t.as_millis());
            let e = WireError::new(
                ErrorCode::RequestTimedOut,
                format!("not acknowledged within timeout_ms ({ms}); the batch may still be stored"),
            );
            routed.iter().map(|_| Err(e.clone())).collect()
        });
        assert_eq!(acked.len(), routed.len());
        let mut out: Vec<Option<PartResult<Produced>>> = (0..len).map(|_| None).collect();
        for (i, e) in refused {
            out[i] = Some(Err(e));
        }
        for (i, r) in routed.into_iter().zip(acked) {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| panic!("a produce item got no result")))
            .collect()
    }
}

impl Service {
    pub fn new(shard: Rc<Shard>) -> Self {
        Self { shard }
    }

    /// The address of the broker's first listener (resolved once bound;
    /// the configured one before), for front ends to advertise.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.shard.listen_addr().unwrap_or(self.shard.config.listen)
    }

    pub fn node_id(&self) -> NodeId {
        self.shard.config.node_id
    }

    pub fn shard_count(&self) -> usize {
        self.shard.count
    }

    /// Phase one of a produce: refuses oversized batches, appends the local
    /// items now and hands the others to their owners (in order). Call it
    /// before reading the connection's next request, so one connection's
    /// appends keep arrival order. Phase two is [`ProduceInFlight::finish`].
    pub async fn produce(&self, req: ProduceRequest) -> ProduceInFlight {
        let max_batch_bytes = self.shard.config.limits.max_batch_bytes;
        let len = req.items.len();
        let mut refused = Vec::new();
        let mut routed = Vec::with_capacity(len);
        let mut items = Vec::with_capacity(len);
        for (i, it) in req.items.into_iter().enumerate() {
            if let Err(e) = groups::refuse_internal(&it.topic) {
                refused.push((i, e));
            } else if it.batch.len() > max_batch_bytes as usize {
                refused.push((
                    i,
                    WireError::new(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "batch of {} bytes exceeds max_batch_bytes ({max_batch_bytes})",
                            it.batch.len()
                        ),
                    ),
                ));
            } else {
                routed.push(i);
                items.push(it);
            }
        }
        let acks = req.acks;
        let scattered = self
            .shard
            .scatter_start(
                items,
                |it| (it.topic.as_str(), it.partition),
                |items| ProduceOp { acks, items },
            )
            .await;
        ProduceInFlight {
            refused,
            routed,
            scattered,
            len,
            timeout: req.timeout,
            clock: self.shard.clock().clone(),
        }
    }

    /// Fetch with long poll (see [`fetch`]); one result per item, in order.
    pub async fn fetch(&self, req: FetchRequest) -> Vec<PartResult<Fetched>> {
        fetch::fetch(&self.shard, req).await
    }

    pub async fn list_offsets(&self, items: Vec<OffsetQuery>) -> Vec<PartResult<ListedOffset>> {
        self.shard
            .scatter(
                items,
                |it| (it.topic.as_str(), it.partition),
                |items| ListOffsetsOp { items },
            )
            .await
    }

    /// Advances a partition's log start to `before` (durably); answers the
    /// log start after it.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: PartitionId,
        before: Offset,
    ) -> PartResult<Offset> {
        groups::refuse_internal(topic)?;
        let owner = self.shard.owner_of(topic, partition)?;
        let op = DeleteRecordsOp {
            topic: topic.to_string(),
            partition,
            before,
        };
        self.shard.call(owner, op).await.and_then(|r| r)
    }

    pub async fn create_topic(
        &self,
        name: String,
        partitions: i32,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), WireError> {
        groups::refuse_internal(&name)?;
        let op = CreateTopic {
            name,
            partitions,
            configs,
        };
        self.shard.call(0, op).await.and_then(|r| r)
    }

    pub async fn delete_topic(&self, name: String) -> Result<(), WireError> {
        groups::refuse_internal(&name)?;
        self.shard
            .call(0, DeleteTopic { name })
            .await
            .and_then(|r| r)
    }

    /// Changes a live topic's settings; answers its full configuration after.
    pub async fn alter_topic_config(
        &self,
        name: String,
        configs: Vec<ConfigEntry>,
    ) -> Result<Vec<ConfigEntry>, WireError> {
        groups::refuse_internal(&name)?;
        let op = AlterTopicConfig {
            name: name.clone(),
            configs,
        };
        self.shard.call(0, op).await.and_then(|r| r)?;
        // Shard 0 answers only after every shard has the new table entry.
        Ok(self
            .shard
            .topic(&name)
            .map(|m| config_entries(&m.config))
            .unwrap_or_default())
    }

    /// Gives an idempotent producer its identity: a new producer id (epoch 0)
    /// for `None`, or `current`'s id with the epoch bumped (allocated on
    /// shard 0: `shard::producer_ids`).
    pub async fn init_producer_id(
        &self,
        current: Option<crate::protocol::messages::ProducerIdentity>,
    ) -> Result<crate::protocol::messages::ProducerIdentity, WireError> {
        let op = InitProducerIdOp { current };
        self.shard.call(PRODUCER_ID_OWNER, op).await.and_then(|r| r)
    }

    /// Describes `topics` (every topic when empty), in request order.
    pub async fn metadata(&self, topics: Vec<String>) -> Metadata {
        let names = if topics.is_empty() {
            self.shard.topic_names()
        } else {
            topics
        };
        let metas: Vec<_> = names.iter().map(|n| self.shard.topic(n)).collect();
        let mut items = Vec::new();
        for meta in metas.iter().flatten() {
            for p in 0..meta.partitions {
                items.push((meta.name.clone(), p));
            }
        }
        let want = items.len();
        let infos = self
            .shard
            .scatter(items, |(t, p)| (t.as_str(), *p), |items| InfoOp { items })
            .await;
        assert_eq!(infos.len(), want);
        let mut infos = infos.into_iter();
        let mut out = Vec::with_capacity(names.len());
        for (name, meta) in names.into_iter().zip(metas) {
            let Some(meta) = meta else {
                let e = WireError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic '{name}'"),
                );
                out.push((name, Err(e)));
                continue;
            };
            let partitions = (0..meta.partitions)
                .map(|p| PartitionDescription {
                    partition: p,
                    owner_shard: meta.owner(p).unwrap_or(0),
                    offsets: infos
                        .next()
                        .unwrap_or_else(|| Err(WireError::new(ErrorCode::Internal, "missing"))),
                })
                .collect();
            let desc = TopicDescription {
                name: name.clone(),
                partitions,
                configs: config_entries(&meta.config),
            };
            out.push((name, Ok(desc)));
        }
        out
    }
}

fn config_entries(config: &crate::config::TopicConfig) -> Vec<ConfigEntry> {
    config
        .entries()
        .into_iter()
        .map(|(key, value)| ConfigEntry { key, value })
        .collect()
}
