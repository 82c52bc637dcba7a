//! One consumer group's membership state machine, as Kafka's group
//! coordinator runs it: Empty → PreparingRebalance → CompletingRebalance →
//! Stable, generations, the join / sync / heartbeat / leave cycle, static
//! members (`group_instance_id`), session and rebalance timeouts.
//!
//! Owns: [`Group`] (members, generation, leader, chosen protocol, committed
//! offsets) and its transitions. Pure: no I/O, no async, no channels. Time
//! comes in as an argument; replies that complete waiting requests go out as
//! [`Effects`], which the coordinator (`group::coordinator`) delivers, and
//! `Effects::persist` says the group's durable record must be rewritten.
//!
//! Invariants: a member is in `members` at most once, and a static member's
//! instance id maps to exactly that member (`static_members` is the inverse
//! of the members' instance ids, asserted by [`Group::check`]); the
//! generation only grows; in Stable and CompletingRebalance every member
//! supports the chosen protocol; a join reply names the generation the group
//! is in when it is sent; a reply is given once per waiting request (the
//! coordinator holds at most one join and one sync waiter per member).
//!
//! Must not know: the internal topic, record formats, shards or sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::messages::{
    HeartbeatRequest, JoinGroupMember, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use crate::protocol::{ErrorCode, WireError};

/// Kafka's group states, with Kafka's names ([`GroupState::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// Deleted (DeleteGroups) or expired; the coordinator drops it.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Coordinator settings that the state machine decides by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLimits {
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    /// An Empty group waits this long for more members before its first
    /// generation (Kafka's group.initial.rebalance.delay.ms).
    pub initial_rebalance_delay_ms: u32,
    /// Most members in one group.
    pub max_group_members: usize,
}

/// A committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    /// Wall-clock ms of the commit.
    pub commit_ms: i64,
    /// Offset of the record in the internal topic that holds it: a newer
    /// record for the same key always wins, whatever order commits finish in.
    pub log_offset: u64,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// Protocols in the member's order of preference, with its metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader gave it in the current generation.
    pub assignment: Bytes,
    /// Last heard from (join, sync, heartbeat, commit).
    pub last_seen: Instant,
    /// A JoinGroup of this member is waiting for the rebalance to complete.
    pub awaiting_join: bool,
    /// A SyncGroup of this member is waiting for the leader's assignment.
    pub awaiting_sync: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn session_expired(&self, now: Instant) -> bool {
        // A member inside a join or sync request is alive: its request
        // is bounded by the rebalance timeout instead.
        !self.awaiting_join
            && !self.awaiting_sync
            && now.saturating_duration_since(self.last_seen)
                >= Duration::from_millis(u64::from(self.session_timeout_ms))
    }
}

/// Replies to deliver and writes to make after a transition.
#[derive(Debug, Default)]
pub struct Effects {
    /// Waiting JoinGroup requests to answer, by member id.
    pub join_replies: Vec<(String, JoinGroupResponse)>,
    /// Waiting SyncGroup requests to answer, by member id.
    pub sync_replies: Vec<(String, SyncGroupResponse)>,
    /// The group's durable record changed: rewrite it.
    pub persist: bool,
}

impl Effects {
    fn join_error(&mut self, member: &str, code: ErrorCode, message: &str) {
        self.join_replies
            .push((member.to_string(), join_error(code, message, member)));
    }

    fn sync_error(&mut self, member: &str, code: ErrorCode, message: &str) {
        self.sync_replies
            .push((member.to_string(), sync_error(code, message)));
    }
}

/// What a JoinGroup gets now.
#[derive(Debug)]
pub enum JoinOutcome {
    /// Answered at once.
    Reply(JoinGroupResponse),
    /// The member (with this id) waits for the rebalance to complete; its
    /// reply comes in some later [`Effects::join_replies`] (maybe this call's).
    Wait { member_id: String },
}

/// What a SyncGroup gets now.
#[derive(Debug)]
pub enum SyncOutcome {
    Reply(SyncGroupResponse),
    /// Waits for the leader's assignment (a later `Effects::sync_replies`).
    Wait,
    /// The leader's assignment for `generation`: persist the group, then
    /// call [`Group::assignment_stored`].
    Persist {
        generation: i32,
    },
}

