//! Consumer-group operations of the partition service: each request goes to
//! the coordinator of its group, on the shard owning the group's
//! `__consumer_offsets` partition (here or over the mesh).
//!
//! Owns: [`GroupOp`] (one typed op carrying any group call to the owner) and
//! the `Service` entry points for FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups and DeleteGroups; the internal topic's creation on first
//! use (as Kafka does), with its settings from `[groups]`.
//!
//! Invariants: a group is served only by the coordinator its id hashes to
//! (`group::partition_for_group` over the internal topic's partition count);
//! replies come back one per input item, in input order; the reply variant
//! always matches the call variant (asserted).
//!
//! Must not know: wire formats, connections.

use std::rc::Rc;

use crate::group::{partition_for_group, ClientInfo, OFFSETS_TOPIC};
use crate::protocol::messages::{
    ConfigEntry, DeletableGroupResult, DeleteGroupsResponse, DescribeGroupsResponse,
    DescribedGroup, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsResponse, ListedGroup,
    OffsetCommitPartitionResult, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopicResult, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use crate::protocol::{ErrorCode, PartitionId, WireError};
use crate::shard::admin::CreateTopic;
use crate::shard::ops::LocalBoxFuture;
use crate::shard::{Shard, ShardOp};

use super::Service;

/// A group call, carried to the coordinator's shard.
pub enum GroupCall {
    Join(JoinGroupRequest, ClientInfo),
    Sync(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    Commit(OffsetCommitRequest),
    Fetch(OffsetFetchRequest),
    Describe(String),
    Delete(String),
    List(Vec<String>),
}

/// What a [`GroupCall`] answers (the variant of the same name).
pub enum GroupReply {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(Result<(), WireError>),
    Leave(LeaveGroupResponse),
    Commit(OffsetCommitResponse),
    Fetch(OffsetFetchResponse),
    Describe(DescribedGroup),
    Delete(Result<(), WireError>),
    List(Result<Vec<ListedGroup>, WireError>),
}

/// Runs a group call on the coordinator of `partition` (which must be on
/// this shard); `List` lists every coordinator of the shard instead.
pub struct GroupOp {
    pub partition: PartitionId,
    pub call: GroupCall,
}

impl ShardOp for GroupOp {
    type Reply = Result<GroupReply, WireError>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let shard = shard.clone();
        Box::pin(async move {
            if let GroupCall::List(states) = &self.call {
                let mut all = Vec::new();
                for c in shard.coordinators() {
                    all.extend(c.list(states)?);
                }
                return Ok(GroupReply::List(Ok(all)));
            }
            let c = shard.coordinator(self.partition)?;
            Ok(match self.call {
                GroupCall::Join(req, client) => GroupReply::Join(c.join(req, client).await),
                GroupCall::Sync(req) => GroupReply::Sync(c.sync(req).await),
                GroupCall::Heartbeat(req) => GroupReply::Heartbeat(c.heartbeat(&req)),
                GroupCall::Leave(req) => GroupReply::Leave(c.leave(&req)),
                GroupCall::Commit(req) => {
                    let s = shard.clone();
                    let exists =
                        move |t: &str, p: u32| s.topic(t).is_some_and(|m| p < m.partitions);
                    GroupReply::Commit(c.commit(req, exists).await)
                }
                GroupCall::Fetch(req) => GroupReply::Fetch(c.fetch_offsets(&req)),
                GroupCall::Describe(g) => GroupReply::Describe(c.describe(&g)),
                GroupCall::Delete(g) => GroupReply::Delete(c.delete(&g).await),
                GroupCall::List(_) => unreachable!("handled above"),
            })
        })
    }
}

fn mismatch(what: &str) -> ! {
    panic!("group op invariant: a {what} call got another reply")
}

impl Service {
    /// The internal topic's partition count, creating it on first use.
    async fn offsets_partitions(&self) -> Result<u32, WireError> {
        if let Some(m) = self.shard.topic(OFFSETS_TOPIC) {
            return Ok(m.partitions);
        }
        let g = &self.shard.config.groups;
        let configs = [
            ("segment_bytes", g.offsets_topic_segment_bytes.to_string()),
            ("retention_ms", "-1".to_string()),
            ("flush", "always".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| ConfigEntry {
            key: k.to_string(),
            value: v,
        })
        .collect();
        let op = CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: g.offsets_topic_partitions as i32,
            configs,
        };
        match self.shard.call(0, op).await.and_then(|r| r) {
            Ok(()) => tracing::info!(
                "created the internal topic {OFFSETS_TOPIC} ({} partitions)",
                g.offsets_topic_partitions
            ),
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
            Err(e) => {
                return Err(WireError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("cannot create {OFFSETS_TOPIC}: {}", e.message),
                ))
            }
        }
        self.shard
            .topic(OFFSETS_TOPIC)
            .map(|m| m.partitions)
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("{OFFSETS_TOPIC} is being created; retry"),
                )
            })
    }

    /// Runs `call` on the coordinator of `group`.
    async fn group_call(&self, group: &str, call: GroupCall) -> Result<GroupReply, WireError> {
        let partitions = self.offsets_partitions().await?;
        let partition = partition_for_group(group, partitions);
        let owner = self.shard.owner_of(OFFSETS_TOPIC, partition)?;
        self.shard
            .call(owner, GroupOp { partition, call })
            .await
            .and_then(|r| r)
    }

    /// FindCoordinator: this node (every group's coordinator is on this
    /// broker; a cluster will answer the node owning the partition).
    pub async fn find_coordinator(&self, _key: &str) -> Result<crate::protocol::NodeId, WireError> {
        self.offsets_partitions().await?;
        Ok(self.node_id())
    }

    pub async fn join_group(&self, req: JoinGroupRequest, client: ClientInfo) -> JoinGroupResponse {
        let group = req.group_id.clone();
        let member = req.member_id.clone();
        match self.group_call(&group, GroupCall::Join(req, client)).await {
            Ok(GroupReply::Join(r)) => r,
            Ok(_) => mismatch("join"),
            Err(e) => crate::group::state::join_error(e.code, &e.message, &member),
        }
    }

    pub async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let group = req.group_id.clone();
        match self.group_call(&group, GroupCall::Sync(req)).await {
            Ok(GroupReply::Sync(r)) => r,
            Ok(_) => mismatch("sync"),
            Err(e) => crate::group::state::sync_error(e.code, &e.message),
        }
    }

    pub async fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let group = req.group_id.clone();
        let r = match self.group_call(&group, GroupCall::Heartbeat(req)).await {
            Ok(GroupReply::Heartbeat(r)) => r,
            Ok(_) => mismatch("heartbeat"),
            Err(e) => Err(e),
        };
        HeartbeatResponse { error: r.err() }
    }

    pub async fn leave_group(&self, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let group = req.group_id.clone();
        match self.group_call(&group, GroupCall::Leave(req)).await {
            Ok(GroupReply::Leave(r)) => r,
            Ok(_) => mismatch("leave"),
            Err(e) => LeaveGroupResponse {
                error: Some(e),
                members: Vec::new(),
            },
        }
    }

    pub async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.clone();
        let shape: Vec<(String, Vec<PartitionId>)> = req
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.partition).collect(),
                )
            })
            .collect();
        match self.group_call(&group, GroupCall::Commit(req)).await {
            Ok(GroupReply::Commit(r)) => r,
            Ok(_) => mismatch("commit"),
            Err(e) => OffsetCommitResponse {
                topics: shape
                    .into_iter()
                    .map(|(name, ps)| OffsetCommitTopicResult {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|partition| OffsetCommitPartitionResult {
                                partition,
                                error: Some(e.clone()),
                            })
                            .collect(),
                    })
                    .collect(),
            },
        }
    }

    pub async fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let group = req.group_id.clone();
        match self.group_call(&group, GroupCall::Fetch(req)).await {
            Ok(GroupReply::Fetch(r)) => r,
            Ok(_) => mismatch("fetch"),
            Err(e) => OffsetFetchResponse {
                error: Some(e),
                topics: Vec::new(),
            },
        }
    }

    /// Every group on every shard (in a state of `states`, when not empty).
    pub async fn list_groups(&self, states: Vec<String>) -> ListGroupsResponse {
        if self.shard.topic(OFFSETS_TOPIC).is_none() {
            return ListGroupsResponse {
                error: None,
                groups: Vec::new(),
            };
        }
        let mut groups = Vec::new();
        let mut error = None;
        for s in 0..self.shard.count {
            let op = GroupOp {
                partition: 0,
                call: GroupCall::List(states.clone()),
            };
            match self.shard.call(s, op).await.and_then(|r| r) {
                Ok(GroupReply::List(Ok(g))) => groups.extend(g),
                Ok(GroupReply::List(Err(e))) | Err(e) => {
                    error.get_or_insert(e);
                }
                Ok(_) => mismatch("list"),
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse { error, groups }
    }

    pub async fn describe_groups(&self, ids: Vec<String>) -> DescribeGroupsResponse {
        let mut groups = Vec::with_capacity(ids.len());
        for g in ids {
            groups.push(
                match self.group_call(&g, GroupCall::Describe(g.clone())).await {
                    Ok(GroupReply::Describe(d)) => d,
                    Ok(_) => mismatch("describe"),
                    Err(e) => DescribedGroup {
                        error: Some(e),
                        group_id: g,
                        group_state: String::new(),
                        protocol_type: String::new(),
                        protocol_data: String::new(),
                        members: Vec::new(),
                    },
                },
            );
        }
        DescribeGroupsResponse { groups }
    }

    pub async fn delete_groups(&self, ids: Vec<String>) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(ids.len());
        for g in ids {
            let r = match self.group_call(&g, GroupCall::Delete(g.clone())).await {
                Ok(GroupReply::Delete(r)) => r,
                Ok(_) => mismatch("delete"),
                Err(e) => Err(e),
            };
            if r.is_ok() {
                tracing::info!(group = %g, "deleted group");
            }
            results.push(DeletableGroupResult {
                group_id: g,
                error: r.err(),
            });
        }
        DeleteGroupsResponse { results }
    }
}

/// Refuses client writes and admin changes to the internal topic.
pub fn refuse_internal(topic: &str) -> Result<(), WireError> {
    if topic == OFFSETS_TOPIC {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("{OFFSETS_TOPIC} is an internal topic: only the group coordinator writes it"),
        ));
    }
    Ok(())
}
