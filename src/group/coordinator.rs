//! The group coordinator of one `__consumer_offsets` partition: the groups
//! that hash to it, their waiting requests, their timers, and their durable
//! state in that partition's log.
//!
//! Owns: [`Coordinator`]: loading (replaying the partition from its log
//! start), the join / sync / heartbeat / leave / commit / fetch / list /
//! describe / delete entry points, delivery of [`Effects`] to waiting
//! requests, the ticker (sessions, rebalance timeouts, offset expiry after
//! `offsets_retention_ms`, snapshots), and the snapshot that keeps the
//! partition bounded: once the log written since the last snapshot passes
//! `max(snapshot_min_bytes, 2 × the last snapshot)`, every live key is
//! rewritten and the log start moves to the snapshot's first offset.
//!
//! Invariants: runs on the shard that owns its partition, only; a commit is
//! answered only after its record is durable (the internal topic is
//! flush=always), and is applied in memory only then; a snapshot is taken
//! only while no write is in flight, so every record below it is already
//! applied and nothing acknowledged is dropped with the old log; at most one
//! join and one sync waiter per member (a newer request supersedes the older
//! one, which is answered RebalanceInProgress); no `RefCell` borrow is held
//! across an await.
//!
//! Must not know: wire formats, connections, other shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::channels::oneshot::{oneshot, Sender};

use crate::io::Clock;
use crate::partition::Partition;
use crate::protocol::batch::{batches, records, verify_crc};
use crate::protocol::messages::{
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupMemberResult,
    LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use crate::protocol::{ErrorCode, WireError};

use super::records::{encode_batches, from_hex, to_hex, Entry, GroupValue, Key, MemberValue};
use super::state::{
    join_error, sync_error, ClientInfo, Committed, Effects, Group, GroupLimits, GroupState,
    JoinOutcome, Member, SyncOutcome,
};

mod requests;
mod upkeep;

/// Coordinator settings (from `[groups]` in corelog.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    pub limits: GroupLimits,
    /// An Empty group's offsets are deleted this long after its last
    /// commit or state change, in ms.
    pub offsets_retention_ms: u64,
    /// Longest metadata string a commit may carry, in bytes.
    pub offset_metadata_max_bytes: usize,
    /// Log bytes written since the last snapshot before the next one.
    pub snapshot_min_bytes: u64,
    /// How often sessions and rebalance deadlines are checked, in ms.
    pub tick_ms: u64,
}

/// Largest batch the coordinator writes, in bytes.
const MAX_WRITE_BATCH_BYTES: usize = 512 * 1024;
/// Bytes read per fetch while loading.
const LOAD_READ_BYTES: u32 = 4 * 1024 * 1024;
/// How often Empty groups are checked for offset expiry, in ms.
const EXPIRY_CHECK_MS: u64 = 60_000;

type Waiters<T> = RefCell<HashMap<(String, String), Sender<T>>>;

/// See the module header.
pub struct Coordinator {
    partition: Rc<Partition>,
    clock: Clock,
    settings: GroupSettings,
    groups: RefCell<HashMap<String, Group>>,
    /// The group records as the log has them (what a snapshot rewrites).
    persisted: RefCell<HashMap<String, GroupValue>>,
    join_waiters: Waiters<JoinGroupResponse>,
    sync_waiters: Waiters<SyncGroupResponse>,
    loaded: Cell<bool>,
    stopped: Cell<bool>,
    writes_in_flight: Cell<u32>,
    /// Commits written and not yet applied, per group (expiry skips them).
    commits_in_flight: RefCell<HashMap<String, u32>>,
    /// Why loading failed: every request gets it (not retriable).
    load_failed: RefCell<Option<WireError>>,
    bytes_since_snapshot: Cell<u64>,
    last_snapshot_bytes: Cell<u64>,
}

