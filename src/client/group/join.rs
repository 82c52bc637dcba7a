//! Joining a group from the member's side: JoinGroup (with the
//! MemberIdRequired round trip and retries of what is retriable), the
//! leader's assignment (the members' subscriptions, the topics' partition
//! counts, the chosen assignor), and SyncGroup.
//!
//! Invariants: those of `client::group`; a join gives up after
//! `MAX_JOIN_ATTEMPTS` attempts (each bounded by the rebalance timeout).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use tracing::debug;

use super::{retriable, GroupConfig, Joined, Shared, CONSUMER_PROTOCOL_TYPE};
use crate::client::admin::{metadata, unexpected};
use crate::client::assignor::{self, AssignorKind, Subscription};
use crate::client::connection::ReconnectingConnection;
use crate::client::ClientError;
use crate::protocol::messages::{
    JoinGroupProtocol, JoinGroupRequest, RequestBody, ResponseBody, SyncGroupAssignment,
    SyncGroupRequest,
};
use crate::protocol::{ErrorCode, TopicPartition};

const RETRY_BACKOFF_MS: u64 = 100;
/// Most attempts of one join (each waits out a whole rebalance at most).
const MAX_JOIN_ATTEMPTS: u32 = 50;

/// JoinGroup (retrying what is retriable), the leader's assignment, SyncGroup.
pub(super) async fn join_and_sync(
    conn: &ReconnectingConnection,
    config: &GroupConfig,
    topics: &[String],
    shared: &Rc<RefCell<Shared>>,
    owned: Vec<TopicPartition>,
    request_timeout_ms: u64,
) -> Result<Joined, ClientError> {
    let mut member_id = shared.borrow().member_id.clone();
    let mut generation = shared.borrow().generation;
    let mut last_err = None;
    for attempt in 0..MAX_JOIN_ATTEMPTS {
        if shared.borrow().closed {
            return Err(ClientError::Closed);
        }
        if shared.borrow().poll_expired {
            return Err(ClientError::Timeout(
                "max_poll_interval_ms passed during the join: rejoining after the next poll".into(),
            ));
        }
        if attempt > 0 {
            crate::timer::sleep_once(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        }
        let sub = Subscription {
            topics: topics.to_vec(),
            user_data: None,
            owned_partitions: owned.clone(),
            generation_id: generation,
            rack_id: None,
        };
        let metadata = assignor::encode_subscription(&sub);
        let req = JoinGroupRequest {
            group_id: config.group_id.clone(),
            session_timeout_ms: config.session_timeout_ms as i32,
            rebalance_timeout_ms: config.max_poll_interval_ms as i32,
            member_id: member_id.clone(),
            group_instance_id: config.group_instance_id.clone(),
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            protocols: config
                .assignors
                .iter()
                .map(|a| JoinGroupProtocol {
                    name: a.name().into(),
                    metadata: metadata.clone(),
                })
                .collect(),
            reason: None,
        };
        // A join waits out the whole rebalance (up to the rebalance timeout).
        let timeout = request_timeout_ms + u64::from(config.max_poll_interval_ms);
        let resp = match conn
            .get()
            .await?
            .start_with_timeout(RequestBody::JoinGroup(req), timeout)?
            .await
        {
            Ok(ResponseBody::JoinGroup(r)) => r,
            Ok(other) => return Err(unexpected("JoinGroup", &other)),
            Err(e @ (ClientError::Closed | ClientError::Io(_) | ClientError::Timeout(_))) => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = resp.error {
            match e.code {
                ErrorCode::MemberIdRequired => {
                    member_id = resp.member_id;
                    // The coordinator knows this id from now on: a close
                    // during the rest of the join must leave with it.
                    shared.borrow_mut().member_id = member_id.clone();
                    continue;
                }
                ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration => {
                    member_id.clear();
                    generation = -1;
                    last_err = Some(ClientError::Broker(e));
                    continue;
                }
                c if retriable(c) => {
                    last_err = Some(ClientError::Broker(e));
                    continue;
                }
                _ => return Err(ClientError::Broker(e)),
            }
        }
        member_id = resp.member_id.clone();
        generation = resp.generation_id;
        let protocol = resp.protocol_name.clone().unwrap_or_default();
        let assignments = if resp.leader == member_id && !resp.members.is_empty() {
            lead(conn, &protocol, &resp.members).await?
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest {
            group_id: config.group_id.clone(),
            generation_id: generation,
            member_id: member_id.clone(),
            group_instance_id: config.group_instance_id.clone(),
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.into()),
            protocol_name: Some(protocol.clone()),
            assignments,
        };
        let resp = match conn
            .get()
            .await?
            .start_with_timeout(RequestBody::SyncGroup(sync), timeout)?
            .await
        {
            Ok(ResponseBody::SyncGroup(r)) => r,
            Ok(other) => return Err(unexpected("SyncGroup", &other)),
            Err(e @ (ClientError::Closed | ClientError::Io(_) | ClientError::Timeout(_))) => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = resp.error {
            match e.code {
                ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration => {
                    member_id.clear();
                    generation = -1;
                    last_err = Some(ClientError::Broker(e));
                    continue;
                }
                c if retriable(c) => {
                    last_err = Some(ClientError::Broker(e));
                    continue;
                }
                _ => return Err(ClientError::Broker(e)),
            }
        }
        let assigned = if resp.assignment.is_empty() {
            BTreeSet::new()
        } else {
            assignor::decode_assignment(&resp.assignment)
                .map_err(|e| ClientError::Protocol(format!("assignment from the leader: {e}")))?
                .partitions
                .into_iter()
                .collect()
        };
        debug!(group = %config.group_id, %member_id, generation, ?assigned, "joined");
        return Ok(Joined {
            member_id,
            generation,
            assigned,
        });
    }
    Err(last_err.unwrap_or_else(|| ClientError::Timeout("joining the group".into())))
}

/// The leader's part: the members' subscriptions, the topics' partition
/// counts, the chosen assignor's answer.
async fn lead(
    conn: &ReconnectingConnection,
    protocol: &str,
    members: &[crate::protocol::messages::JoinGroupMember],
) -> Result<Vec<SyncGroupAssignment>, ClientError> {
    let kind = AssignorKind::from_name(protocol).ok_or_else(|| {
        ClientError::Protocol(format!("the group chose an unknown assignor '{protocol}'"))
    })?;
    let mut subs = BTreeMap::new();
    let mut wanted = BTreeSet::new();
    for m in members {
        let s = assignor::decode_subscription(&m.metadata).map_err(|e| {
            ClientError::Protocol(format!("subscription of member {}: {e}", m.member_id))
        })?;
        wanted.extend(s.topics.iter().cloned());
        subs.insert(m.member_id.clone(), s);
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let md = metadata(&*conn.get().await?, &wanted).await?;
    let counts: BTreeMap<String, u32> = md
        .topics
        .into_iter()
        .filter(|t| t.error.is_none())
        .map(|t| (t.name, t.partitions.len() as u32))
        .collect();
    let plan = assignor::assign(kind, &counts, &subs);
    Ok(subs
        .keys()
        .map(|id| {
            let partitions = plan.get(id).cloned().unwrap_or_default();
            SyncGroupAssignment {
                member_id: id.clone(),
                assignment: assignor::encode_assignment(&assignor::Assignment {
                    partitions,
                    user_data: None,
                }),
            }
        })
        .collect())
}
