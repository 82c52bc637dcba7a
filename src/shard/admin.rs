//! Topic creation and deletion, coordinated by shard 0 (the metadata owner).
//!
//! Owns: validation of CreateTopic, the create sequence (persist → open on
//! owners → broadcast table change → answer) and the delete sequence
//! (broadcast removal + close on owners → remove directory → answer).
//!
//! Invariants: only shard 0 runs these (others forward); at most one admin
//! operation per topic name is in progress at a time; a topic is in any
//! shard's table only after all its partitions are open on their owners, and
//! a create is answered only after every shard has the topic in its table
//! (so a produce right after create never sees unknown topic).
//!
//! The ops ([`CreateTopic`], [`DeleteTopic`], [`AlterTopicConfig`] to shard 0;
//! [`OpenPartitions`], [`UpsertTopic`], [`RemoveTopic`] from shard 0 to every
//! shard) are typed [`ShardOp`]s answering `Result<(), WireError>`.
//!
//! Must not know: any wire protocol; what clients do with partitions.

use std::rc::Rc;

use crate::protocol::ids::validate_topic_name;
use crate::protocol::messages::ConfigEntry;
use crate::protocol::{ErrorCode, ShardId, WireError};

use super::mesh::ShardOp;
use super::ops::LocalBoxFuture;
use super::registry::{self, TopicMeta};
use super::Shard;

/// To shard 0: create a topic (validated there).
#[derive(Debug)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<ConfigEntry>,
}

/// To shard 0: delete a topic and its files.
#[derive(Debug)]
pub struct DeleteTopic {
    pub name: String,
}

/// To shard 0: change a live topic's settings.
#[derive(Debug)]
pub struct AlterTopicConfig {
    pub name: String,
    pub configs: Vec<ConfigEntry>,
}

/// From shard 0 to an owner: open (creating) these partitions of a new topic.
#[derive(Debug)]
pub struct OpenPartitions {
    pub meta: TopicMeta,
    pub partitions: Vec<u32>,
}

/// From shard 0 to every shard: the topic exists or changed (table change;
/// owners apply `meta.config` to their live partitions).
#[derive(Debug)]
pub struct UpsertTopic {
    pub meta: TopicMeta,
}

/// From shard 0 to every shard: forget the topic, close owned partitions.
#[derive(Debug)]
pub struct RemoveTopic {
    pub name: String,
}

type Done = Result<(), WireError>;

impl ShardOp for CreateTopic {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        let s = shard.clone();
        Box::pin(async move {
            s.create_topic(self.name, self.partitions, self.configs)
                .await
        })
    }
}

impl ShardOp for DeleteTopic {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        let s = shard.clone();
        Box::pin(async move { s.delete_topic(self.name).await })
    }
}

impl ShardOp for AlterTopicConfig {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        let s = shard.clone();
        Box::pin(async move { s.alter_topic_config(self.name, self.configs).await })
    }
}

impl ShardOp for OpenPartitions {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        let s = shard.clone();
        Box::pin(async move { s.open_partitions(&self.meta, &self.partitions).await })
    }
}

impl ShardOp for UpsertTopic {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        // A table change: synchronous, applied in arrival order.
        let meta = self.meta;
        let owned: Vec<Rc<crate::partition::Partition>> = shard
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
        shard
            .topics
            .borrow_mut()
            .insert(meta.name.clone(), Rc::new(meta));
        Box::pin(async { Ok(()) })
    }
}

impl ShardOp for RemoveTopic {
    type Reply = Done;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Done> {
        let s = shard.clone();
        Box::pin(async move {
            s.remove_topic_local(&self.name).await;
            Ok(())
        })
    }
}

/// Removes the name from the in-progress set when dropped.
struct InProgress<'a> {
    shard: &'a Shard,
    name: String,
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.shard.admin_in_progress.borrow_mut().remove(&self.name);
    }
}

