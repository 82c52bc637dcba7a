//! The coordinator's offset and admin requests: OffsetCommit (checked by
//! the group, written durably, then applied), OffsetFetch, ListGroups,
//! DescribeGroups and DeleteGroups (tombstones for the group and its offsets).
//!
//! Invariants: those of `group::coordinator`.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::messages::{
    DescribedGroup, DescribedGroupMember, ListedGroup, OffsetCommitPartitionResult,
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopicResult, OffsetFetchPartitionResult,
    OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopicResult,
};
use crate::protocol::{ErrorCode, WireError};

use crate::group::records::{Entry, Key, OffsetValue};
use crate::group::state::{Committed, Group, GroupState};

use super::{metadata_for, Coordinator};

impl Coordinator {
    // ------------------------------------------------------------ offsets

    /// OffsetCommit. `exists(topic, partition)` says whether the partition
    /// is a real one (commits for unknown partitions are refused).
    pub async fn commit(
        self: &Rc<Self>,
        req: OffsetCommitRequest,
        exists: impl Fn(&str, u32) -> bool,
    ) -> OffsetCommitResponse {
        let all_err = |e: &WireError| OffsetCommitResponse {
            topics: req
                .topics
                .iter()
                .map(|t| OffsetCommitTopicResult {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| OffsetCommitPartitionResult {
                            partition: p.partition,
                            error: Some(e.clone()),
                        })
                        .collect(),
                })
                .collect(),
        };
        if let Err(e) = self.ready() {
            return all_err(&e);
        }
        if req.group_id.is_empty() {
            return all_err(&WireError::new(
                ErrorCode::InvalidGroupId,
                "the group id is empty",
            ));
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let checked = {
            let mut groups = self.groups.borrow_mut();
            let g = groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Group::new(&req.group_id, wall));
            g.check_commit(
                req.generation_id,
                &req.member_id,
                req.group_instance_id.as_deref(),
                now,
            )
        };
        if let Err(e) = checked {
            self.forget_if_disposable(&req.group_id);
            return all_err(&e);
        }
        // Per partition: an error now, or an entry to write.
        let mut verdicts: Vec<Vec<Option<WireError>>> = Vec::new();
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for t in &req.topics {
            let mut v = Vec::new();
            for p in &t.partitions {
                let md = p.metadata.as_deref().unwrap_or("");
                if md.len() > self.settings.offset_metadata_max_bytes {
                    v.push(Some(WireError::new(
                        ErrorCode::OffsetMetadataTooLarge,
                        format!(
                            "metadata of {} bytes exceeds groups.offset_metadata_max_bytes ({})",
                            md.len(),
                            self.settings.offset_metadata_max_bytes
                        ),
                    )));
                } else if !exists(&t.name, p.partition) {
                    v.push(Some(WireError::new(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("unknown topic or partition {}/{}", t.name, p.partition),
                    )));
                } else {
                    v.push(None);
                    let value = OffsetValue::new(p.offset, p.leader_epoch, md, wall);
                    entries.push(Entry::Offset(
                        Key::offset(&req.group_id, &t.name, p.partition),
                        Some(value),
                    ));
                    keys.push((t.name.clone(), p.partition));
                }
            }
            verdicts.push(v);
        }
        let written = if entries.is_empty() {
            // Everything refused: a group this request made holds nothing.
            self.forget_if_disposable(&req.group_id);
            Ok(Vec::new())
        } else {
            // Counted in flight until applied: expiry skips the group.
            *self
                .commits_in_flight
                .borrow_mut()
                .entry(req.group_id.clone())
                .or_default() += 1;
            let r = self.write(&entries).await;
            let mut in_flight = self.commits_in_flight.borrow_mut();
            if let Some(n) = in_flight.get_mut(&req.group_id) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(&req.group_id);
                }
            }
            r
        };
        match &written {
            Ok(offsets) => {
                let mut groups = self.groups.borrow_mut();
                let g = groups
                    .entry(req.group_id.clone())
                    .or_insert_with(|| Group::new(&req.group_id, wall));
                for ((entry, (topic, partition)), at) in entries.iter().zip(&keys).zip(offsets) {
                    if let Entry::Offset(_, Some(v)) = entry {
                        let c = Committed {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata.clone(),
                            commit_ms: v.commit_ms,
                            log_offset: *at,
                        };
                        g.apply_offset(topic, *partition, Some(c), *at);
                    }
                }
            }
            Err(e) => tracing::warn!(group = %req.group_id, "offset commit not written: {e}"),
        }
        let write_err = written.err();
        OffsetCommitResponse {
            topics: req
                .topics
                .iter()
                .zip(verdicts)
                .map(|(t, v)| OffsetCommitTopicResult {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .zip(v)
                        .map(|(p, e)| OffsetCommitPartitionResult {
                            partition: p.partition,
                            error: e.or_else(|| write_err.clone()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn fetch_offsets(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        if let Err(e) = self.ready() {
            return OffsetFetchResponse {
                error: Some(e),
                topics: Vec::new(),
            };
        }
        let groups = self.groups.borrow();
        let g = groups.get(&req.group_id);
        let result = |topic: &str, partition: u32| {
            let c = g.and_then(|g| g.offsets.get(&(topic.to_string(), partition)));
            OffsetFetchPartitionResult {
                partition,
                offset: c.map(|c| c.offset),
                leader_epoch: c.and_then(|c| c.leader_epoch),
                metadata: c.map(|c| c.metadata.clone()),
                error: None,
            }
        };
        let topics = match &req.topics {
            Some(ts) => ts
                .iter()
                .map(|t| OffsetFetchTopicResult {
                    name: t.name.clone(),
                    partitions: t.partitions.iter().map(|p| result(&t.name, *p)).collect(),
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
                if let Some(g) = g {
                    for (t, p) in g.offsets.keys() {
                        by_topic.entry(t.as_str()).or_default().push(*p);
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(t, ps)| OffsetFetchTopicResult {
                        name: t.to_string(),
                        partitions: ps.into_iter().map(|p| result(t, p)).collect(),
                    })
                    .collect()
            }
        };
        OffsetFetchResponse {
            error: None,
            topics,
        }
    }

    // ------------------------------------------------------------ admin

    /// Every group here (in a state of `states`, when not empty).
    pub fn list(&self, states: &[String]) -> Result<Vec<ListedGroup>, WireError> {
        self.ready()?;
        let groups = self.groups.borrow();
        let mut out: Vec<ListedGroup> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                group_state: g.state.name().to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    pub fn describe(&self, group: &str) -> DescribedGroup {
        let mut d = DescribedGroup {
            error: None,
            group_id: group.to_string(),
            group_state: GroupState::Dead.name().to_string(),
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Err(e) = self.ready() {
            d.error = Some(e);
            return d;
        }
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group) else {
            return d;
        };
        d.group_state = g.state.name().to_string();
        d.protocol_type = g.protocol_type.clone().unwrap_or_default();
        let stable = matches!(g.state, GroupState::Stable);
        if stable {
            d.protocol_data = g.protocol.clone().unwrap_or_default();
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        d.members = g
            .members
            .values()
            .map(|m| DescribedGroupMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    metadata_for(m, &protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        d
    }

    /// DeleteGroups for one group: refused while it has members.
    pub async fn delete(self: &Rc<Self>, group: &str) -> Result<(), WireError> {
        self.delete_if(group, |_, _| true).await.map(|_| ())
    }

    /// Deletes `group` if `still(self, group)` holds when it is marked Dead
    /// (checked synchronously with the marking); `Ok(false)` if it did not.
    pub(super) async fn delete_if(
        self: &Rc<Self>,
        group: &str,
        still: impl Fn(&Self, &str) -> bool,
    ) -> Result<bool, WireError> {
        self.ready()?;
        if !still(self, group) {
            return Ok(false);
        }
        let keys: Vec<(String, u32)> = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(group) else {
                return Err(WireError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("group '{group}' does not exist"),
                ));
            };
            if g.state == GroupState::Dead {
                return Err(WireError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!("group '{group}' is being deleted"),
                ));
            }
            if !g.members.is_empty() {
                let n = g.members.len();
                return Err(WireError::new(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group '{group}' has {n} active member{} (state {}); stop {} first",
                        if n == 1 { "" } else { "s" },
                        g.state.name(),
                        if n == 1 { "it" } else { "them" }
                    ),
                ));
            }
            g.state = GroupState::Dead;
            g.offsets.keys().cloned().collect()
        };
        let mut entries: Vec<Entry> = keys
            .iter()
            .map(|(t, p)| Entry::Offset(Key::offset(group, t, *p), None))
            .collect();
        entries.push(Entry::Group(Key::group(group), None));
        let r = self.write(&entries).await;
        let mut groups = self.groups.borrow_mut();
        match r {
            Ok(_) => {
                groups.remove(group);
                self.persisted.borrow_mut().remove(group);
                Ok(true)
            }
            Err(e) => {
                if let Some(g) = groups.get_mut(group) {
                    g.state = GroupState::Empty;
                }
                Err(e)
            }
        }
    }
}
