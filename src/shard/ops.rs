//! What a shard does to the partitions it owns, for itself or for a peer.
//!
//! Owns: [`Shard::execute`] (the one entry point for a [`ShardRequest`],
//! local or forwarded) and the owner-side produce / fetch / wait /
//! list-offsets / info / open / remove operations.
//!
//! Invariants: only the owning shard touches a partition (these functions
//! look partitions up in this shard's own table, so a request routed to the
//! wrong shard answers UnknownTopicOrPartition instead of touching anything);
//! `produce_start` is synchronous, so appends happen in call order.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use crate::partition::{AppendResult, AppendTicket, FetchData, Partition, PartitionLimits};
use crate::protocol::batch;
use crate::protocol::messages::Acks;
use crate::protocol::{ErrorCode, PartitionId, TopicPartition, WireError};

use super::mesh::{
    FetchItem, InfoItem, OffsetItem, PartResult, PartitionOffsets, ProduceItem, ShardReply,
    ShardRequest, WaitItem,
};
use super::registry::{partition_dir, TopicMeta};
use super::Shard;

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Resolves when the first of `futs` does (at once when `futs` is empty).
pub async fn first_of(mut futs: Vec<LocalBoxFuture<'_, ()>>) {
    if futs.is_empty() {
        return;
    }
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        for f in futs.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// The longest prefix of `records` made of whole batches and at most
/// `limit_bytes` long (possibly empty).
pub fn trim_to_batches(records: &Bytes, limit_bytes: usize) -> Bytes {
    if records.len() <= limit_bytes {
        return records.clone();
    }
    let mut end = 0;
    for b in batch::batches(records) {
        match b {
            Ok((_, bytes)) if end + bytes.len() <= limit_bytes => end += bytes.len(),
            _ => break,
        }
    }
    records.slice(..end)
}

pub fn unknown(topic: &str, partition: PartitionId) -> WireError {
    WireError::new(
        ErrorCode::UnknownTopicOrPartition,
        format!("unknown topic or partition {topic}/{partition}"),
    )
}

impl Shard {
    /// The partition if this shard owns it.
    pub fn partition(&self, topic: &str, partition: PartitionId) -> PartResult<Rc<Partition>> {
        if let Some(p) = self
            .partitions
            .borrow()
            .get(topic)
            .and_then(|t| t.get(&partition))
        {
            return Ok(p.clone());
        }
        let tp = TopicPartition::new(topic, partition);
        if let Some(why) = self.offline.borrow().get(&tp) {
            return Err(WireError::new(
                ErrorCode::StorageError,
                format!("partition {tp} is offline: {why}"),
            ));
        }
        Err(unknown(topic, partition))
    }

    /// Runs one request on this shard.
    pub fn execute(self: Rc<Self>, body: ShardRequest) -> LocalBoxFuture<'static, ShardReply> {
        Box::pin(async move {
            match body {
                ShardRequest::Produce { acks, items } => {
                    let started = self.produce_start(&items);
                    ShardReply::Produce(Self::produce_finish(started, acks).await)
                }
                ShardRequest::Fetch {
                    items,
                    budget_bytes,
                } => ShardReply::Fetch(self.fetch_local(&items, budget_bytes).await),
                ShardRequest::WaitForData { items, deadline } => {
                    self.wait_local(&items, deadline).await;
                    ShardReply::Waited
                }
                ShardRequest::ListOffsets { items } => {
                    ShardReply::ListOffsets(self.list_offsets_local(&items).await)
                }
                ShardRequest::PartitionInfo { items } => {
                    ShardReply::PartitionInfo(self.info_local(&items))
                }
                ShardRequest::CreateTopic {
                    name,
                    partitions,
                    configs,
                } => ShardReply::Done(self.create_topic(name, partitions, configs).await),
                ShardRequest::DeleteTopic { name } => {
                    ShardReply::Done(self.delete_topic(name).await)
                }
                ShardRequest::OpenPartitions { meta, partitions } => {
                    ShardReply::Done(self.open_partitions(&meta, &partitions).await)
                }
                ShardRequest::DeleteRecords {
                    topic,
                    partition,
                    before,
                } => ShardReply::LogStart(match self.partition(&topic, partition) {
                    Ok(p) => p.delete_records(before).await.map_err(|e| e.to_wire()),
                    Err(e) => Err(e),
                }),
                ShardRequest::AlterTopicConfig { name, configs } => {
                    ShardReply::Done(self.alter_topic_config(name, configs).await)
                }
                ShardRequest::UpsertTopic { meta } => {
                    let owned: Vec<Rc<Partition>> = self
                        .partitions
                        .borrow()
                        .get(&meta.name)
                        .map(|t| t.values().cloned().collect())
                        .unwrap_or_default();
                    for p in owned {
                        if p.config() != meta.config {
                            p.set_config(meta.config.clone());
                        }
                    }
                    self.topics
                        .borrow_mut()
                        .insert(meta.name.clone(), Rc::new(meta));
                    ShardReply::Done(Ok(()))
                }
                ShardRequest::RemoveTopic { name } => {
                    self.remove_topic_local(&name).await;
                    ShardReply::Done(Ok(()))
                }
            }
        })
    }

    /// Appends every item synchronously, in order.
    pub fn produce_start(&self, items: &[ProduceItem]) -> Vec<PartResult<AppendTicket>> {
        items
            .iter()
            .map(|it| {
                let p = self.partition(&it.topic, it.partition)?;
                p.append(it.batch.clone()).map_err(|e| e.to_wire())
            })
            .collect()
    }

    /// Waits for durability (or not, for acks=none).
    pub async fn produce_finish(
        started: Vec<PartResult<AppendTicket>>,
        acks: Acks,
    ) -> Vec<PartResult<AppendResult>> {
        let mut out = Vec::with_capacity(started.len());
        for s in started {
            out.push(match s {
                Err(e) => Err(e),
                Ok(ticket) if acks == Acks::None => Ok(ticket.result()),
                Ok(ticket) if acks == Acks::All => ticket.wait_all().await.map_err(|e| e.to_wire()),
                Ok(ticket) => ticket.wait().await.map_err(|e| e.to_wire()),
            });
        }
        out
    }

    /// Fetches in order; once `budget_bytes` is used up the remaining
    /// partitions answer with offsets only.
    pub async fn fetch_local(
        &self,
        items: &[FetchItem],
        budget_bytes: u32,
    ) -> Vec<PartResult<FetchData>> {
        let mut remaining = budget_bytes;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let p = match self.partition(&it.topic, it.partition) {
                Ok(p) => p,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if remaining == 0 {
                out.push(Ok(FetchData {
                    records: Bytes::new(),
                    high_watermark: p.high_watermark(),
                    log_start_offset: p.log_start_offset(),
                    log_end_offset: p.log_end_offset(),
                }));
                continue;
            }
            let cap = it.max_bytes.min(remaining).max(1);
            let r = p.fetch(it.offset, cap).await.map_err(|e| e.to_wire());
            if let Ok(d) = &r {
                remaining = remaining.saturating_sub(d.records.len().min(u32::MAX as usize) as u32);
            }
            out.push(r);
        }
        out
    }

    /// Resolves when any owned partition among `items` has data past its
    /// offset, or at `deadline`. Returns at once if none of them is here.
    pub async fn wait_local(&self, items: &[WaitItem], deadline: Instant) {
        let parts: Vec<(Rc<Partition>, u64)> = items
            .iter()
            .filter_map(|it| {
                self.partition(&it.topic, it.partition)
                    .ok()
                    .map(|p| (p, it.offset))
            })
            .collect();
        if parts.is_empty() {
            return;
        }
        let futs: Vec<LocalBoxFuture<'_, ()>> = parts
            .iter()
            .map(|(p, off)| Box::pin(p.wait_for_data(*off, deadline)) as LocalBoxFuture<'_, ()>)
            .collect();
        first_of(futs).await
    }

    pub async fn list_offsets_local(&self, items: &[OffsetItem]) -> Vec<PartResult<(u64, i64)>> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            out.push(match self.partition(&it.topic, it.partition) {
                Ok(p) => p.list_offset(it.spec).await.map_err(|e| e.to_wire()),
                Err(e) => Err(e),
            });
        }
        out
    }

    pub fn info_local(&self, items: &[InfoItem]) -> Vec<PartResult<PartitionOffsets>> {
        items
            .iter()
            .map(|it| {
                self.partition(&it.topic, it.partition)
                    .map(|p| (p.log_start_offset(), p.log_end_offset(), p.high_watermark()))
            })
            .collect()
    }

    fn limits(&self) -> PartitionLimits {
        PartitionLimits {
            max_batch_bytes: self.config.limits.max_batch_bytes,
            retention_check_interval_ms: self.config.shard.retention_check_interval_ms,
            recovery_scan: self.config.shard.recovery_scan,
        }
    }

    /// Opens (creating) `partitions` of `meta` on this shard; all or nothing.
    pub async fn open_partitions(
        &self,
        meta: &TopicMeta,
        partitions: &[PartitionId],
    ) -> Result<(), WireError> {
        let mut opened: Vec<(PartitionId, Rc<Partition>)> = Vec::new();
        for &p in partitions {
            let tp = TopicPartition::new(meta.name.clone(), p);
            let dir = partition_dir(&self.config.data_dir, &meta.name, p);
            let opening = Partition::open_on(
                self.partition_io(),
                tp.clone(),
                dir,
                meta.config.clone(),
                self.limits(),
                &self.batch_cache,
            );
            match opening.await {
                Ok(part) => opened.push((p, part)),
                Err(e) => {
                    tracing::error!(shard = self.id, "cannot open partition {tp}: {e}");
                    for (_, part) in opened {
                        let _ = part.close().await;
                    }
                    return Err(WireError::new(
                        ErrorCode::StorageError,
                        format!("cannot open partition {tp}: {e}"),
                    ));
                }
            }
        }
        let mut table = self.partitions.borrow_mut();
        let entry = table.entry(meta.name.clone()).or_default();
        for (p, part) in opened {
            entry.insert(p, part);
        }
        Ok(())
    }

    /// Startup: opens every partition of `topics` this shard owns. A partition
    /// that fails to open is marked offline (requests get StorageError) and
    /// the broker keeps going.
    pub async fn open_owned(&self, topics: &[TopicMeta]) {
        for meta in topics {
            for p in 0..meta.partitions {
                if meta.owner(p) != Some(self.id) {
                    continue;
                }
                if let Err(e) = self.open_partitions(meta, &[p]).await {
                    self.offline
                        .borrow_mut()
                        .insert(TopicPartition::new(meta.name.clone(), p), e.message);
                }
            }
        }
    }

    /// Forgets `name` and closes the partitions of it this shard owns.
    async fn remove_topic_local(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        self.offline.borrow_mut().retain(|tp, _| tp.topic != name);
        let owned = self.partitions.borrow_mut().remove(name);
        for (p, part) in owned.into_iter().flatten() {
            if let Err(e) = part.close().await {
                tracing::warn!(shard = self.id, "closing {name}/{p}: {e}");
            }
        }
    }

    /// Shutdown: closes every partition this shard owns.
    pub async fn close_all(&self) {
        let all = std::mem::take(&mut *self.partitions.borrow_mut());
        for (topic, parts) in all {
            for (p, part) in parts {
                if let Err(e) = part.close().await {
                    tracing::warn!(shard = self.id, "closing {topic}/{p}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchBuilder;

    #[test]
    fn trim_keeps_whole_batches() {
        let mut a = BatchBuilder::new();
        a.push(1, None, Some(b"aaaa"), &[]);
        let a = a.finish();
        let mut b = BatchBuilder::new();
        b.push(2, None, Some(b"bbbbbbbb"), &[]);
        let b = b.finish();
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let all = Bytes::from(all);
        assert_eq!(trim_to_batches(&all, all.len()).len(), all.len());
        assert_eq!(trim_to_batches(&all, all.len() - 1).len(), a.len());
        assert_eq!(trim_to_batches(&all, a.len()).len(), a.len());
        assert_eq!(trim_to_batches(&all, a.len() - 1).len(), 0);
    }
}