impl Shard {
    fn begin_admin(&self, name: &str) -> Option<InProgress<'_>> {
        if !self.admin_in_progress.borrow_mut().insert(name.to_string()) {
            return None;
        }
        Some(InProgress {
            shard: self,
            name: name.to_string(),
        })
    }

    /// Validates and builds the topic a CreateTopic asks for.
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &[ConfigEntry],
    ) -> Result<TopicMeta, WireError> {
        validate_topic_name(name).map_err(|e| WireError::new(ErrorCode::InvalidRequest, e))?;
        let max = self.config.limits.max_partitions_per_topic;
        if partitions < 1 || partitions as i64 > max as i64 {
            return Err(WireError::new(
                ErrorCode::InvalidPartitions,
                format!("partitions={partitions}: must be in 1..={max}"),
            ));
        }
        let mut config = self.config.topic_defaults.clone();
        for c in configs {
            config
                .set(&c.key, &c.value)
                .map_err(|e| WireError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        }
        Ok(TopicMeta::new(
            name.to_string(),
            partitions as u32,
            config,
            self.count,
        ))
    }

    /// Shard 0: creates a topic. Other shards forward here.
    pub async fn create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: i32,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), WireError> {
        if self.id != 0 {
            return Err(WireError::new(
                ErrorCode::Internal,
                "create topic reached a shard that is not the metadata owner",
            ));
        }
        let meta = self.validate_create(&name, partitions, &configs)?;
        let exists = || {
            WireError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            )
        };
        if self.topics.borrow().contains_key(&name) {
            return Err(exists());
        }
        let Some(_guard) = self.begin_admin(&name) else {
            return Err(exists());
        };

        // 1. persist (blocking file I/O on the blocking pool, not the reactor)
        let data_dir = self.config.data_dir.clone();
        let shard_count = self.count;
        let disk_meta = meta.clone();
        self.disk()
            .blocking(move |disk| {
                registry::create_topic_on_disk(disk, &data_dir, &disk_meta, shard_count)
            })
            .await
            .map_err(|e| {
                tracing::error!("create topic {name}: {e}");
                WireError::new(ErrorCode::StorageError, format!("cannot create topic: {e}"))
            })?;

        // 2. open partitions on their owners
        let mut started = Vec::new();
        for s in 0..self.count {
            let parts: Vec<u32> = (0..meta.partitions)
                .filter(|p| meta.owner(*p) == Some(s))
                .collect();
            if parts.is_empty() {
                continue;
            }
            let op = OpenPartitions {
                meta: meta.clone(),
                partitions: parts,
            };
            // Run concurrently: a local open must not wait for the peers.
            let me = self.clone();
            started.push(glommio::spawn_local(async move { me.call(s, op).await }));
        }
        let mut failure = None;
        for t in started {
            if let Err(e) = t.await.and_then(|r| r) {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            tracing::error!("create topic {name} failed, rolling back: {e}");
            self.rollback(&name).await;
            return Err(e);
        }

        // 3. every shard learns the topic before we answer
        self.call_all(|| UpsertTopic { meta: meta.clone() }).await?;
        tracing::info!("created topic {name} with {} partitions", meta.partitions);
        Ok(())
    }

    async fn rollback(self: &Rc<Self>, name: &str) {
        let _ = self
            .call_all(|| RemoveTopic {
                name: name.to_string(),
            })
            .await;
        let data_dir = self.config.data_dir.clone();
        let owned = name.to_string();
        let clock = self.clock.clone();
        if let Err(e) = self
            .disk()
            .blocking(move |disk| registry::remove_topic_from_disk(disk, &clock, &data_dir, &owned))
            .await
        {
            tracing::error!("rollback of topic {name}: {e}");
        }
    }

    /// Shard 0: deletes a topic. Other shards forward here.
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), WireError> {
        if self.id != 0 {
            return Err(WireError::new(
                ErrorCode::Internal,
                "delete topic reached a shard that is not the metadata owner",
            ));
        }
        let unknown = || {
            WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            )
        };
        if !self.topics.borrow().contains_key(&name) {
            return Err(unknown());
        }
        let Some(_guard) = self.begin_admin(&name) else {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("topic '{name}' is being created or deleted"),
            ));
        };
        // Every shard forgets it (owners close their partitions), then the files go.
        self.call_all(|| RemoveTopic { name: name.clone() }).await?;
        let data_dir = self.config.data_dir.clone();
        let owned = name.clone();
        let clock = self.clock.clone();
        self.disk()
            .blocking(move |disk| registry::remove_topic_from_disk(disk, &clock, &data_dir, &owned))
            .await
            .map_err(|e| {
                tracing::error!("delete topic {name}: {e}");
                WireError::new(
                    ErrorCode::StorageError,
                    format!("topic removed but its files were not: {e}"),
                )
            })?;
        tracing::info!("deleted topic {name}");
        Ok(())
    }

    /// Shard 0: changes a live topic's settings. Persists topic.json first,
    /// then every shard takes the new table entry and owners apply the new
    /// config to their partitions. Other shards forward here.
    pub async fn alter_topic_config(
        self: &Rc<Self>,
        name: String,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), WireError> {
        if self.id != 0 {
            return Err(WireError::new(
                ErrorCode::Internal,
                "alter topic reached a shard that is not the metadata owner",
            ));
        }
        let Some(meta) = self.topic(&name) else {
            return Err(WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            ));
        };
        let Some(_guard) = self.begin_admin(&name) else {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("topic '{name}' is being created, altered or deleted"),
            ));
        };
        let mut config = meta.config.clone();
        for c in &configs {
            config
                .set(&c.key, &c.value)
                .map_err(|e| WireError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        }
        config
            .validate()
            .map_err(|e| WireError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        let mut new_meta = (*meta).clone();
        new_meta.config = config;
        let data_dir = self.config.data_dir.clone();
        let shard_count = self.count;
        let disk_meta = new_meta.clone();
        self.disk()
            .blocking(move |disk| {
                registry::write_topic_file(disk, &data_dir, &disk_meta, shard_count)
            })
            .await
            .map_err(|e| {
                tracing::error!("alter topic {name}: {e}");
                WireError::new(ErrorCode::StorageError, format!("cannot alter topic: {e}"))
            })?;
        self.call_all(|| UpsertTopic {
            meta: new_meta.clone(),
        })
        .await?;
        let changes: Vec<String> = configs
            .iter()
            .map(|c| format!("{}={}", c.key, c.value))
            .collect();
        tracing::info!("altered topic {name}: {}", changes.join(" "));
        Ok(())
    }

    /// The owner of a topic partition according to this shard's table.
    pub fn owner_of(&self, topic: &str, partition: u32) -> Result<ShardId, WireError> {
        self.topics
            .borrow()
            .get(topic)
            .and_then(|m| m.owner(partition))
            .ok_or_else(|| super::ops::unknown(topic, partition))
    }

    /// This shard's view of a topic.
    pub fn topic(&self, name: &str) -> Option<Rc<TopicMeta>> {
        self.topics.borrow().get(name).cloned()
    }

    /// Every topic name, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.borrow().keys().cloned().collect()
    }
}
