//! A consumer's membership in a consumer group: joining (JoinGroup with the
//! MemberIdRequired round trip, the leader's assignment, SyncGroup), the
//! background heartbeat, the max-poll-interval watchdog, leaving, and the
//! group requests a consumer makes (committed offsets in and out).
//!
//! Owns: [`GroupConfig`], [`RebalanceEvent`], and [`Membership`]: the member
//! id and generation, the join task (run in the background so a consumer
//! keeps fetching the partitions it owns during a cooperative rebalance),
//! and what the heartbeat learnt (rejoin needed, membership lost).
//!
//! Invariants: requests to the coordinator go over the membership's own
//! connection, so a long JoinGroup never delays fetches; at most one join
//! task runs at a time; a member whose generation is gone (UnknownMemberId,
//! IllegalGeneration, FencedInstanceId, poll timeout) never commits with it
//! again: its partitions are reported lost, not revoked; shared state is
//! borrowed only inside synchronous code, never across an `.await`.
//!
//! Must not know: how records are fetched or positions kept (`consumer`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::admin::unexpected;
use super::assignor::AssignorKind;
use super::connection::ReconnectingConnection;
use super::sync::{oneshot, OneshotReceiver};
use super::{ClientConfig, ClientError};
use crate::protocol::messages::{
    HeartbeatRequest, LeaveGroupMember, LeaveGroupRequest, OffsetCommitPartition,
    OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest, OffsetFetchTopic, RequestBody,
    ResponseBody,
};
use crate::protocol::{ErrorCode, TopicPartition, WireError};

mod join;
use join::join_and_sync;

/// Kafka's protocol type for consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// An error (Kafka's `none`).
    None,
}

/// Group settings of a consumer (Kafka's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub group_id: String,
    /// Static membership: a member restarted within its session timeout
    /// gets its partitions back without a rebalance.
    pub group_instance_id: Option<String>,
    /// The coordinator drops a member it has not heard from for this long, in ms.
    pub session_timeout_ms: u32,
    /// How often the member heartbeats, in ms.
    pub heartbeat_interval_ms: u32,
    /// A member that does not poll for this long leaves the group (its
    /// partitions go to others), in ms; also the rebalance timeout.
    pub max_poll_interval_ms: u32,
    /// Assignors in order of preference.
    pub assignors: Vec<AssignorKind>,
    /// Commit the positions of owned partitions every
    /// `auto_commit_interval_ms` during `poll`, before partitions are
    /// revoked, and on close.
    pub enable_auto_commit: bool,
    pub auto_commit_interval_ms: u32,
    pub auto_offset_reset: OffsetReset,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            assignors: vec![AssignorKind::CooperativeSticky],
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            auto_offset_reset: OffsetReset::Latest,
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        if self.group_id.is_empty() {
            return Err(ClientError::Config("group_id is empty".into()));
        }
        if self.assignors.is_empty() {
            return Err(ClientError::Config("no assignor configured".into()));
        }
        let cooperative = self.assignors[0].is_cooperative();
        if self
            .assignors
            .iter()
            .any(|a| a.is_cooperative() != cooperative)
        {
            return Err(ClientError::Config(
                "assignors mix cooperative and eager protocols".into(),
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return Err(ClientError::Config(format!(
                "heartbeat_interval_ms ({}) must be > 0 and below session_timeout_ms ({})",
                self.heartbeat_interval_ms, self.session_timeout_ms
            )));
        }
        Ok(())
    }
}

/// What a rebalance did to this member, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Now owned (their positions come from committed offsets or the reset policy).
    Assigned(Vec<TopicPartition>),
    /// Given up in an orderly rebalance (after their positions were committed
    /// when auto-commit is on).
    Revoked(Vec<TopicPartition>),
    /// Taken away without a chance to commit: the member's generation was
    /// gone (session expired, poll interval passed, fenced).
    Lost(Vec<TopicPartition>),
}

/// The result of a completed join + sync.
#[derive(Debug)]
pub(crate) struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub assigned: BTreeSet<TopicPartition>,
}

