//! The partition table of a shard: lookup on the owner, open, close.
//!
//! Owns: [`Shard::partition`] (the one way to reach an owned partition),
//! opening partitions (at startup, and for a new topic), removing a topic's
//! partitions, closing everything at shutdown; and two small future helpers
//! shared by the layers above ([`LocalBoxFuture`], [`first_of`]).
//!
//! Invariants: only the owning shard touches a partition: a partition is in
//! this table only if the topic table names this shard as its owner
//! (asserted on every lookup once the table knows the topic), so a request routed to the wrong shard
//! answers UnknownTopicOrPartition instead of touching anything.
//!
//! Must not know: what is done to a partition (produce, fetch: `service`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::group::{Coordinator, GroupLimits, GroupSettings, OFFSETS_TOPIC};
use crate::partition::{Partition, PartitionLimits};
use crate::protocol::{ErrorCode, PartitionId, TopicPartition, WireError};

use super::mesh::PartResult;
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

/// Polls every future of `futs` concurrently; their outputs in input order.
pub async fn join_all<T>(futs: Vec<LocalBoxFuture<'_, T>>) -> Vec<T> {
    let mut slots: Vec<(Option<LocalBoxFuture<'_, T>>, Option<T>)> =
        futs.into_iter().map(|f| (Some(f), None)).collect();
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let mut pending = false;
        for (fut, out) in slots.iter_mut() {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *fut = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(slots.iter_mut().filter_map(|(_, out)| out.take()).collect())
    })
    .await
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
            // Pair of the registry's assignment: only the owner opened it.
            // (A new topic's partitions open before this shard's table
            // learns the topic, so an unknown topic is no contradiction.)
            if let Ok(owner) = self.owner_of(topic, partition) {
                assert_eq!(
                    owner, self.id,
                    "partition {topic}/{partition} is open on shard {} but owned by {owner}",
                    self.id
                );
            }
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

    fn limits(&self) -> PartitionLimits {
        PartitionLimits {
            max_batch_bytes: self.config.limits.max_batch_bytes,
            max_decompressed_batch_bytes: self.config.limits.max_decompressed_batch_bytes,
            retention_check_interval_ms: self.config.shard.retention_check_interval_ms,
            recovery_scan: self.config.shard.recovery_scan,
            producer_id_expiration_ms: self.config.limits.producer_id_expiration_ms,
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
            if meta.name == OFFSETS_TOPIC {
                self.start_coordinator(p, &part);
            }
            entry.insert(p, part);
        }
        Ok(())
    }

    /// The group coordinator of `__consumer_offsets` partition `p`, loading
    /// in the background (requests get CoordinatorLoadInProgress until it is).
    fn start_coordinator(&self, p: PartitionId, part: &Rc<Partition>) {
        let g = &self.config.groups;
        let settings = GroupSettings {
            limits: GroupLimits {
                min_session_timeout_ms: g.min_session_timeout_ms,
                max_session_timeout_ms: g.max_session_timeout_ms,
                initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
                max_group_members: g.max_group_members as usize,
            },
            offsets_retention_ms: g.offsets_retention_ms,
            offset_metadata_max_bytes: g.offset_metadata_max_bytes as usize,
            snapshot_min_bytes: g.snapshot_min_bytes,
            tick_ms: g.tick_ms,
        };
        let c = Coordinator::new(part.clone(), self.clock.clone(), settings);
        if let Some(old) = self.coordinators.borrow_mut().insert(p, c.clone()) {
            old.stop();
        }
        let shard = self.id;
        glommio::spawn_local(async move {
            if let Err(e) = c.load().await {
                tracing::error!(
                    shard,
                    "group coordinator of {OFFSETS_TOPIC}/{p} failed to load: {e}"
                );
            }
        })
        .detach();
    }

    /// The coordinator of `__consumer_offsets` partition `p`, if this shard
    /// owns it.
    pub fn coordinator(&self, p: PartitionId) -> PartResult<Rc<Coordinator>> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, p);
        if let Some(why) = self.offline.borrow().get(&tp) {
            // Not retriable: the partition failed to open at startup.
            return Err(WireError::new(
                ErrorCode::StorageError,
                format!("{tp} is offline, so are its groups: {why}"),
            ));
        }
        self.coordinators.borrow().get(&p).cloned().ok_or_else(|| {
            WireError::new(
                ErrorCode::NotCoordinator,
                format!("shard {} does not own {OFFSETS_TOPIC}/{p}", self.id),
            )
        })
    }

    /// Every coordinator on this shard.
    pub fn coordinators(&self) -> Vec<Rc<Coordinator>> {
        self.coordinators.borrow().values().cloned().collect()
    }

    fn stop_coordinators(&self, topic: &str) {
        if topic == OFFSETS_TOPIC {
            for (_, c) in self.coordinators.borrow_mut().drain() {
                c.stop();
            }
        }
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
    pub(super) async fn remove_topic_local(&self, name: &str) {
        self.stop_coordinators(name);
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
        self.stop_coordinators(OFFSETS_TOPIC);
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
