//! Coordinator tests: a real `__consumer_offsets` partition in a temp dir, a
//! simulated clock (sessions, delays and timeouts pass by
//! `Clock::advance`, never by waiting), requests as a client sends them.

use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::coordinator::{Coordinator, GroupSettings};
use super::state::{ClientInfo, GroupLimits};
use crate::config::TopicConfig;
use crate::io::{Clock, Disk, Io};
use crate::partition::{Partition, PartitionLimits};
use crate::protocol::messages::{
    HeartbeatRequest, JoinGroupProtocol, JoinGroupRequest, JoinGroupResponse, LeaveGroupMember,
    LeaveGroupRequest, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic,
    OffsetFetchRequest, SyncGroupAssignment, SyncGroupRequest,
};
use crate::protocol::{ErrorCode, TopicPartition};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

const LIMITS: PartitionLimits = PartitionLimits {
    max_batch_bytes: 1 << 20,
    max_decompressed_batch_bytes: 4 << 20,
    retention_check_interval_ms: 3_600_000,
    recovery_scan: crate::config::RecoveryScan::Sealed,
    producer_id_expiration_ms: 86_400_000,
};

fn settings() -> GroupSettings {
    GroupSettings {
        limits: GroupLimits {
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            initial_rebalance_delay_ms: 500,
            max_group_members: 100,
        },
        offsets_retention_ms: 3_600_000,
        offset_metadata_max_bytes: 64,
        snapshot_min_bytes: 16 * 1024,
        tick_ms: 50,
    }
}

async fn open(dir: &Path, clock: &Clock) -> Rc<Partition> {
    let config = TopicConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        retention_ms: u64::MAX,
        ..TopicConfig::default()
    };
    Partition::open_on(
        Io::new(Disk::Real, clock.clone()),
        TopicPartition::new(super::OFFSETS_TOPIC, 0),
        dir.to_path_buf(),
        config,
        LIMITS,
        &crate::partition::cache::BatchCache::new(1 << 20),
    )
    .await
    .expect("open partition")
}

async fn coordinator(dir: &Path, clock: &Clock) -> Rc<Coordinator> {
    let p = open(dir, clock).await;
    let c = Coordinator::new(p, clock.clone(), settings());
    c.load().await.expect("load");
    c
}

fn client(n: usize) -> ClientInfo {
    ClientInfo {
        client_id: format!("client-{n}"),
        client_host: "127.0.0.1".into(),
    }
}

fn join_req(group: &str, member: &str, instance: Option<&str>, meta: &[u8]) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: group.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        member_id: member.into(),
        group_instance_id: instance.map(String::from),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupProtocol {
            name: "range".into(),
            metadata: Bytes::copy_from_slice(meta),
        }],
        reason: None,
    }
}

/// Lets spawned tasks run (the executor is single-threaded).
async fn settle() {
    for _ in 0..20 {
        glommio::yield_if_needed().await;
        glommio::executor().yield_now().await;
    }
}

/// Advances the simulated clock in ticks, letting the ticker run.
async fn advance(clock: &Clock, by: Duration) {
    let step = Duration::from_millis(50);
    let mut done = Duration::ZERO;
    while done < by {
        clock.advance(step);
        done += step;
        settle().await;
    }
}

/// Joins `n` dynamic members (with the MemberIdRequired round trip) and
/// waits out the initial delay; answers the join responses in order.
async fn join_n(
    c: &Rc<Coordinator>,
    clock: &Clock,
    group: &str,
    n: usize,
) -> Vec<JoinGroupResponse> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let first = c
            .join(join_req(group, "", None, &[i as u8]), client(i))
            .await;
        assert_eq!(
            first.error.as_ref().map(|e| e.code),
            Some(ErrorCode::MemberIdRequired)
        );
        assert!(!first.member_id.is_empty());
        let c2 = c.clone();
        let req = join_req(group, &first.member_id, None, &[i as u8]);
        tasks.push(glommio::spawn_local(async move {
            c2.join(req, client(i)).await
        }));
    }
    settle().await;
    advance(clock, Duration::from_millis(600)).await;
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Syncs every member of a completed join; the leader assigns
/// `"part-<i>"` to member i.
async fn sync_all(c: &Rc<Coordinator>, joins: &[JoinGroupResponse]) -> Vec<Bytes> {
    let mut tasks = Vec::new();
    for j in joins {
        let is_leader = j.leader == j.member_id;
        let assignments = if is_leader {
            j.members
                .iter()
                .enumerate()
                .map(|(i, m)| SyncGroupAssignment {
                    member_id: m.member_id.clone(),
                    assignment: Bytes::from(format!("part-{i}")),
                })
                .collect()
        } else {
            Vec::new()
        };
        let req = SyncGroupRequest {
            group_id: "g".into(),
            generation_id: j.generation_id,
            member_id: j.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        };
        let c2 = c.clone();
        tasks.push(glommio::spawn_local(async move { c2.sync(req).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let r = t.await;
        assert_eq!(r.error, None);
        out.push(r.assignment);
    }
    out
}

fn commit_req(member: &str, generation: i32, offset: u64) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset,
                leader_epoch: None,
                metadata: Some("m".into()),
            }],
        }],
    }
}