#[derive(Debug, Default)]
struct Shared {
    member_id: String,
    generation: i32,
    /// A rebalance is needed (the heartbeat said so, or partitions were revoked).
    rejoin: bool,
    /// The generation was lost: owned partitions are dropped without commit.
    lost: bool,
    /// A join task is running.
    joining: bool,
    last_poll: Option<Instant>,
    /// The watchdog fired since the last poll: membership was given up.
    poll_expired: bool,
    closed: bool,
    /// An error the consumer must see (e.g. fenced static member, or a
    /// join the coordinator refused for good).
    fatal: Option<WireError>,
}

/// See the module header.
pub(crate) struct Membership {
    pub config: GroupConfig,
    pub topics: Vec<String>,
    conn: Rc<ReconnectingConnection>,
    request_timeout_ms: u64,
    shared: Rc<RefCell<Shared>>,
    join_rx: Option<OneshotReceiver<Result<Joined, ClientError>>>,
}

fn retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::RebalanceInProgress
            | ErrorCode::RequestTimedOut
    )
}

impl Membership {
    pub async fn new(
        client: &ClientConfig,
        config: GroupConfig,
        topics: Vec<String>,
    ) -> Result<Membership, ClientError> {
        config.validate()?;
        if topics.is_empty() {
            return Err(ClientError::Config(
                "subscribe to at least one topic".into(),
            ));
        }
        let conn = Rc::new(ReconnectingConnection::connect(client).await?);
        let shared = Rc::new(RefCell::new(Shared {
            generation: -1,
            rejoin: true,
            last_poll: Some(Instant::now()),
            ..Shared::default()
        }));
        let m = Membership {
            config,
            topics,
            conn,
            request_timeout_ms: client.request_timeout_ms,
            shared,
            join_rx: None,
        };
        m.start_heartbeat();
        Ok(m)
    }

    pub fn member_id(&self) -> String {
        self.shared.borrow().member_id.clone()
    }

    pub fn generation(&self) -> i32 {
        self.shared.borrow().generation
    }

    /// Called at every poll (the max-poll-interval watchdog's clock).
    pub fn polled(&self) {
        let mut s = self.shared.borrow_mut();
        s.last_poll = Some(Instant::now());
        s.poll_expired = false;
    }

    pub fn fatal(&self) -> Option<ClientError> {
        self.shared.borrow().fatal.clone().map(ClientError::Broker)
    }

    /// Takes the "generation lost" mark (the consumer drops its partitions).
    pub fn take_lost(&self) -> bool {
        std::mem::take(&mut self.shared.borrow_mut().lost)
    }

    pub fn needs_rejoin(&self) -> bool {
        let s = self.shared.borrow();
        s.rejoin && !s.joining
    }

    pub fn request_rejoin(&self) {
        self.shared.borrow_mut().rejoin = true;
    }

    pub fn is_joining(&self) -> bool {
        self.shared.borrow().joining
    }

    /// Starts a join in the background; `owned` goes into the subscription
    /// (cooperative assignors keep owners where they can).
    pub fn start_join(&mut self, owned: Vec<TopicPartition>) {
        {
            let mut s = self.shared.borrow_mut();
            if s.joining {
                return;
            }
            s.joining = true;
            s.rejoin = false;
        }
        let (tx, rx) = oneshot();
        self.join_rx = Some(rx);
        let conn = self.conn.clone();
        let config = self.config.clone();
        let topics = self.topics.clone();
        let shared = self.shared.clone();
        let timeout = self.request_timeout_ms;
        glommio::spawn_local(async move {
            let r = join_and_sync(&conn, &config, &topics, &shared, owned, timeout).await;
            {
                let mut s = shared.borrow_mut();
                s.joining = false;
                match &r {
                    // A join that finished after the poll watchdog gave the
                    // membership up is not adopted: the next poll rejoins.
                    Ok(_) if s.poll_expired => s.rejoin = true,
                    Ok(j) => {
                        s.member_id = j.member_id.clone();
                        s.generation = j.generation;
                    }
                    Err(e) => {
                        s.rejoin = true;
                        // join_and_sync retries what a rejoin can fix; any
                        // other refusal (fenced, invalid session timeout,
                        // inconsistent protocol, group full) would only be
                        // refused again, at once, in a tight loop.
                        if let ClientError::Broker(w) = e {
                            if !retriable(w.code)
                                && !matches!(
                                    w.code,
                                    ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration
                                )
                            {
                                s.fatal = Some(w.clone());
                            }
                        }
                    }
                }
            }
            tx.send(r);
        })
        .detach();
    }