pub fn join_error(code: ErrorCode, message: &str, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse {
        error: Some(WireError::new(code, message)),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}

pub fn sync_error(code: ErrorCode, message: &str) -> SyncGroupResponse {
    SyncGroupResponse {
        error: Some(WireError::new(code, message)),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

/// Caller facts a join needs beyond the request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    /// The protocol chosen for the current generation.
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Instance id → member id of static members.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MemberIdRequired, not joined yet, and
    /// when they were handed out.
    pub pending_members: HashMap<String, Instant>,
    /// Wall-clock ms of the last state change (offset expiry of an Empty group).
    pub state_ms: i64,
    /// When the current PreparingRebalance or CompletingRebalance times out.
    pub rebalance_deadline: Option<Instant>,
    /// PreparingRebalance of an Empty group: joins are held until then
    /// (extended by each new member, never past `rebalance_deadline`).
    pub initial_delay_until: Option<Instant>,
    pub offsets: BTreeMap<(String, u32), Committed>,
    /// Members ever added, for unique member ids.
    pub next_member_seq: u64,
    /// The initial rebalance delay in force (from the last join's limits).
    pub initial_delay_step: Duration,
}

impl Group {
    pub fn new(id: &str, wall_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            state_ms: wall_ms,
            rebalance_deadline: None,
            initial_delay_until: None,
            offsets: BTreeMap::new(),
            next_member_seq: 0,
            initial_delay_step: Duration::ZERO,
        }
    }

    /// Asserts the invariants of the module header.
    pub fn check(&self) {
        for (inst, mid) in &self.static_members {
            let m = self
                .members
                .get(mid)
                .unwrap_or_else(|| panic!("group {}: static {inst} maps to absent {mid}", self.id));
            assert_eq!(m.instance_id.as_deref(), Some(inst.as_str()));
        }
        let statics = self
            .members
            .values()
            .filter(|m| m.instance_id.is_some())
            .count();
        assert_eq!(statics, self.static_members.len(), "group {}", self.id);
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            let p = self.protocol.as_deref().unwrap_or("");
            for m in self.members.values() {
                assert!(
                    m.protocols.iter().any(|(n, _)| n == p),
                    "group {}: member {} lacks protocol {p}",
                    self.id,
                    m.id
                );
            }
        }
        if let Some(l) = &self.leader {
            assert!(
                self.members.contains_key(l),
                "group {}: leader {l}",
                self.id
            );
        }
    }

    /// True when the group holds nothing worth keeping (no members, no
    /// offsets): the coordinator may forget it.
    pub fn is_disposable(&self) -> bool {
        self.members.is_empty() && self.offsets.is_empty() && self.pending_members.is_empty()
    }

    fn rebalance_timeout(&self) -> Duration {
        let ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::from(ms))
    }

    fn new_member_id(&mut self, client_id: &str, wall_ms: i64) -> String {
        self.next_member_seq += 1;
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        // Unique across restarts: the wall clock plus a per-group sequence
        // and a hash of both (member ids are opaque to clients).
        let salt = crate::group::records::hash64(&format!("{wall_ms}/{}", self.next_member_seq));
        format!("{prefix}-{wall_ms:x}-{}-{salt:016x}", self.next_member_seq)
    }

    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> Option<WireError> {
        let inst = instance_id?;
        match self.static_members.get(inst) {
            Some(current) if current != member_id => Some(err(
                ErrorCode::FencedInstanceId,
                format!("group instance id '{inst}' now belongs to another member"),
            )),
            _ => None,
        }
    }

    /// Does the group accept these protocols (type matches, and they share
    /// one with every member)?
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols(None);
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// Protocols every member (but `except`) supports.
    fn candidate_protocols(&self, except: Option<&str>) -> BTreeSet<String> {
        let mut it = self
            .members
            .values()
            .filter(|m| Some(m.id.as_str()) != except);
        let Some(first) = it.next() else {
            return BTreeSet::new();
        };
        let mut set: BTreeSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            let theirs: BTreeSet<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            set = set.intersection(&theirs).cloned().collect();
        }
        set
    }

    /// Kafka's vote: each member votes for its most preferred candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols(None);
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map(|(n, _)| n.to_string())
    }

    fn set_state(&mut self, state: GroupState, wall_ms: i64) {
        self.state = state;
        self.state_ms = wall_ms;
    }

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

        if req.member_id.is_empty() {
            if let Some(inst) = instance {
                if let Some(old_id) = self.static_members.get(inst).cloned() {
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
                self.pending_members.insert(id.clone(), now);
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
        if self.pending_members.remove(&id).is_some() {
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
                if m.awaiting_join {
                    // A retry of a join still waiting: the old request is
                    // superseded (the coordinator replaces its waiter).
                    fx.join_error(
                        &id,
                        ErrorCode::RebalanceInProgress,
                        "superseded by a newer join",
                    );
                }
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
    fn rejoin_static(
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
        let changed = m.protocols != protocols;
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
        if self.state == GroupState::Stable && !changed {
            let is_leader = self.leader.as_deref() == Some(new_id.as_str());
            let mut resp = self.join_response(&new_id, false);
            if is_leader {
                // The leader gets the members too, so it can compute a new
                // assignment if it wants; the current one stays in force.
                resp = self.join_response(&new_id, true);
            }
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

    fn add_member(
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
            self.static_members.insert(inst.clone(), id.to_string());
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
    fn prepare_rebalance(
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
}

impl Group {
    /// Completes the join phase once every member has rejoined (and no
    /// initial delay holds it), or at the rebalance deadline.
    fn try_complete_join(&mut self, now: Instant, wall_ms: i64, fx: &mut Effects) {
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

    fn complete_join(&mut self, now: Instant, wall_ms: i64, fx: &mut Effects) {
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
    fn join_response(&self, id: &str, with_members: bool) -> JoinGroupResponse {
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

    /// Removes a member, answering its waiting requests; the group then
    /// rebalances (or completes a pending join without it).
    fn remove(&mut self, id: &str, fx: &mut Effects) {
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
    fn remove_and_update(&mut self, ids: &[String], now: Instant, wall_ms: i64, fx: &mut Effects) {
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
    fn check_member(
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
        self.pending_members
            .retain(|_, since| now.saturating_duration_since(*since) < Duration::from_secs(300));
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