fn commit_error(r: &crate::protocol::messages::OffsetCommitResponse) -> Option<ErrorCode> {
    r.topics[0].partitions[0].error.as_ref().map(|e| e.code)
}

#[test]
fn three_members_join_sync_and_commit() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let c = coordinator(dir.path(), &clock).await;
        let joins = join_n(&c, &clock, "g", 3).await;
        let generation = joins[0].generation_id;
        assert_eq!(generation, 1);
        for j in &joins {
            assert_eq!(j.error, None);
            assert_eq!(j.generation_id, generation);
            assert_eq!(j.leader, joins[0].leader);
        }
        let leader = joins
            .iter()
            .find(|j| j.leader == j.member_id)
            .expect("leader");
        assert_eq!(leader.members.len(), 3);
        assert_eq!(joins.iter().filter(|j| !j.members.is_empty()).count(), 1);
        let assignments = sync_all(&c, &joins).await;
        let mut got: Vec<_> = assignments.iter().map(|b| b.to_vec()).collect();
        got.sort();
        assert_eq!(
            got,
            vec![b"part-0".to_vec(), b"part-1".to_vec(), b"part-2".to_vec()]
        );
        assert_eq!(c.describe("g").group_state, "Stable");

        // Commits: the current generation is accepted, a stale one refused.
        let m = &joins[1].member_id;
        let ok = c.commit(commit_req(m, generation, 42), |_, _| true).await;
        assert_eq!(commit_error(&ok), None);
        let stale = c
            .commit(commit_req(m, generation - 1, 7), |_, _| true)
            .await;
        assert_eq!(commit_error(&stale), Some(ErrorCode::IllegalGeneration));
        let stranger = c
            .commit(commit_req("nobody", generation, 7), |_, _| true)
            .await;
        assert_eq!(commit_error(&stranger), Some(ErrorCode::UnknownMemberId));
        let admin = c.commit(commit_req("", -1, 7), |_, _| true).await;
        assert_eq!(commit_error(&admin), Some(ErrorCode::UnknownMemberId));
        let unknown_topic = c.commit(commit_req(m, generation, 1), |_, _| false).await;
        assert_eq!(
            commit_error(&unknown_topic),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
        let fetched = c.fetch_offsets(&OffsetFetchRequest {
            group_id: "g".into(),
            topics: None,
        });
        assert_eq!(fetched.topics[0].partitions[0].offset, Some(42));
        assert_eq!(
            fetched.topics[0].partitions[0].metadata.as_deref(),
            Some("m")
        );

        // Heartbeats keep everyone in; silence past the session (10 s)
        // drops the third member, and the others are told to rejoin.
        let mut silent_ms = 0u64;
        let mut rebalancing = false;
        for _ in 0..40 {
            for j in &joins[..2] {
                let hb = HeartbeatRequest {
                    group_id: "g".into(),
                    generation_id: generation,
                    member_id: j.member_id.clone(),
                    group_instance_id: None,
                };
                match c.heartbeat(&hb) {
                    Ok(()) => {}
                    Err(e) if e.code == ErrorCode::RebalanceInProgress => rebalancing = true,
                    Err(e) => panic!("heartbeat: {e:?}"),
                }
            }
            if rebalancing {
                break;
            }
            advance(&clock, Duration::from_millis(500)).await;
            silent_ms += 500;
        }
        assert!(rebalancing, "the silent member was dropped");
        assert!(
            silent_ms >= 10_000,
            "not before its session ran out ({silent_ms} ms)"
        );
        let hb = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: joins[0].member_id.clone(),
            group_instance_id: None,
        };
        let gone = HeartbeatRequest {
            member_id: joins[2].member_id.clone(),
            ..hb.clone()
        };
        assert_eq!(
            c.heartbeat(&gone).map_err(|e| e.code),
            Err(ErrorCode::UnknownMemberId)
        );
        // During PreparingRebalance the current generation may still commit.
        let during = c.commit(commit_req(m, generation, 43), |_, _| true).await;
        assert_eq!(commit_error(&during), None);
        c.stop();
    });
}