    /// The finished join, if the join task is done (waiting at most `wait`).
    pub async fn joined(&mut self, wait: Duration) -> Option<Result<Joined, ClientError>> {
        let rx = self.join_rx.as_mut()?;
        let got = futures_lite::future::or(async { rx.await.map(Some) }, async {
            crate::timer::sleep_once(wait).await;
            Some(None)
        })
        .await;
        match got {
            // The task ended without answering (it cannot: it always sends).
            None => {
                self.join_rx = None;
                Some(Err(ClientError::Closed))
            }
            Some(None) => None,
            Some(Some(r)) => {
                self.join_rx = None;
                Some(r)
            }
        }
    }

    fn start_heartbeat(&self) {
        let conn = self.conn.clone();
        let config = self.config.clone();
        let shared = self.shared.clone();
        let timeout = self.request_timeout_ms;
        glommio::spawn_local(async move {
            let interval = Duration::from_millis(u64::from(config.heartbeat_interval_ms));
            loop {
                crate::timer::sleep(interval).await;
                if shared.borrow().closed {
                    break;
                }
                heartbeat_once(&conn, &config, &shared, timeout).await;
            }
        })
        .detach();
    }

    // ------------------------------------------------------------ offsets

    /// Commits `offsets` (the next offset to read, per partition) with this
    /// member's generation; per-partition errors fail the whole call.
    pub async fn commit(&self, offsets: &[(TopicPartition, u64)]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, generation) = self.commit_generation()?;
        let req = member_commit(&self.config, &member_id, generation, offsets);
        let r = commit_with(&self.conn, req).await;
        self.commit_failed(generation, r)
    }

    /// The member id and generation a commit may use now: none while this
    /// member's own join is in flight (as Kafka's consumer: the generation
    /// is about to change), none outside a generation.
    fn commit_generation(&self) -> Result<(String, i32), ClientError> {
        let s = self.shared.borrow();
        if s.joining || s.generation < 0 {
            return Err(ClientError::Broker(WireError::new(
                ErrorCode::RebalanceInProgress,
                "this member is (re)joining its group: commit again after the next poll",
            )));
        }
        Ok((s.member_id.clone(), s.generation))
    }

    /// Maps a commit's outcome: a generation error for the generation still
    /// held means membership is lost; if a join moved this member on since
    /// the request left, it is only a retriable RebalanceInProgress.
    fn commit_failed(
        &self,
        sent_generation: i32,
        r: Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let Err(e) = r else {
            return Ok(());
        };
        if !matches!(
            e.wire_code(),
            Some(ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId)
        ) {
            return Err(e);
        }
        let mut s = self.shared.borrow_mut();
        if s.joining || s.generation != sent_generation {
            return Err(ClientError::Broker(WireError::new(
                ErrorCode::RebalanceInProgress,
                format!("the group moved to a new generation during the commit: {e}"),
            )));
        }
        s.rejoin = true;
        s.lost = true;
        s.generation = -1;
        Err(e)
    }

    /// A commit of `offsets` as a future that owns what it needs
    /// (`Consumer::commit_async`).
    pub fn commit_task(
        &self,
        offsets: Vec<(TopicPartition, u64)>,
    ) -> impl std::future::Future<Output = Result<(), ClientError>> + 'static {
        let conn = self.conn.clone();
        let config = self.config.clone();
        let ready = self.commit_generation();
        async move {
            let (member_id, generation) = ready?;
            if offsets.is_empty() {
                return Ok(());
            }
            commit_with(
                &conn,
                member_commit(&config, &member_id, generation, &offsets),
            )
            .await
        }
    }

    /// Committed offsets of `partitions` (`None`: nothing committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, ClientError> {
        fetch_committed(&self.conn, &self.config.group_id, Some(partitions)).await
    }

    /// Leaves the group (dynamic members; a static member stays until its
    /// session times out, so a quick restart keeps its partitions).
    pub async fn leave(&self, reason: &str) {
        let (member_id, instance) = {
            let mut s = self.shared.borrow_mut();
            s.closed = true;
            (s.member_id.clone(), self.config.group_instance_id.clone())
        };
        if member_id.is_empty() || instance.is_some() {
            return;
        }
        let _ = leave_group(&self.conn, &self.config.group_id, &member_id, reason).await;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shared.borrow_mut().closed = true;
    }
}

