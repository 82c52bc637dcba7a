//! Consumer groups against the real broker: members share a topic, the
//! group rebalances cooperatively as members come and go, every record is
//! processed exactly once when members commit after processing; committed
//! offsets survive a broker restart and kill -9; a stale generation's commit
//! is refused; a member that stops polling is removed; static membership
//! avoids a rebalance on a quick restart.
//!
//! Every wait is bounded in time and count (`wait_until`); nothing asserts
//! on timing.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use corelog::client::{
    Admin, ClientConfig, Connection, Consumer, ConsumerConfig, GroupConfig, OffsetReset, Producer,
    ProducerRecord, RebalanceEvent,
};
use corelog::protocol::messages::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, RequestBody, ResponseBody,
};
use corelog::protocol::{ErrorCode, TopicPartition};

/// Groups settle fast: no initial delay, short sessions allowed.
const FAST_GROUPS: &str =
    "[groups]\ninitial_rebalance_delay_ms = 0\nmin_session_timeout_ms = 500\ntick_ms = 20\n";

fn broker() -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_CLIENT_LOG"))
        .with_test_writer()
        .try_init();
    Broker::start_with(BrokerOptions {
        config_toml: Some(FAST_GROUPS.into()),
        ..BrokerOptions::default()
    })
}

fn group_config(group: &str) -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 3_000,
        heartbeat_interval_ms: 200,
        max_poll_interval_ms: 30_000,
        enable_auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConfig::new(group)
    }
}

fn consumer_config(b: &Broker, group: GroupConfig) -> ConsumerConfig {
    ConsumerConfig {
        group: Some(group),
        max_wait_ms: 100,
        ..b.consumer_config()
    }
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        corelog::timer::sleep_once(Duration::from_millis(20)).await;
    }
}

/// Shared view of a set of group members running as tasks.
#[derive(Default)]
struct Members {
    /// (partition, offset) → times processed.
    processed: BTreeMap<(u32, u64), u32>,
    /// Per member: partitions owned after its last poll.
    owned: Vec<BTreeSet<u32>>,
    /// Per member: rebalance events, in order.
    events: Vec<Vec<RebalanceEvent>>,
    /// Per member: asked to close.
    stop: Vec<bool>,
    /// Per member: finished closing.
    done: Vec<bool>,
}