impl Coordinator {
    /// A coordinator for `partition`, not loaded yet: requests get
    /// CoordinatorLoadInProgress until [`Coordinator::load`] finishes.
    pub fn new(partition: Rc<Partition>, clock: Clock, settings: GroupSettings) -> Rc<Self> {
        Rc::new(Coordinator {
            partition,
            clock,
            settings,
            groups: RefCell::new(HashMap::new()),
            persisted: RefCell::new(HashMap::new()),
            join_waiters: RefCell::new(HashMap::new()),
            sync_waiters: RefCell::new(HashMap::new()),
            loaded: Cell::new(false),
            stopped: Cell::new(false),
            writes_in_flight: Cell::new(0),
            commits_in_flight: RefCell::new(HashMap::new()),
            load_failed: RefCell::new(None),
            bytes_since_snapshot: Cell::new(0),
            last_snapshot_bytes: Cell::new(0),
        })
    }

    /// Replays the partition from its log start up to its high watermark,
    /// then starts the ticker.
    pub async fn load(self: &Rc<Self>) -> Result<(), WireError> {
        let r = self.load_inner().await;
        if let Err(e) = &r {
            // Not retriable: the same read would fail again. The partition
            // needs an operator (docs/consumer-groups.md).
            *self.load_failed.borrow_mut() = Some(WireError::new(
                ErrorCode::StorageError,
                format!(
                    "the group coordinator of {} could not load its state: {}",
                    self.partition.topic_partition(),
                    e.message
                ),
            ));
        }
        r
    }

