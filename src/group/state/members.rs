//! Members once joined: SyncGroup and the leader's assignment, heartbeats,
//! leaving, removal, the timers (sessions, rebalance and sync timeouts), and
//! the checks and bookkeeping of committed offsets.
//!
//! Invariants: those of `group::state`; a member is removed only with its
//! waiting requests answered (UnknownMemberId).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::{err, sync_error, Committed, Effects, Group, GroupState, SyncOutcome};
use crate::protocol::messages::{HeartbeatRequest, SyncGroupRequest, SyncGroupResponse};
use crate::protocol::{ErrorCode, WireError};

impl Group {
    /// Removes a member, answering its waiting requests; the group then
    /// rebalances (or completes a pending join without it).
    pub(super) fn remove(&mut self, id: &str, fx: &mut Effects) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if m.awaiting_join {
            fx.join_error(id, ErrorCode::UnknownMemberId, "removed from the group");
        }
        if m.awaiting_sync {
            fx.sync_error(id, ErrorCode::UnknownMemberId, "removed from the group");
        }
        if let Some(inst) = &m.instance_id {
            self.static_members.remove(inst);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Removes members and moves the group on (Kafka's
    /// removeMemberAndUpdateGroup).
    pub(super) fn remove_and_update(
        &mut self,
        ids: &[String],
        now: Instant,
        wall_ms: i64,
        fx: &mut Effects,
    ) {
        for id in ids {
            self.remove(id, fx);
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, wall_ms, fx, false);
                self.try_complete_join(now, wall_ms, fx);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, wall_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The shared member checks of sync, heartbeat and commit.
    pub(super) fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), WireError> {
        if matches!(self.state, GroupState::Dead) {
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being deleted",
            ));
        }
        if let Some(e) = self.fenced(member_id, instance_id) {
            return Err(e);
        }
        if !self.members.contains_key(member_id) {
            return Err(err(
                ErrorCode::UnknownMemberId,
                format!("member '{member_id}' is not in group '{}'", self.id),
            ));
        }
        if generation != self.generation {
            return Err(err(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {generation} is not the group's current generation {}",
                    self.generation
                ),
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------ sync

    pub fn sync(&mut self, req: &SyncGroupRequest, now: Instant) -> SyncOutcome {
        let reply = |e: WireError| SyncOutcome::Reply(sync_error(e.code, &e.message));
        if let Err(e) = self.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return reply(e);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol.as_ref())
        {
            return reply(err(
                ErrorCode::InconsistentGroupProtocol,
                format!(
                    "protocol {:?}/{:?} is not the group's {:?}/{:?}",
                    req.protocol_type, req.protocol_name, self.protocol_type, self.protocol
                ),
            ));
        }
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let m = self.members.get_mut(&req.member_id).expect("checked");
        m.last_seen = now;
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(err(
                ErrorCode::UnknownMemberId,
                format!("group '{}' has no members", self.id),
            )),
            GroupState::PreparingRebalance => reply(err(
                ErrorCode::RebalanceInProgress,
                "the group is rebalancing: rejoin",
            )),
            GroupState::Stable => SyncOutcome::Reply(SyncGroupResponse {
                error: None,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol.clone(),
                assignment: m.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                m.awaiting_sync = true;
                if !is_leader {
                    return SyncOutcome::Wait;
                }
                if let Some(a) = req
                    .assignments
                    .iter()
                    .find(|a| a.assignment.len() > super::MAX_MEMBER_METADATA_BYTES)
                {
                    m.awaiting_sync = false;
                    return reply(err(
                        ErrorCode::InvalidRequest,
                        format!(
                            "the assignment of member {} is {} bytes, over {}",
                            a.member_id,
                            a.assignment.len(),
                            super::MAX_MEMBER_METADATA_BYTES
                        ),
                    ));
                }
                let given: HashMap<&str, &Bytes> = req
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.as_str(), &a.assignment))
                    .collect();
                for m in self.members.values_mut() {
                    m.assignment = given
                        .get(m.id.as_str())
                        .map(|b| (*b).clone())
                        .unwrap_or_default();
                }
                SyncOutcome::Persist {
                    generation: self.generation,
                }
            }
        }
    }