/// Commits the consumer's positions, retrying while a rebalance completes.
async fn commit_processed(c: &mut Consumer) {
    for _ in 0..1_000 {
        match c.commit_sync().await {
            Ok(()) => return,
            Err(e) if e.wire_code() == Some(ErrorCode::RebalanceInProgress) => {
                corelog::timer::sleep_once(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("commit kept failing with RebalanceInProgress");
}

/// Runs member `i`: poll, process (count), commit, until asked to stop.
fn spawn_member(members: &Rc<RefCell<Members>>, cfg: ConsumerConfig, topic: &str) -> usize {
    let i = {
        let mut m = members.borrow_mut();
        m.owned.push(BTreeSet::new());
        m.events.push(Vec::new());
        m.stop.push(false);
        m.done.push(false);
        m.owned.len() - 1
    };
    let members = members.clone();
    let topic = topic.to_string();
    glommio::spawn_local(async move {
        let mut c = Consumer::connect(cfg).await.expect("consumer connect");
        c.subscribe(&[&topic]).await.expect("subscribe");
        loop {
            if members.borrow().stop[i] {
                break;
            }
            let records = c.poll().await.expect("poll");
            let events = c.take_rebalance_events();
            {
                let mut m = members.borrow_mut();
                for r in &records {
                    *m.processed.entry((r.partition, r.offset)).or_default() += 1;
                }
                m.events[i].extend(events);
                m.owned[i] = c.assignment().iter().map(|(tp, _)| tp.partition).collect();
            }
            if !records.is_empty() {
                commit_processed(&mut c).await;
            }
        }
        c.close().await.expect("close");
        let mut m = members.borrow_mut();
        m.owned[i].clear();
        m.done[i] = true;
    })
    .detach();
    i
}

fn counts(m: &Members, live: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = live.iter().map(|&i| m.owned[i].len()).collect();
    v.sort();
    v
}

fn all_owned(m: &Members, live: &[usize]) -> BTreeSet<u32> {
    live.iter()
        .flat_map(|&i| m.owned[i].iter().copied())
        .collect()
}

#[test]
fn members_share_partitions_and_rebalance_cooperatively_exactly_once() {
    let b = broker();
    let topic = topic_name("groups-share");
    b.create_topic(&topic, 6);
    let bcfg = b.client_config();
    let make = {
        let b_cfg = consumer_config(&b, group_config("share"));
        move || b_cfg.clone()
    };
    let pcfg = b.producer_config();
    let t = topic.clone();
    run_client_within(Duration::from_secs(240), move || async move {
        let members = Rc::new(RefCell::new(Members::default()));
        let producer = Rc::new(Producer::connect(pcfg).await.expect("producer"));
        let produced = Rc::new(RefCell::new(0u64));
        let mut sent = 0u64;
        // Some records before anyone joins.
        for n in 0..600u64 {
            let r = ProducerRecord::new(t.clone(), format!("v{n}")).with_partition((n % 6) as u32);
            drop(producer.send(r).await.expect("send"));
            sent += 1;
        }
        producer.flush().await.expect("flush");
        *produced.borrow_mut() = sent;

        let a = spawn_member(&members, make(), &t);
        let b1 = spawn_member(&members, make(), &t);
        let c = spawn_member(&members, make(), &t);
        let live = [a, b1, c];
        wait_until(
            Duration::from_secs(60),
            "3 members with 2 partitions each",
            || {
                let m = members.borrow();
                counts(&m, &live) == vec![2, 2, 2] && all_owned(&m, &live).len() == 6
            },
        )
        .await;

        // Keep producing while members come and go.
        let stop_producing = Rc::new(RefCell::new(false));
        let prod_task = {
            let producer = producer.clone();
            let produced = produced.clone();
            let stop = stop_producing.clone();
            let t = t.clone();
            glommio::spawn_local(async move {
                let mut n = sent;
                while !*stop.borrow() && n < 100_000 {
                    for _ in 0..12 {
                        let r = ProducerRecord::new(t.clone(), format!("v{n}"))
                            .with_partition((n % 6) as u32);
                        drop(producer.send(r).await.expect("send"));
                        n += 1;
                    }
                    producer.flush().await.expect("flush");
                    *produced.borrow_mut() = n;
                    corelog::timer::sleep_once(Duration::from_millis(10)).await;
                }
            })
        };

        // A fourth member joins: counts become 2,2,1,1.
        let d = spawn_member(&members, make(), &t);
        let live4 = [a, b1, c, d];
        wait_until(
            Duration::from_secs(60),
            "4 members sharing 6 partitions",
            || {
                let m = members.borrow();
                counts(&m, &live4) == vec![1, 1, 2, 2] && all_owned(&m, &live4).len() == 6
            },
        )
        .await;

        // The third leaves: 3 members with 2 each again.
        members.borrow_mut().stop[c] = true;
        let live3 = [a, b1, d];
        wait_until(Duration::from_secs(60), "the third member leaves", || {
            let m = members.borrow();
            m.done[c] && counts(&m, &live3) == vec![2, 2, 2] && all_owned(&m, &live3).len() == 6
        })
        .await;

        *stop_producing.borrow_mut() = true;
        prod_task.await;
        let total = *produced.borrow();
        wait_until(Duration::from_secs(60), "every record processed", || {
            members.borrow().processed.len() as u64 == total
        })
        .await;
        for &i in &live3 {
            members.borrow_mut().stop[i] = true;
        }
        wait_until(Duration::from_secs(30), "members close", || {
            let m = members.borrow();
            live3.iter().all(|&i| m.done[i])
        })
        .await;

        {
            let m = members.borrow();
            // Exactly once: every produced offset, once.
            let dups: Vec<_> = m.processed.iter().filter(|(_, n)| **n != 1).collect();
            assert!(
                dups.is_empty(),
                "records processed more than once: {dups:?}"
            );
            assert_eq!(m.processed.len() as u64, total);
            let per_partition = total / 6;
            for p in 0..6u32 {
                let n = m.processed.keys().filter(|(pp, _)| *pp == p).count() as u64;
                assert!(n >= per_partition, "partition {p}: {n} records");
            }
            // Cooperative: nothing was lost, and a member only revoked a
            // partition it never got back (kept partitions were never paused).
            for (i, evs) in m.events.iter().enumerate() {
                let mut revoked: BTreeSet<TopicPartition> = BTreeSet::new();
                for e in evs {
                    match e {
                        RebalanceEvent::Lost(ps) => panic!("member {i} lost {ps:?}"),
                        RebalanceEvent::Revoked(ps) => revoked.extend(ps.iter().cloned()),
                        RebalanceEvent::Assigned(ps) => {
                            for tp in ps {
                                assert!(
                                    !revoked.contains(tp),
                                    "member {i} got {tp} back after revoking it: events {evs:?}"
                                );
                            }
                        }
                    }
                }
            }
            // The 4th member's arrival moved exactly 2 partitions: the members
            // that kept theirs revoked nothing.
            let revokes: usize = m
                .events
                .iter()
                .take(3)
                .flat_map(|evs| evs.iter())
                .map(|e| match e {
                    RebalanceEvent::Revoked(ps) => ps.len(),
                    _ => 0,
                })
                .sum();
            assert!(revokes <= 2 + 2, "too many revocations: {revokes}");
        }
        // Lag is zero: the committed offsets are the high watermarks.
        let admin = Admin::connect(bcfg.clone()).await.expect("admin");
        let committed = admin.group_offsets("share").await.expect("offsets");
        let hw = high_watermarks(bcfg, &t).await;
        for (p, h) in hw {
            assert_eq!(
                committed.get(&TopicPartition::new(t.clone(), p)),
                Some(&h),
                "partition {p}: committed offset = high watermark"
            );
        }
        let info = admin.describe_group("share").await.expect("describe");
        assert_eq!(info.state, "Empty");
        assert!(info.members.is_empty());
    });
}

async fn raw_commit(
    cfg: &ClientConfig,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
) -> Option<ErrorCode> {
    let conn = Connection::connect(cfg).await.expect("connect");
    let req = OffsetCommitRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: topic.into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset: 1,
                leader_epoch: None,
                metadata: None,
            }],
        }],
    };
    match conn
        .request(RequestBody::OffsetCommit(req))
        .await
        .expect("commit")
    {
        ResponseBody::OffsetCommit(r) => r.topics[0].partitions[0].error.as_ref().map(|e| e.code),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn stale_generation_and_admin_commits_are_refused_while_members_run() {
    let b = broker();
    let topic = topic_name("groups-stale");
    b.create_topic(&topic, 2);
    let ccfg = consumer_config(&b, group_config("stale"));
    let bcfg = b.client_config();
    let t = topic.clone();
    run_client(move || async move {
        let mut c = Consumer::connect(ccfg).await.expect("consumer");
        c.subscribe(&[&t]).await.expect("subscribe");
        let start = Instant::now();
        while c.assignment().len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(30), "assignment");
            c.poll().await.expect("poll");
        }
        let (member, generation) = c.group_generation().expect("in a group");
        assert!(generation >= 1);
        assert_eq!(
            raw_commit(&bcfg, "stale", generation, &member, &t).await,
            None
        );
        assert_eq!(
            raw_commit(&bcfg, "stale", generation - 1, &member, &t).await,
            Some(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            raw_commit(&bcfg, "stale", generation, "someone-else", &t).await,
            Some(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            raw_commit(&bcfg, "stale", -1, "", &t).await,
            Some(ErrorCode::UnknownMemberId),
            "an admin commit is refused while the group has members"
        );
        let admin = Admin::connect(bcfg.clone()).await.expect("admin");
        let e = admin
            .delete_group("stale")
            .await
            .expect_err("members remain");
        assert_eq!(e.wire_code(), Some(ErrorCode::NonEmptyGroup));
        c.close().await.expect("close");
        // Empty now: an admin commit and a delete go through.
        assert_eq!(raw_commit(&bcfg, "stale", -1, "", &t).await, None);
        admin.delete_group("stale").await.expect("delete");
        assert!(admin
            .group_offsets("stale")
            .await
            .expect("offsets")
            .is_empty());
    });
}

#[test]
fn committed_offsets_survive_restart_and_kill9() {
    let mut b = broker();
    let topic = topic_name("groups-durable");
    b.create_topic(&topic, 3);
    let bcfg = b.client_config();
    let t = topic.clone();
    let cfg = bcfg.clone();
    let written: BTreeMap<TopicPartition, u64> = run_client(move || async move {
        let admin = Admin::connect(cfg).await.expect("admin");
        let mut want = BTreeMap::new();
        for round in 0..20u64 {
            let offsets: Vec<(TopicPartition, u64)> = (0..3u32)
                .map(|p| (TopicPartition::new(t.clone(), p), round * 10 + u64::from(p)))
                .collect();
            admin
                .commit_group_offsets("durable", &offsets)
                .await
                .expect("commit");
            want = offsets.into_iter().collect();
        }
        want
    });
    let check = |b: &Broker, want: &BTreeMap<TopicPartition, u64>| {
        let cfg = b.client_config();
        let want = want.clone();
        run_client(move || async move {
            let admin = Admin::connect(cfg).await.expect("admin");
            // The coordinator may still be loading right after a start.
            let start = Instant::now();
            loop {
                match admin.group_offsets("durable").await {
                    Ok(got) => {
                        assert_eq!(got, want);
                        break;
                    }
                    Err(e) if e.wire_code() == Some(ErrorCode::CoordinatorLoadInProgress) => {
                        assert!(start.elapsed() < Duration::from_secs(30));
                        corelog::timer::sleep_once(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("offsets: {e}"),
                }
            }
        })
    };
    b.restart();
    check(&b, &written);
    b.kill9();
    b.start_again();
    check(&b, &written);
}

#[test]
fn a_member_that_stops_polling_is_removed_and_its_partitions_move() {
    let b = broker();
    let topic = topic_name("groups-slow");
    b.create_topic(&topic, 4);
    let slow_cfg = consumer_config(
        &b,
        GroupConfig {
            max_poll_interval_ms: 1_500,
            ..group_config("slow")
        },
    );
    let fast_cfg = consumer_config(&b, group_config("slow"));
    let t = topic.clone();
    run_client(move || async move {
        let mut slow = Consumer::connect(slow_cfg).await.expect("slow");
        slow.subscribe(&[&t]).await.expect("subscribe");
        let members = Rc::new(RefCell::new(Members::default()));
        let fast = spawn_member(&members, fast_cfg, &t);
        let start = Instant::now();
        loop {
            slow.poll().await.expect("poll");
            let both = slow.assignment().len() == 2 && members.borrow().owned[fast].len() == 2;
            if both {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "sharing");
        }
        // The slow member "processes" for longer than max_poll_interval_ms.
        wait_until(
            Duration::from_secs(30),
            "the fast member takes everything",
            || members.borrow().owned[fast].len() == 4,
        )
        .await;
        // Its next poll learns it lost its partitions, and it rejoins.
        slow.poll().await.expect("poll");
        let events = slow.take_rebalance_events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, RebalanceEvent::Lost(ps) if ps.len() == 2)),
            "the slow member's partitions were lost: {events:?}"
        );
        let start = Instant::now();
        while slow.assignment().len() != 2 {
            assert!(start.elapsed() < Duration::from_secs(30), "rejoin");
            slow.poll().await.expect("poll");
        }
        members.borrow_mut().stop[fast] = true;
        slow.close().await.expect("close");
    });
}

