//! Joining a group: JoinGroup (new, known and static members, KIP-394's
//! MemberIdRequired), the move to PreparingRebalance, and completing the
//! join phase into a new generation (protocol vote, leader, replies).
//!
//! Invariants: those of `group::state`; a join reply names the generation
//! the group is in when it is sent.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    err, join_error, sync_error, ClientInfo, Effects, Group, GroupLimits, GroupState, JoinOutcome,
    Member,
};
use crate::protocol::messages::{JoinGroupMember, JoinGroupRequest, JoinGroupResponse};
use crate::protocol::{ErrorCode, WireError};

impl Group {
    // ------------------------------------------------------------ join

    /// A JoinGroup (Kafka's handleJoinGroup, with KIP-394's MemberIdRequired
    /// for dynamic members and KIP-345's static members).
    pub fn join(
        &mut self,
        req: &JoinGroupRequest,
        client: &ClientInfo,
        limits: &GroupLimits,
        now: Instant,
        wall_ms: i64,
    ) -> (JoinOutcome, Effects) {
        let mut fx = Effects::default();
        self.initial_delay_step =
            Duration::from_millis(u64::from(limits.initial_rebalance_delay_ms));
        let reply =
            |e: WireError| JoinOutcome::Reply(join_error(e.code, &e.message, &req.member_id));
        if self.state == GroupState::Dead {
            return (
                reply(err(
                    ErrorCode::CoordinatorNotAvailable,
                    "the group is being deleted",
                )),
                fx,
            );
        }
        let session = req.session_timeout_ms;
        if session < 0
            || (session as u32) < limits.min_session_timeout_ms
            || (session as u32) > limits.max_session_timeout_ms
        {
            return (
                reply(err(
                    ErrorCode::InvalidSessionTimeout,
                    format!(
                        "session_timeout_ms {session} is outside the broker's {}..={} \
                         (groups.min_session_timeout_ms / max_session_timeout_ms)",
                        limits.min_session_timeout_ms, limits.max_session_timeout_ms
                    ),
                )),
                fx,
            );
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        if !self.supports(&req.protocol_type, &protocols) {
            return (
                reply(err(
                    ErrorCode::InconsistentGroupProtocol,
                    format!(
                        "protocol type '{}' with protocols [{}] does not match group '{}' \
                         (type {:?}, protocols every member supports: {:?})",
                        req.protocol_type,
                        protocols
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.id,
                        self.protocol_type,
                        self.candidate_protocols(None)
                    ),
                )),
                fx,
            );
        }
        // A negative rebalance timeout means "the session timeout" (v0).
        let rebalance_ms = if req.rebalance_timeout_ms < 0 {
            session as u32
        } else {
            req.rebalance_timeout_ms as u32
        };
        let instance = req.group_instance_id.as_deref();
        if let Some((name, m)) = protocols
            .iter()
            .find(|(_, m)| m.len() > super::MAX_MEMBER_METADATA_BYTES)
        {
            // The group's durable record holds every member's metadata.
            return (
                reply(err(
                    ErrorCode::InvalidRequest,
                    format!(
                        "metadata of protocol '{name}' is {} bytes, over the {} a member may carry",
                        m.len(),
                        super::MAX_MEMBER_METADATA_BYTES
                    ),
                )),
                fx,
            );
        }

        // A pending id (KIP-394) is used up by this join, whatever it gives.
        let pending =
            !req.member_id.is_empty() && self.pending_members.remove(&req.member_id).is_some();
        if req.member_id.is_empty() || pending {
            if let Some(old_id) = instance.and_then(|i| self.static_members.get(i).cloned()) {
                // A static instance that is already a member is rejoining
                // (also through a pending id: never two members with one
                // instance id).
                return self.rejoin_static(
                    old_id,
                    req,
                    client,
                    protocols,
                    rebalance_ms,
                    now,
                    wall_ms,
                );
            }
        }
        if req.member_id.is_empty() {
            if self.members.len() + self.pending_members.len() >= limits.max_group_members {
                return (
                    reply(err(
                        ErrorCode::GroupMaxSizeReached,
                        format!(
                            "group '{}' has reached groups.max_group_members ({})",
                            self.id, limits.max_group_members
                        ),
                    )),
                    fx,
                );
            }
            let id = self.new_member_id(&client.client_id, wall_ms);
            if instance.is_none() {
                // KIP-394: the member learns its id first, then joins with it.
                let forget_at = now + Duration::from_millis(u64::from(session as u32));
                self.pending_members.insert(id.clone(), forget_at);
                return (
                    JoinOutcome::Reply(join_error(
                        ErrorCode::MemberIdRequired,
                        "rejoin with the member id in this response",
                        &id,
                    )),
                    fx,
                );
            }
            self.add_member(&id, req, client, protocols, rebalance_ms, now);
            self.prepare_rebalance(now, wall_ms, &mut fx, true);
            self.try_complete_join(now, wall_ms, &mut fx);
            return (JoinOutcome::Wait { member_id: id }, fx);
        }

        let id = req.member_id.clone();
        if pending {
            self.add_member(&id, req, client, protocols, rebalance_ms, now);
            self.prepare_rebalance(now, wall_ms, &mut fx, true);
            self.try_complete_join(now, wall_ms, &mut fx);
            return (JoinOutcome::Wait { member_id: id }, fx);
        }
        if let Some(e) = self.fenced(&id, instance) {
            return (reply(e), fx);
        }
        let Some(member) = self.members.get_mut(&id) else {
            return (
                reply(err(
                    ErrorCode::UnknownMemberId,
                    format!("member '{id}' is not in group '{}'", self.id),
                )),
                fx,
            );
        };
        member.last_seen = now;
        member.session_timeout_ms = session as u32;
        member.rebalance_timeout_ms = rebalance_ms;
        member.client_id = client.client_id.clone();
        member.client_host = client.client_host.clone();
        let changed = member.protocols != protocols;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                let m = self.members.get_mut(&id).expect("checked above");
                m.protocols = protocols;
                // A retry of a join still waiting supersedes it: the
                // coordinator answers the older request when it replaces
                // the waiter, and this one waits for the generation.
                m.awaiting_join = true;
                self.try_complete_join(now, wall_ms, &mut fx);
                (JoinOutcome::Wait { member_id: id }, fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !(changed || (is_leader && self.state == GroupState::Stable)) =>
            {
                // The member missed its join reply (or rejoins with nothing
                // new): give it the current generation without a rebalance.
                let resp = self.join_response(&id, is_leader);
                (JoinOutcome::Reply(resp), fx)
            }
            _ => {
                let m = self.members.get_mut(&id).expect("checked above");
                m.protocols = protocols;
                m.awaiting_join = true;
                self.prepare_rebalance(now, wall_ms, &mut fx, false);
                self.try_complete_join(now, wall_ms, &mut fx);
                (JoinOutcome::Wait { member_id: id }, fx)
            }
        }
    }

    /// A static member rejoining with an empty member id: it replaces its
    /// old member id; in a Stable group with unchanged protocols no
    /// rebalance happens and it keeps its assignment (KIP-345).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rejoin_static(
        &mut self,
        old_id: String,
        req: &JoinGroupRequest,
        client: &ClientInfo,
        protocols: Vec<(String, Bytes)>,
        rebalance_ms: u32,
        now: Instant,
        wall_ms: i64,
    ) -> (JoinOutcome, Effects) {
        let mut fx = Effects::default();
        let new_id = self.new_member_id(&client.client_id, wall_ms);
        let mut m = self
            .members
            .remove(&old_id)
            .expect("static member maps to a member");
        // The old incarnation's waiting requests are fenced.
        if m.awaiting_join {
            fx.join_error(
                &old_id,
                ErrorCode::FencedInstanceId,
                "a newer instance joined",
            );
        }
        if m.awaiting_sync {
            fx.sync_error(
                &old_id,
                ErrorCode::FencedInstanceId,
                "a newer instance joined",
            );
        }
        m.id = new_id.clone();
        m.last_seen = now;
        m.session_timeout_ms = req.session_timeout_ms as u32;
        m.rebalance_timeout_ms = rebalance_ms;
        m.client_id = client.client_id.clone();
        m.client_host = client.client_host.clone();
        m.protocols = protocols;
        m.awaiting_join = false;
        m.awaiting_sync = false;
        let inst = m
            .instance_id
            .clone()
            .expect("a static member has an instance id");
        self.members.insert(new_id.clone(), m);
        self.static_members.insert(inst, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        // Kafka's rule: in a Stable group, a static member's return that
        // keeps the group's protocol changes nothing but its member id; the
        // current assignment stays in force (and its metadata, say the
        // partitions it owned, is whatever the new instance sent).
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            let resp = self.join_response(&new_id, false);
            fx.persist = true;
            return (JoinOutcome::Reply(resp), fx);
        }
        self.members
            .get_mut(&new_id)
            .expect("just inserted")
            .awaiting_join = true;
        self.prepare_rebalance(now, wall_ms, &mut fx, false);
        self.try_complete_join(now, wall_ms, &mut fx);
        (JoinOutcome::Wait { member_id: new_id }, fx)
    }