    /// The leader's assignment for `generation` was written (`Ok`) or not:
    /// answers the waiting syncs. A group that moved on meanwhile ignores it.
    pub fn assignment_stored(
        &mut self,
        generation: i32,
        stored: Result<(), WireError>,
        now: Instant,
        wall_ms: i64,
    ) -> Effects {
        let mut fx = Effects::default();
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return fx;
        }
        match stored {
            Ok(()) => {
                self.set_state(GroupState::Stable, wall_ms);
                self.rebalance_deadline = None;
                for m in self.members.values_mut() {
                    if m.awaiting_sync {
                        m.awaiting_sync = false;
                        m.last_seen = now;
                        fx.sync_replies.push((
                            m.id.clone(),
                            SyncGroupResponse {
                                error: None,
                                protocol_type: self.protocol_type.clone(),
                                protocol_name: self.protocol.clone(),
                                assignment: m.assignment.clone(),
                            },
                        ));
                    }
                }
            }
            Err(e) => {
                for m in self.members.values_mut() {
                    m.assignment = Bytes::new();
                }
                // Waiting syncs get the error; everyone rejoins.
                for m in self.members.values_mut() {
                    if m.awaiting_sync {
                        m.awaiting_sync = false;
                        fx.sync_replies.push((
                            m.id.clone(),
                            sync_error(ErrorCode::CoordinatorNotAvailable, &e.message),
                        ));
                    }
                }
                self.prepare_rebalance(now, wall_ms, &mut fx, false);
            }
        }
        fx
    }

    // ------------------------------------------------------------ heartbeat, leave

    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now: Instant) -> Result<(), WireError> {
        if matches!(self.state, GroupState::Empty) {
            return Err(err(
                ErrorCode::UnknownMemberId,
                format!("group '{}' has no members", self.id),
            ));
        }
        self.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )?;
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.last_seen = now;
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(err(
                ErrorCode::RebalanceInProgress,
                "the group is rebalancing: rejoin",
            ));
        }
        Ok(())
    }

    /// One member of a LeaveGroup: by member id, or (static members) by
    /// instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        wall_ms: i64,
    ) -> (Result<(), WireError>, Effects) {
        let mut fx = Effects::default();
        if self.pending_members.remove(member_id).is_some() {
            return (Ok(()), fx);
        }
        let id = match instance_id {
            Some(inst) => match self.static_members.get(inst) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => {
                    let e = err(
                        ErrorCode::FencedInstanceId,
                        format!("group instance id '{inst}' belongs to another member"),
                    );
                    return (Err(e), fx);
                }
                None => {
                    let e = err(
                        ErrorCode::UnknownMemberId,
                        format!("no member with instance id '{inst}' in group '{}'", self.id),
                    );
                    return (Err(e), fx);
                }
            },
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            let e = err(
                ErrorCode::UnknownMemberId,
                format!("member '{id}' is not in group '{}'", self.id),
            );
            return (Err(e), fx);
        }
        self.remove_and_update(&[id], now, wall_ms, &mut fx);
        (Ok(()), fx)
    }

    // ------------------------------------------------------------ time

    /// Expires members whose session ran out, times out rebalances,
    /// completes an initial delay, forgets MemberIdRequired ids never used.
    pub fn tick(&mut self, now: Instant, wall_ms: i64) -> Effects {
        let mut fx = Effects::default();
        self.pending_members.retain(|_, forget_at| now < *forget_at);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_expired(now))
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(
                group = %self.id,
                members = ?expired,
                "members removed: session timeout passed without a heartbeat"
            );
            self.remove_and_update(&expired, now, wall_ms, &mut fx);
        }
        match self.state {
            GroupState::PreparingRebalance => self.try_complete_join(now, wall_ms, &mut fx),
            GroupState::CompletingRebalance
                if self.rebalance_deadline.is_some_and(|d| now >= d) =>
            {
                // The leader's assignment never came: members that did not
                // sync are out, the rest rebalance again.
                let laggards: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| !m.awaiting_sync)
                    .map(|m| m.id.clone())
                    .collect();
                tracing::info!(group = %self.id, members = ?laggards, "sync timed out");
                if laggards.is_empty() {
                    // Everyone synced but the write never finished: rejoin.
                    self.prepare_rebalance(now, wall_ms, &mut fx, false);
                } else {
                    self.remove_and_update(&laggards, now, wall_ms, &mut fx);
                }
            }
            _ => {}
        }
        fx
    }

    // ------------------------------------------------------------ offsets

    /// May this caller commit offsets now (Kafka's doCommitOffsets checks)?
    /// `generation < 0` with an empty member id is an admin or standalone
    /// commit, allowed only while the group has no members.
    pub fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), WireError> {
        if self.state == GroupState::Dead {
            return Err(err(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being deleted",
            ));
        }
        if generation < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(err(
                ErrorCode::UnknownMemberId,
                format!(
                    "group '{}' has active members: only a member of its current generation \
                     may commit",
                    self.id
                ),
            ));
        }
        self.check_member(member_id, instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(err(
                ErrorCode::RebalanceInProgress,
                "the group is completing a rebalance: commit after SyncGroup",
            ));
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        Ok(())
    }

    /// Applies a committed offset read from or written to the log; an
    /// older record than the one held is ignored.
    pub fn apply_offset(
        &mut self,
        topic: &str,
        partition: u32,
        c: Option<Committed>,
        log_offset: u64,
    ) {
        let key = (topic.to_string(), partition);
        if let Some(held) = self.offsets.get(&key) {
            if held.log_offset > log_offset {
                return;
            }
        }
        match c {
            Some(c) => {
                self.offsets.insert(key, c);
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }
}
