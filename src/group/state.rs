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

use crate::protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use crate::protocol::{ErrorCode, WireError};

mod join;
mod members;

/// Most bytes of metadata (per protocol) or assignment one member may
/// carry: the group's durable record holds them all.
pub const MAX_MEMBER_METADATA_BYTES: usize = 1024 * 1024;

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
    /// when they are forgotten (after the session timeout they asked for).
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
}