    async fn load_inner(self: &Rc<Self>) -> Result<(), WireError> {
        let started = std::time::Instant::now();
        let mut offset = self.partition.log_start_offset();
        let mut bytes = 0u64;
        let mut records_read = 0u64;
        loop {
            let end = self.partition.high_watermark();
            if offset >= end || self.stopped.get() {
                break;
            }
            let data = self
                .partition
                .fetch(offset, LOAD_READ_BYTES)
                .await
                .map_err(|e| e.to_wire())?;
            let buf = data.records.to_bytes();
            if buf.is_empty() {
                break;
            }
            let before = offset;
            for b in batches(&buf) {
                let (h, raw) = b.map_err(|e| {
                    WireError::new(ErrorCode::CorruptData, format!("offsets log: {e}"))
                })?;
                verify_crc(raw).map_err(|e| {
                    WireError::new(ErrorCode::CorruptData, format!("offsets log: {e}"))
                })?;
                bytes += raw.len() as u64;
                for r in records(raw)
                    .map_err(|e| WireError::new(ErrorCode::CorruptData, e.to_string()))?
                {
                    let r = r.map_err(|e| WireError::new(ErrorCode::CorruptData, e.to_string()))?;
                    let at = h.base_offset + u64::from(r.offset_delta);
                    if at < offset {
                        continue;
                    }
                    if let Some(e) = Entry::decode(r.key, r.value) {
                        self.apply_loaded(e, at);
                        records_read += 1;
                    }
                }
                offset = offset.max(h.next_offset());
            }
            if offset == before {
                break;
            }
        }
        self.rebuild_groups();
        self.bytes_since_snapshot.set(bytes);
        self.loaded.set(true);
        tracing::info!(
            partition = %self.partition.topic_partition(),
            groups = self.groups.borrow().len(),
            records = records_read,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
        self.start_ticker();
        Ok(())
    }

    fn apply_loaded(&self, e: Entry, at: u64) {
        let now_wall = self.clock.wall_ms();
        match e {
            Entry::Offset(
                Key::Offset {
                    group,
                    topic,
                    partition,
                    ..
                },
                v,
            ) => {
                let mut groups = self.groups.borrow_mut();
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now_wall));
                let c = v.map(|v| Committed {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_ms: v.commit_ms,
                    log_offset: at,
                });
                g.apply_offset(&topic, partition, c, at);
            }
            Entry::Group(Key::Group { group, .. }, v) => {
                let mut persisted = self.persisted.borrow_mut();
                match v {
                    Some(v) => {
                        persisted.insert(group, v);
                    }
                    None => {
                        persisted.remove(&group);
                        self.groups.borrow_mut().remove(&group);
                    }
                }
            }
            // The key kind and the entry kind always agree (Entry::decode).
            other => unreachable!("mismatched entry {other:?}"),
        }
    }

    /// After a replay: groups from their membership records (Stable with
    /// their members, or Empty), keeping the offsets already applied.
    fn rebuild_groups(&self) {
        let now = self.clock.now();
        let persisted = self.persisted.borrow();
        let mut groups = self.groups.borrow_mut();
        for (id, v) in persisted.iter() {
            let g = groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(id, v.state_ms));
            restore(g, v, now);
        }
        groups.retain(|_, g| !g.is_disposable() || persisted.contains_key(&g.id));
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.get()
    }

    /// Stops the ticker and answers every waiting request (the partition is
    /// closing: clients look the coordinator up again).
    pub fn stop(&self) {
        self.stopped.set(true);
        for (_, tx) in self.join_waiters.borrow_mut().drain() {
            let _ = tx.send(join_error(
                ErrorCode::NotCoordinator,
                "the coordinator is shutting down",
                "",
            ));
        }
        for (_, tx) in self.sync_waiters.borrow_mut().drain() {
            let _ = tx.send(sync_error(
                ErrorCode::NotCoordinator,
                "the coordinator is shutting down",
            ));
        }
    }

    /// Drops a group that holds nothing (no members, no pending members, no
    /// offsets, no durable record): made by a request that was refused.
    fn forget_if_disposable(&self, group: &str) {
        let mut groups = self.groups.borrow_mut();
        let disposable = groups
            .get(group)
            .is_some_and(|g| g.is_disposable() && g.state == GroupState::Empty)
            && !self.persisted.borrow().contains_key(group);
        if disposable {
            groups.remove(group);
        }
    }

    fn ready(&self) -> Result<(), WireError> {
        if let Some(e) = self.load_failed.borrow().as_ref() {
            return Err(e.clone());
        }
        if self.stopped.get() {
            return Err(WireError::new(
                ErrorCode::NotCoordinator,
                "this coordinator is shutting down",
            ));
        }
        if !self.loaded.get() {
            return Err(WireError::new(
                ErrorCode::CoordinatorLoadInProgress,
                "the group coordinator is loading its state; retry",
            ));
        }
        Ok(())
    }

    fn deliver(self: &Rc<Self>, group: &str, fx: Effects) {
        for (member, resp) in fx.join_replies {
            if let Some(tx) = self
                .join_waiters
                .borrow_mut()
                .remove(&(group.to_string(), member))
            {
                let _ = tx.send(resp);
            }
        }
        for (member, resp) in fx.sync_replies {
            if let Some(tx) = self
                .sync_waiters
                .borrow_mut()
                .remove(&(group.to_string(), member))
            {
                let _ = tx.send(resp);
            }
        }
        if fx.persist {
            let me = self.clone();
            let group = group.to_string();
            glommio::spawn_local(async move {
                if let Err(e) = me.persist_group(&group, true).await {
                    tracing::warn!(group = %group, "writing the group record failed: {e}");
                }
            })
            .detach();
        }
    }

    // ------------------------------------------------------------ writes

    /// Appends `entries` (synchronously, in order) and waits until they
    /// are durable; answers each entry's offset in the log.
    async fn write(&self, entries: &[Entry]) -> Result<Vec<u64>, WireError> {
        let wall = self.clock.wall_ms();
        let mut tickets = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        let mut bytes = 0u64;
        for b in encode_batches(entries, wall, MAX_WRITE_BATCH_BYTES) {
            bytes += b.len() as u64;
            let t = self.partition.append(b).map_err(|e| e.to_wire())?;
            let r = t.result();
            offsets.extend(r.base_offset..=r.last_offset);
            tickets.push(t);
        }
        assert_eq!(offsets.len(), entries.len(), "one offset per record");
        self.writes_in_flight.set(self.writes_in_flight.get() + 1);
        let mut result = Ok(());
        for t in tickets {
            if let Err(e) = t.wait().await {
                result = Err(e.to_wire());
            }
        }
        self.writes_in_flight.set(self.writes_in_flight.get() - 1);
        result?;
        self.bytes_since_snapshot
            .set(self.bytes_since_snapshot.get() + bytes);
        Ok(offsets)
    }

    /// Writes the group's membership record as the group is now (or a
    /// tombstone if it is gone).
    /// `settled_only`: write only a Stable or Empty group (a write asked for
    /// by a transition that a newer rebalance has already overtaken is
    /// skipped; the next Stable writes). The leader's sync writes its
    /// CompletingRebalance group with the new assignment (`false`).
    async fn persist_group(&self, group: &str, settled_only: bool) -> Result<(), WireError> {
        let value = match self.groups.borrow().get(group) {
            Some(g)
                if settled_only && !matches!(g.state, GroupState::Stable | GroupState::Empty) =>
            {
                return Ok(());
            }
            g => g.map(group_value),
        };
        let entry = Entry::Group(Key::group(group), value.clone());
        self.write(std::slice::from_ref(&entry)).await?;
        let mut persisted = self.persisted.borrow_mut();
        match value {
            Some(v) => {
                persisted.insert(group.to_string(), v);
            }
            None => {
                persisted.remove(group);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ membership

    pub async fn join(
        self: &Rc<Self>,
        req: JoinGroupRequest,
        client: ClientInfo,
    ) -> JoinGroupResponse {
        if let Err(e) = self.ready() {
            return join_error(e.code, &e.message, &req.member_id);
        }
        if req.group_id.is_empty() {
            return join_error(
                ErrorCode::InvalidGroupId,
                "the group id is empty",
                &req.member_id,
            );
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let (outcome, fx) = {
            let mut groups = self.groups.borrow_mut();
            let g = groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Group::new(&req.group_id, wall));
            let r = g.join(&req, &client, &self.settings.limits, now, wall);
            g.check();
            r
        };
        match outcome {
            JoinOutcome::Reply(r) => {
                if r.error.is_some() {
                    // A refused join leaves no phantom group behind.
                    self.forget_if_disposable(&req.group_id);
                }
                let mut fx = fx;
                let persist = std::mem::take(&mut fx.persist);
                self.deliver(&req.group_id, fx);
                if persist && r.error.is_none() {
                    // A static member's new id: durable before the member
                    // learns it, or a restart could bring back the old one
                    // and fence the live instance.
                    if let Err(e) = self.persist_group(&req.group_id, true).await {
                        return join_error(ErrorCode::CoordinatorNotAvailable, &e.message, "");
                    }
                }
                r
            }
            JoinOutcome::Wait { member_id } => {
                let (tx, rx) = oneshot();
                let key = (req.group_id.clone(), member_id.clone());
                if let Some(old) = self.join_waiters.borrow_mut().insert(key, tx) {
                    let _ = old.send(join_error(
                        ErrorCode::RebalanceInProgress,
                        "superseded by a newer JoinGroup of this member",
                        &member_id,
                    ));
                }
                self.deliver(&req.group_id, fx);
                rx.await.unwrap_or_else(|_| {
                    join_error(
                        ErrorCode::NotCoordinator,
                        "the coordinator stopped",
                        &member_id,
                    )
                })
            }
        }
    }

    pub async fn sync(self: &Rc<Self>, req: SyncGroupRequest) -> SyncGroupResponse {
        if let Err(e) = self.ready() {
            return sync_error(e.code, &e.message);
        }
        let now = self.clock.now();
        let outcome = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(&req.group_id) {
                None => SyncOutcome::Reply(sync_error(
                    ErrorCode::UnknownMemberId,
                    &format!("group '{}' does not exist", req.group_id),
                )),
                Some(g) => g.sync(&req, now),
            }
        };
        let rx = match outcome {
            SyncOutcome::Reply(r) => return r,
            SyncOutcome::Wait => self.sync_waiter(&req),
            SyncOutcome::Persist { generation } => {
                let rx = self.sync_waiter(&req);
                let stored = self.persist_group(&req.group_id, false).await;
                let (now, wall) = (self.clock.now(), self.clock.wall_ms());
                let fx = self
                    .groups
                    .borrow_mut()
                    .get_mut(&req.group_id)
                    .map(|g| g.assignment_stored(generation, stored, now, wall))
                    .unwrap_or_default();
                self.deliver(&req.group_id, fx);
                rx
            }
        };
        rx.await
            .unwrap_or_else(|_| sync_error(ErrorCode::NotCoordinator, "the coordinator stopped"))
    }

    fn sync_waiter(
        &self,
        req: &SyncGroupRequest,
    ) -> glommio::channels::oneshot::Receiver<SyncGroupResponse> {
        let (tx, rx) = oneshot();
        let key = (req.group_id.clone(), req.member_id.clone());
        if let Some(old) = self.sync_waiters.borrow_mut().insert(key, tx) {
            let _ = old.send(sync_error(
                ErrorCode::RebalanceInProgress,
                "superseded by a newer SyncGroup of this member",
            ));
        }
        rx
    }

    pub fn heartbeat(&self, req: &HeartbeatRequest) -> Result<(), WireError> {
        self.ready()?;
        let now = self.clock.now();
        match self.groups.borrow_mut().get_mut(&req.group_id) {
            None => Err(WireError::new(
                ErrorCode::UnknownMemberId,
                format!("group '{}' does not exist", req.group_id),
            )),
            Some(g) => g.heartbeat(req, now),
        }
    }

    pub fn leave(self: &Rc<Self>, req: &LeaveGroupRequest) -> LeaveGroupResponse {
        if let Err(e) = self.ready() {
            return LeaveGroupResponse {
                error: Some(e),
                members: Vec::new(),
            };
        }
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let mut results = Vec::with_capacity(req.members.len());
        for m in &req.members {
            let (r, fx) = match self.groups.borrow_mut().get_mut(&req.group_id) {
                None => (
                    Err(WireError::new(
                        ErrorCode::UnknownMemberId,
                        format!("group '{}' does not exist", req.group_id),
                    )),
                    Effects::default(),
                ),
                Some(g) => {
                    let r = g.leave(&m.member_id, m.group_instance_id.as_deref(), now, wall);
                    g.check();
                    r
                }
            };
            if r.is_ok() {
                tracing::info!(
                    group = %req.group_id,
                    member = %m.member_id,
                    reason = m.reason.as_deref().unwrap_or(""),
                    "member left"
                );
            }
            self.deliver(&req.group_id, fx);
            results.push(LeaveGroupMemberResult {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                error: r.err(),
            });
        }
        LeaveGroupResponse {
            error: None,
            members: results,
        }
    }
}

fn metadata_for(m: &Member, protocol: &str) -> Bytes {
    m.protocols
        .iter()
        .find(|(n, _)| n == protocol)
        .map(|(_, b)| b.clone())
        .unwrap_or_default()
}

/// The membership record of `g` as it is now.
fn group_value(g: &Group) -> GroupValue {
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupValue {
        v: GroupValue::version(),
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        generation: g.generation,
        leader: g.leader.clone(),
        state_ms: g.state_ms,
        members: g
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscription: to_hex(&metadata_for(m, &protocol)),
                assignment: to_hex(&m.assignment),
            })
            .collect(),
    }
}