/// A member's OffsetCommit.
fn member_commit(
    config: &GroupConfig,
    member_id: &str,
    generation: i32,
    offsets: &[(TopicPartition, u64)],
) -> OffsetCommitRequest {
    let instance = config.group_instance_id.clone();
    commit_request(&config.group_id, member_id, generation, instance, offsets)
}

/// An OffsetCommit of `offsets` (grouped by topic) for a member, or for an
/// admin (`generation -1`, no member id, no instance id).
pub(crate) fn commit_request(
    group_id: &str,
    member_id: &str,
    generation: i32,
    group_instance_id: Option<String>,
    offsets: &[(TopicPartition, u64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for (tp, o) in offsets {
        let p = OffsetCommitPartition {
            partition: tp.partition,
            offset: *o,
            leader_epoch: None,
            metadata: None,
        };
        match topics.iter_mut().find(|t| t.name == tp.topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(OffsetCommitTopic {
                name: tp.topic.clone(),
                partitions: vec![p],
            }),
        }
    }
    OffsetCommitRequest {
        group_id: group_id.to_string(),
        generation_id: generation,
        member_id: member_id.to_string(),
        group_instance_id,
        topics,
    }
}

/// Sends an OffsetCommit; the first per-partition error is the call's error.
pub(crate) async fn commit_with(
    conn: &ReconnectingConnection,
    req: OffsetCommitRequest,
) -> Result<(), ClientError> {
    let resp = match conn
        .get()
        .await?
        .request(RequestBody::OffsetCommit(req))
        .await?
    {
        ResponseBody::OffsetCommit(r) => r,
        other => return Err(unexpected("OffsetCommit", &other)),
    };
    for t in resp.topics {
        for p in t.partitions {
            if let Some(e) = p.error {
                return Err(ClientError::Broker(WireError::new(
                    e.code,
                    format!("commit of {}/{}: {}", t.name, p.partition, e.message),
                )));
            }
        }
    }
    Ok(())
}

/// OffsetFetch for `partitions` (every partition with an offset when `None`).
pub(crate) async fn fetch_committed(
    conn: &ReconnectingConnection,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<u64>>, ClientError> {
    let topics = partitions.map(|ps| {
        let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in ps {
            by.entry(tp.topic.as_str()).or_default().push(tp.partition);
        }
        by.into_iter()
            .map(|(t, partitions)| OffsetFetchTopic {
                name: t.to_string(),
                partitions,
            })
            .collect()
    });
    let req = OffsetFetchRequest {
        group_id: group.to_string(),
        topics,
    };
    let resp = match conn
        .get()
        .await?
        .request(RequestBody::OffsetFetch(req))
        .await?
    {
        ResponseBody::OffsetFetch(r) => r,
        other => return Err(unexpected("OffsetFetch", &other)),
    };
    if let Some(e) = resp.error {
        return Err(ClientError::Broker(e));
    }
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if let Some(e) = p.error {
                return Err(ClientError::Broker(e));
            }
            out.insert(TopicPartition::new(t.name.clone(), p.partition), p.offset);
        }
    }
    Ok(out)
}

pub(crate) async fn leave_group(
    conn: &ReconnectingConnection,
    group: &str,
    member_id: &str,
    reason: &str,
) -> Result<(), ClientError> {
    let req = LeaveGroupRequest {
        group_id: group.to_string(),
        members: vec![LeaveGroupMember {
            member_id: member_id.to_string(),
            group_instance_id: None,
            reason: Some(reason.to_string()),
        }],
    };
    match conn
        .get()
        .await?
        .request(RequestBody::LeaveGroup(req))
        .await?
    {
        ResponseBody::LeaveGroup(r) => match r
            .error
            .or_else(|| r.members.into_iter().find_map(|m| m.error))
        {
            Some(e) => Err(ClientError::Broker(e)),
            None => Ok(()),
        },
        other => Err(unexpected("LeaveGroup", &other)),
    }
}

async fn heartbeat_once(
    conn: &ReconnectingConnection,
    config: &GroupConfig,
    shared: &Rc<RefCell<Shared>>,
    _timeout_ms: u64,
) {
    let (member_id, generation, joining, last_poll, expired) = {
        let s = shared.borrow();
        (
            s.member_id.clone(),
            s.generation,
            s.joining,
            s.last_poll,
            s.poll_expired,
        )
    };
    // The max-poll-interval watchdog: an application stuck between polls
    // gives its partitions up rather than hold them, also in the middle of
    // a join (which then gives up: `join_and_sync`). It stays armed: it
    // fires again after the next poll if that poll is followed by another
    // stall.
    let max_poll = Duration::from_millis(u64::from(config.max_poll_interval_ms));
    if !expired && !member_id.is_empty() && last_poll.is_some_and(|t| t.elapsed() > max_poll) {
        warn!(
            group = %config.group_id,
            "poll() not called for longer than max_poll_interval_ms ({} ms): leaving the group",
            config.max_poll_interval_ms
        );
        {
            let mut s = shared.borrow_mut();
            s.poll_expired = true;
            s.generation = -1;
            s.lost = true;
            s.rejoin = true;
            if config.group_instance_id.is_none() {
                s.member_id.clear();
            }
        }
        if config.group_instance_id.is_none() {
            let _ = leave_group(
                conn,
                &config.group_id,
                &member_id,
                "max poll interval passed",
            )
            .await;
        }
        return;
    }
    if member_id.is_empty() || generation < 0 {
        return;
    }
    if joining {
        // The coordinator counts a member inside a join as alive.
        return;
    }
    let req = HeartbeatRequest {
        group_id: config.group_id.clone(),
        generation_id: generation,
        member_id: member_id.clone(),
        group_instance_id: config.group_instance_id.clone(),
    };
    let resp = match conn.get().await {
        Ok(c) => c.request(RequestBody::Heartbeat(req)).await,
        Err(e) => Err(e),
    };
    let code = match resp {
        Ok(ResponseBody::Heartbeat(r)) => r.error.map(|e| e.code),
        Ok(_) => return,
        Err(e) => {
            debug!(group = %config.group_id, "heartbeat failed: {e}");
            return;
        }
    };
    let mut s = shared.borrow_mut();
    if s.generation != generation {
        return; // a join finished meanwhile
    }
    match code {
        None => {}
        Some(ErrorCode::RebalanceInProgress) => s.rejoin = true,
        Some(c @ (ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration)) => {
            info!(group = %config.group_id, "membership lost ({c:?}): rejoining");
            s.generation = -1;
            s.lost = true;
            s.rejoin = true;
            if c == ErrorCode::UnknownMemberId {
                s.member_id.clear();
            }
        }
        Some(ErrorCode::FencedInstanceId) => {
            s.generation = -1;
            s.lost = true;
            s.fatal = Some(WireError::new(
                ErrorCode::FencedInstanceId,
                format!(
                    "group instance id {:?} was taken over by another consumer",
                    config.group_instance_id
                ),
            ));
        }
        Some(other) => debug!(group = %config.group_id, "heartbeat: {other:?}"),
    }
}