#[test]
fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
    let b = broker();
    let topic = topic_name("groups-static");
    b.create_topic(&topic, 4);
    let static_cfg = consumer_config(
        &b,
        GroupConfig {
            group_instance_id: Some("instance-a".into()),
            ..group_config("static")
        },
    );
    let other_cfg = consumer_config(&b, group_config("static"));
    let t = topic.clone();
    run_client(move || async move {
        let members = Rc::new(RefCell::new(Members::default()));
        let other = spawn_member(&members, other_cfg, &t);
        let mut a = Consumer::connect(static_cfg.clone()).await.expect("a");
        a.subscribe(&[&t]).await.expect("subscribe");
        let start = Instant::now();
        while !(a.assignment().len() == 2 && members.borrow().owned[other].len() == 2) {
            assert!(start.elapsed() < Duration::from_secs(30), "sharing");
            a.poll().await.expect("poll");
        }
        let (_, generation) = a.group_generation().expect("group");
        let mine: Vec<TopicPartition> = a.assignment().into_iter().map(|(tp, _)| tp).collect();
        let other_events = members.borrow().events[other].len();
        // A quick restart: the static member closes (no LeaveGroup) and a
        // new instance with the same instance id joins.
        a.close().await.expect("close");
        let mut a2 = Consumer::connect(static_cfg).await.expect("a2");
        a2.subscribe(&[&t]).await.expect("subscribe");
        let start = Instant::now();
        while a2.assignment().len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(30), "a2 assignment");
            a2.poll().await.expect("poll");
        }
        let (_, generation2) = a2.group_generation().expect("group");
        assert_eq!(generation2, generation, "no new generation");
        let mine2: Vec<TopicPartition> = a2.assignment().into_iter().map(|(tp, _)| tp).collect();
        assert_eq!(mine2, mine, "the same partitions back");
        // Give the other member a few polls: it saw no rebalance.
        for _ in 0..5 {
            a2.poll().await.expect("poll");
        }
        assert_eq!(
            members.borrow().events[other].len(),
            other_events,
            "no rebalance"
        );
        members.borrow_mut().stop[other] = true;
        a2.close().await.expect("close");
    });
}