    pub(super) fn add_member(
        &mut self,
        id: &str,
        req: &JoinGroupRequest,
        client: &ClientInfo,
        protocols: Vec<(String, Bytes)>,
        rebalance_ms: u32,
        now: Instant,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(inst) = &req.group_instance_id {
            let previous = self.static_members.insert(inst.clone(), id.to_string());
            // Callers send a known instance id through rejoin_static.
            assert!(
                previous.is_none(),
                "group {}: instance {inst} added twice",
                self.id
            );
        }
        let m = Member {
            id: id.to_string(),
            instance_id: req.group_instance_id.clone(),
            client_id: client.client_id.clone(),
            client_host: client.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms as u32,
            rebalance_timeout_ms: rebalance_ms,
            protocols,
            assignment: Bytes::new(),
            last_seen: now,
            awaiting_join: true,
            awaiting_sync: false,
        };
        self.members.insert(id.to_string(), m);
    }

    /// Moves to PreparingRebalance (if not there yet). `new_member`: a
    /// member was added (extends an initial delay).
    pub(super) fn prepare_rebalance(
        &mut self,
        now: Instant,
        wall_ms: i64,
        fx: &mut Effects,
        new_member: bool,
    ) {
        let timeout = self.rebalance_timeout();
        match self.state {
            GroupState::PreparingRebalance => {
                if new_member {
                    if let (Some(until), Some(deadline)) =
                        (self.initial_delay_until, self.rebalance_deadline)
                    {
                        self.initial_delay_until =
                            Some((now + self.initial_delay_step).min(deadline).max(until));
                    }
                }
                return;
            }
            GroupState::CompletingRebalance => {
                // Members waiting for the old generation's assignment must rejoin.
                for m in self.members.values_mut() {
                    if m.awaiting_sync {
                        m.awaiting_sync = false;
                        fx.sync_replies.push((
                            m.id.clone(),
                            sync_error(
                                ErrorCode::RebalanceInProgress,
                                "the group is rebalancing: rejoin",
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        let was_empty = self.state == GroupState::Empty;
        self.set_state(GroupState::PreparingRebalance, wall_ms);
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until = if was_empty && !self.initial_delay_step.is_zero() {
            Some((now + self.initial_delay_step).min(now + timeout))
        } else {
            None
        };
    }

    /// Completes the join phase once every member has rejoined (and no
    /// initial delay holds it), or at the rebalance deadline.
    pub(super) fn try_complete_join(&mut self, now: Instant, wall_ms: i64, fx: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !deadline_passed {
            if self.initial_delay_until.is_some_and(|u| now < u) {
                return;
            }
            let all_joined =
                self.members.values().all(|m| m.awaiting_join) && self.pending_members.is_empty();
            if !all_joined {
                return;
            }
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join)
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove(&id, fx);
        }
        self.pending_members.clear();
        self.complete_join(now, wall_ms, fx);
    }

    pub(super) fn complete_join(&mut self, now: Instant, wall_ms: i64, fx: &mut Effects) {
        self.generation += 1;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.set_state(GroupState::Empty, wall_ms);
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            self.rebalance_deadline = None;
            fx.persist = true;
            return;
        }
        self.protocol = self.select_protocol();
        assert!(
            self.protocol.is_some(),
            "group {}: members share no protocol (join checks it)",
            self.id
        );
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, wall_ms);
        self.rebalance_deadline = Some(now + self.rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let resp = self.join_response(&id, is_leader);
            let m = self.members.get_mut(&id).expect("listed above");
            m.awaiting_join = false;
            m.last_seen = now;
            m.assignment = Bytes::new();
            fx.join_replies.push((id, resp));
        }
        self.check();
    }

    /// The current generation as member `id` sees it (the leader also gets
    /// every member's metadata for the chosen protocol).
    pub(super) fn join_response(&self, id: &str, with_members: bool) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .values()
                .map(|m| JoinGroupMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members,
        }
    }
}