#[test]
fn state_survives_a_reload() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let (generation, members) = {
            let c = coordinator(dir.path(), &clock).await;
            let joins = join_n(&c, &clock, "g", 2).await;
            sync_all(&c, &joins).await;
            let m = &joins[0].member_id;
            for o in 1..=50 {
                let r = c
                    .commit(commit_req(m, joins[0].generation_id, o), |_, _| true)
                    .await;
                assert_eq!(commit_error(&r), None);
            }
            c.stop();
            c.partition().close().await.expect("close");
            let mut ids: Vec<String> = joins.iter().map(|j| j.member_id.clone()).collect();
            ids.sort();
            (joins[0].generation_id, ids)
        };
        let c = coordinator(dir.path(), &clock).await;
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)), Some(&50));
        let d = c.describe("g");
        assert_eq!(d.group_state, "Stable");
        let mut ids: Vec<String> = d.members.iter().map(|m| m.member_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, members);
        assert!(d.members.iter().all(|m| m.assignment.starts_with(b"part-")));
        // The restored members keep their generation.
        let hb = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: members[0].clone(),
            group_instance_id: None,
        };
        assert_eq!(c.heartbeat(&hb), Ok(()));
        c.stop();
    });
}

#[test]
fn snapshots_bound_the_log_and_keep_the_latest_values() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        {
            let c = coordinator(dir.path(), &clock).await;
            // Standalone commits (no members), many times over one key and
            // once each for a few others.
            for o in 0..3_000u64 {
                let mut r = commit_req("", -1, o);
                r.topics[0].partitions[0].partition = (o % 4) as u32;
                let resp = c.commit(r, |_, _| true).await;
                assert_eq!(commit_error(&resp), None);
                if o % 100 == 0 {
                    advance(&clock, Duration::from_millis(100)).await;
                }
            }
            advance(&clock, Duration::from_millis(200)).await;
            let p = c.partition();
            assert!(
                p.log_start_offset() > 2_000,
                "snapshots moved the log start: {}",
                p.log_start_offset()
            );
            c.stop();
            p.close().await.expect("close");
        }
        let c = coordinator(dir.path(), &clock).await;
        let committed = c.committed("g");
        for p in 0..4u32 {
            let last = (0..3_000u64).filter(|o| o % 4 == u64::from(p)).max();
            assert_eq!(committed.get(&("t".to_string(), p)).copied(), last);
        }
        c.stop();
    });
}

#[test]
fn static_member_rejoins_without_a_rebalance() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let c = coordinator(dir.path(), &clock).await;
        let mut tasks = Vec::new();
        for (i, inst) in ["a", "b"].iter().enumerate() {
            let c2 = c.clone();
            let req = join_req("g", "", Some(inst), &[i as u8]);
            tasks.push(glommio::spawn_local(async move {
                c2.join(req, client(i)).await
            }));
        }
        settle().await;
        advance(&clock, Duration::from_millis(600)).await;
        let mut joins = Vec::new();
        for t in tasks {
            let j = t.await;
            assert_eq!(j.error, None);
            joins.push(j);
        }
        sync_all(&c, &joins).await;
        let generation = joins[0].generation_id;
        let before = c.describe("g");
        // "b" restarts: joins again with an empty member id.
        let again = c.join(join_req("g", "", Some("b"), &[1]), client(9)).await;
        assert_eq!(again.error, None);
        assert_eq!(again.generation_id, generation, "no new generation");
        let old_b = joins
            .iter()
            .find(|j| {
                !before
                    .members
                    .iter()
                    .any(|m| m.member_id == again.member_id)
                    && j.member_id != again.member_id
            })
            .map(|j| j.member_id.clone());
        assert!(old_b.is_some());
        // Its sync gives back the same assignment.
        let s = c
            .sync(SyncGroupRequest {
                group_id: "g".into(),
                generation_id: generation,
                member_id: again.member_id.clone(),
                group_instance_id: Some("b".into()),
                protocol_type: None,
                protocol_name: None,
                assignments: Vec::new(),
            })
            .await;
        assert_eq!(s.error, None);
        assert!(s.assignment.starts_with(b"part-"));
        assert_eq!(c.describe("g").group_state, "Stable");
        // The old incarnation is fenced.
        let old = joins
            .iter()
            .find(|j| {
                c.describe("g")
                    .members
                    .iter()
                    .all(|m| m.member_id != j.member_id)
            })
            .expect("b's old id");
        let hb = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: old.member_id.clone(),
            group_instance_id: Some("b".into()),
        };
        assert_eq!(
            c.heartbeat(&hb).map_err(|e| e.code),
            Err(ErrorCode::FencedInstanceId)
        );
        // The new member id was durable before the member learnt it: a
        // restart brings back the new id, not the fenced one.
        c.stop();
        c.partition().close().await.expect("close");
        let c = coordinator(dir.path(), &clock).await;
        let ids: Vec<String> = c
            .describe("g")
            .members
            .iter()
            .map(|m| m.member_id.clone())
            .collect();
        assert!(ids.contains(&again.member_id), "{ids:?}");
        assert!(!ids.contains(&old.member_id), "{ids:?}");
        c.stop();
    });
}