/// A group as its membership record says: Stable with those members (their
/// sessions start now), or Empty.
fn restore(g: &mut Group, v: &GroupValue, now: Instant) {
    g.generation = v.generation;
    g.protocol_type = v.protocol_type.clone();
    g.protocol = v.protocol.clone();
    g.state_ms = v.state_ms;
    g.members.clear();
    g.static_members.clear();
    let protocol = v.protocol.clone().unwrap_or_default();
    // Members without a chosen protocol cannot be restored as Stable: they
    // rejoin instead.
    let members: &[MemberValue] = if v.protocol.is_some() {
        &v.members
    } else {
        &[]
    };
    for m in members {
        let member = Member {
            id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout_ms: m.session_timeout_ms,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            protocols: vec![(
                protocol.clone(),
                from_hex(&m.subscription).unwrap_or_default(),
            )],
            assignment: from_hex(&m.assignment).unwrap_or_default(),
            last_seen: now,
            awaiting_join: false,
            awaiting_sync: false,
        };
        if let Some(inst) = &m.instance_id {
            g.static_members.insert(inst.clone(), m.member_id.clone());
        }
        g.members.insert(m.member_id.clone(), member);
    }
    g.leader = v.leader.clone().filter(|l| g.members.contains_key(l));
    g.state = if g.members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    if g.state == GroupState::Stable && g.leader.is_none() {
        g.leader = g.members.keys().next().cloned();
    }
    g.check();
}