/// Reads a child's stdout lines into a shared list (a thread; ends at EOF).
fn collect_lines(
    stdout: std::process::ChildStdout,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    lines
}

#[test]
fn a_killed_member_s_partitions_resume_from_committed_offsets() {
    let b = broker();
    let topic = topic_name("groups-kill");
    b.create_topic(&topic, 4);
    // A consumer process in the group, printing JSON lines.
    let mut child = std::process::Command::new(bin())
        .args([
            "--bootstrap",
            &b.bootstrap(),
            "consume",
            &topic,
            "--group",
            "kill",
            "--session-timeout-ms",
            "1500",
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn consume");
    let printed = collect_lines(child.stdout.take().expect("stdout"));
    let child_pid = child.id();
    let survivor_cfg = consumer_config(&b, group_config("kill"));
    let pcfg = b.producer_config();
    let bcfg = b.client_config();
    let t = topic.clone();
    let printed_in = printed.clone();
    let (committed, child_parts, survivor_seen, hw) =
        run_client_within(Duration::from_secs(120), move || async move {
            let members = Rc::new(RefCell::new(Members::default()));
            let survivor = spawn_member(&members, survivor_cfg, &t);
            let admin = Admin::connect(bcfg.clone()).await.expect("admin");
            // Both members hold 2 partitions.
            let start = Instant::now();
            let child_parts: BTreeSet<u32> = loop {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "two members sharing"
                );
                let info = match admin.describe_group("kill").await {
                    Ok(i) => i,
                    // The internal topic may still be being created.
                    Err(e)
                        if matches!(
                            e.wire_code(),
                            Some(
                                ErrorCode::CoordinatorNotAvailable
                                    | ErrorCode::CoordinatorLoadInProgress
                            )
                        ) =>
                    {
                        corelog::timer::sleep_once(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => panic!("describe: {e}"),
                };
                let mine = members.borrow().owned[survivor].clone();
                if info.state == "Stable" && info.members.len() == 2 && mine.len() == 2 {
                    break (0..4u32).filter(|p| !mine.contains(p)).collect();
                }
                corelog::timer::sleep_once(Duration::from_millis(50)).await;
            };
            // Records for everyone; wait until the child printed some of its own.
            let producer = Producer::connect(pcfg).await.expect("producer");
            for n in 0..400u64 {
                let r =
                    ProducerRecord::new(t.clone(), format!("a{n}")).with_partition((n % 4) as u32);
                drop(producer.send(r).await.expect("send"));
            }
            producer.flush().await.expect("flush");
            wait_until(
                Duration::from_secs(60),
                "the child prints its records",
                || printed_in.lock().unwrap_or_else(|p| p.into_inner()).len() >= 150,
            )
            .await;
            // SIGKILL: no leave, no final commit.
            let _ = std::process::Command::new("kill")
                .args(["-9", &child_pid.to_string()])
                .status();
            let committed = admin.group_offsets("kill").await.expect("offsets");
            // More records after the kill.
            for n in 0..400u64 {
                let r =
                    ProducerRecord::new(t.clone(), format!("b{n}")).with_partition((n % 4) as u32);
                drop(producer.send(r).await.expect("send"));
            }
            producer.close().await.expect("close");
            let hw = high_watermarks(bcfg.clone(), &t).await;
            // After the session timeout the survivor owns everything and
            // reads every partition to its end.
            wait_until(Duration::from_secs(60), "the survivor takes over", || {
                let m = members.borrow();
                m.owned[survivor].len() == 4
                    && hw
                        .iter()
                        .all(|(p, h)| m.processed.contains_key(&(*p, h - 1)))
            })
            .await;
            members.borrow_mut().stop[survivor] = true;
            let seen: BTreeMap<(u32, u64), u32> = members.borrow().processed.clone();
            (committed, child_parts, seen, hw)
        });
    let _ = child.wait();
    let printed: Vec<serde_json::Value> = printed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    for p in child_parts {
        let c = committed
            .get(&TopicPartition::new(topic.clone(), p))
            .copied()
            .unwrap_or(0);
        let by_child: BTreeSet<u64> = printed
            .iter()
            .filter(|v| v["partition"].as_u64() == Some(u64::from(p)))
            .filter_map(|v| v["offset"].as_u64())
            .collect();
        let by_survivor: Vec<u64> = survivor_seen
            .keys()
            .filter(|(pp, _)| *pp == p)
            .map(|(_, o)| *o)
            .collect();
        let h = hw[&p];
        // The survivor resumed exactly at the committed offset, once each.
        assert_eq!(
            by_survivor,
            (c..h).collect::<Vec<u64>>(),
            "partition {p} from {c}"
        );
        assert!(survivor_seen.values().all(|n| *n == 1));
        // The child committed only what it printed; together nothing is missing.
        assert!(by_child.iter().all(|o| *o < h));
        assert!(
            (0..c).all(|o| by_child.contains(&o)),
            "partition {p}: committed {c} past printed"
        );
        // What the child printed past its last commit is the tail delivered again.
        let tail: Vec<u64> = by_child.iter().copied().filter(|o| *o >= c).collect();
        assert!(tail.iter().all(|o| by_survivor.contains(o)));
    }
}