#[test]
fn delete_is_refused_while_members_remain() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let c = coordinator(dir.path(), &clock).await;
        let joins = join_n(&c, &clock, "g", 1).await;
        sync_all(&c, &joins).await;
        let r = c
            .commit(commit_req(&joins[0].member_id, 1, 5), |_, _| true)
            .await;
        assert_eq!(commit_error(&r), None);
        assert_eq!(
            c.delete("g").await.map_err(|e| e.code),
            Err(ErrorCode::NonEmptyGroup)
        );
        let left = c.leave(&LeaveGroupRequest {
            group_id: "g".into(),
            members: vec![LeaveGroupMember {
                member_id: joins[0].member_id.clone(),
                group_instance_id: None,
                reason: Some("done".into()),
            }],
        });
        assert_eq!(left.members[0].error, None);
        assert_eq!(c.describe("g").group_state, "Empty");
        assert_eq!(c.delete("g").await, Ok(()));
        assert_eq!(c.describe("g").group_state, "Dead");
        assert!(c.committed("g").is_empty());
        assert_eq!(
            c.delete("g").await.map_err(|e| e.code),
            Err(ErrorCode::GroupIdNotFound)
        );
        c.stop();
    });
}

#[test]
fn a_retried_join_waits_for_the_generation() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let c = coordinator(dir.path(), &clock).await;
        let joins = join_n(&c, &clock, "g", 2).await;
        sync_all(&c, &joins).await;
        let (a, b) = (joins[0].member_id.clone(), joins[1].member_id.clone());
        // A rejoins with new metadata, then retries the same join.
        let c1 = c.clone();
        let r1 = join_req("g", &a, None, b"new");
        let t1 = glommio::spawn_local(async move { c1.join(r1, client(0)).await });
        settle().await;
        let c2 = c.clone();
        let r2 = join_req("g", &a, None, b"new");
        let t2 = glommio::spawn_local(async move { c2.join(r2, client(0)).await });
        settle().await;
        let first = t1.await;
        assert_eq!(
            first.error.map(|e| e.code),
            Some(ErrorCode::RebalanceInProgress)
        );
        // B rejoins: the generation completes and the retry gets it.
        let second = c.join(join_req("g", &b, None, &[1]), client(1)).await;
        assert_eq!(second.error, None);
        let retried = t2.await;
        assert_eq!(retried.error, None);
        assert_eq!(retried.generation_id, second.generation_id);
        c.stop();
    });
}

#[test]
fn pending_ids_naming_one_static_instance_do_not_corrupt_the_group() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        let c = coordinator(dir.path(), &clock).await;
        let p1 = c
            .join(join_req("g", "", None, b"x"), client(0))
            .await
            .member_id;
        let p2 = c
            .join(join_req("g", "", None, b"x"), client(1))
            .await
            .member_id;
        let c1 = c.clone();
        let t1 = glommio::spawn_local(async move {
            c1.join(join_req("g", &p1, Some("I"), b"x"), client(0))
                .await
        });
        settle().await;
        // The same instance id again, through the other pending id: the
        // instance rejoins (the first request is fenced), never two
        // members with one instance id (Group::check would panic).
        let c2 = c.clone();
        let t2 = glommio::spawn_local(async move {
            c2.join(join_req("g", &p2, Some("I"), b"x"), client(1))
                .await
        });
        settle().await;
        advance(&clock, Duration::from_millis(600)).await;
        let first = t1.await;
        assert_eq!(
            first.error.map(|e| e.code),
            Some(ErrorCode::FencedInstanceId)
        );
        let second = t2.await;
        assert_eq!(second.error, None);
        assert_eq!(c.describe("g").members.len(), 1);
        c.stop();
    });
}

#[test]
fn expiry_never_deletes_a_commit_it_raced() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::sim(1_000_000);
        {
            let c = coordinator(dir.path(), &clock).await;
            let r = c.commit(commit_req("", -1, 1), |_, _| true).await;
            assert_eq!(commit_error(&r), None);
            // Idle past offsets_retention_ms (1 h); a commit arrives as the
            // expiry check runs.
            clock.advance(Duration::from_secs(3_700));
            let c1 = c.clone();
            let t1 =
                glommio::spawn_local(
                    async move { c1.commit(commit_req("", -1, 7), |_, _| true).await },
                );
            settle().await;
            let r1 = t1.await;
            assert_eq!(commit_error(&r1), None);
            settle().await;
            assert_eq!(c.committed("g").get(&("t".to_string(), 0)), Some(&7));
            c.stop();
            c.partition().close().await.expect("close");
        }
        let c = coordinator(dir.path(), &clock).await;
        assert_eq!(c.committed("g").get(&("t".to_string(), 0)), Some(&7));
        c.stop();
    });
}
