//! Tests of the cooperative-sticky assignor: Kafka's rebalance scenarios
//! (fresh group, a member joins, a member leaves, stale and conflicting
//! claims) and seeded random groups checked for the assignor's invariants:
//! no partition twice, no partition handed to a member while another still
//! holds it, a second round that completes and balances the first, a third
//! round identical to the second, and no more revocations than balance needs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{assign, AssignorKind, Subscription};
use crate::protocol::TopicPartition;

type Result = BTreeMap<String, Vec<TopicPartition>>;
type Members = BTreeMap<String, Subscription>;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn topics(spec: &[(&str, u32)]) -> BTreeMap<String, u32> {
    spec.iter().map(|&(t, n)| (t.to_string(), n)).collect()
}

fn sub(topics: &[&str], owned: Vec<TopicPartition>, generation: i32) -> Subscription {
    Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        owned_partitions: owned,
        generation_id: generation,
        ..Subscription::default()
    }
}

fn run(topics: &BTreeMap<String, u32>, members: &Members) -> Result {
    assign(AssignorKind::CooperativeSticky, topics, members)
}

/// The members' next subscriptions: same topics, owning what `result`
/// gave them, in `generation`.
fn feed_back(members: &Members, result: &Result, generation: i32) -> Members {
    members
        .iter()
        .map(|(id, s)| {
            let mut s = s.clone();
            s.owned_partitions = result[id].clone();
            s.generation_id = generation;
            (id.clone(), s)
        })
        .collect()
}

fn counts(result: &Result) -> Vec<usize> {
    let mut c: Vec<usize> = result.values().map(Vec::len).collect();
    c.sort();
    c
}

fn all_assigned(result: &Result) -> BTreeSet<TopicPartition> {
    let mut all = BTreeSet::new();
    for list in result.values() {
        for tp in list {
            assert!(all.insert(tp.clone()), "{tp} assigned twice: {result:?}");
        }
    }
    all
}

fn set(list: &[TopicPartition]) -> BTreeSet<TopicPartition> {
    list.iter().cloned().collect()
}

#[test]
fn fresh_group_is_balanced() {
    let t = topics(&[("t", 6)]);
    let members: Members = ["A", "B", "C"]
        .iter()
        .map(|id| (id.to_string(), sub(&["t"], vec![], -1)))
        .collect();
    let out = run(&t, &members);
    assert_eq!(counts(&out), vec![2, 2, 2]);
    assert_eq!(all_assigned(&out).len(), 6);
    // Stable: fed back, nothing changes.
    assert_eq!(run(&t, &feed_back(&members, &out, 1)), out);
}

/// A, B, C own 2 of t's 6 partitions each (generation 1); D joins.
fn three_owners_and_a_newcomer() -> (BTreeMap<String, u32>, Members) {
    let t = topics(&[("t", 6)]);
    let members = BTreeMap::from([
        (
            "A".to_string(),
            sub(&["t"], vec![tp("t", 0), tp("t", 3)], 1),
        ),
        (
            "B".to_string(),
            sub(&["t"], vec![tp("t", 1), tp("t", 4)], 1),
        ),
        (
            "C".to_string(),
            sub(&["t"], vec![tp("t", 2), tp("t", 5)], 1),
        ),
        ("D".to_string(), sub(&["t"], vec![], -1)),
    ]);
    (t, members)
}

#[test]
fn newcomer_gets_moved_partitions_only_after_they_are_revoked() {
    let (t, members) = three_owners_and_a_newcomer();
    // Round 1: nobody gains a partition another member still owns (every
    // partition is owned, so nobody gains anything); exactly the partition
    // balance moves is revoked.
    let r1 = run(&t, &members);
    let mut revoked = BTreeSet::new();
    for (id, s) in &members {
        let owned = set(&s.owned_partitions);
        let got = set(&r1[id]);
        assert!(got.is_subset(&owned), "{id} gained {got:?}");
        revoked.extend(owned.difference(&got).cloned());
    }
    assert!(r1["D"].is_empty());
    assert_eq!(revoked.len(), 1, "6 over 4 needs one move: {r1:?}");
    assert_eq!(counts(&r1), vec![0, 1, 2, 2]);

    // Round 2: owners report what they kept (generation 2); D gets the
    // revoked partition, nothing else moves.
    let r2 = run(&t, &feed_back(&members, &r1, 2));
    assert_eq!(set(&r2["D"]), revoked);
    for id in ["A", "B", "C"] {
        assert_eq!(r2[id], r1[id], "{id}");
    }
    assert_eq!(counts(&r2), vec![1, 1, 2, 2]);
    assert_eq!(all_assigned(&r2).len(), 6);
    // Round 3: unchanged.
    assert_eq!(run(&t, &feed_back(&members, &r2, 3)), r2);
}

#[test]
fn newcomer_takes_one_from_each_of_three() {
    // 12 partitions, 4 each over A, B, C; D joins → 3 each: 3 revocations.
    let t = topics(&[("t", 12)]);
    let mut members: Members = ["A", "B", "C"]
        .iter()
        .zip(0u32..)
        .map(|(id, i)| {
            let owned = (0..4).map(|k| tp("t", i * 4 + k)).collect();
            (id.to_string(), sub(&["t"], owned, 7))
        })
        .collect();
    members.insert("D".into(), sub(&["t"], vec![], -1));
    let r1 = run(&t, &members);
    assert_eq!(counts(&r1), vec![0, 3, 3, 3]);
    let r2 = run(&t, &feed_back(&members, &r1, 8));
    assert_eq!(counts(&r2), vec![3, 3, 3, 3]);
    for id in ["A", "B", "C"] {
        assert_eq!(r2[id], r1[id]);
    }
}

#[test]
fn leaving_member_partitions_go_to_the_others_at_once() {
    let (t, members) = three_owners_and_a_newcomer();
    let r1 = run(&t, &members);
    let r2 = run(&t, &feed_back(&members, &r1, 2));
    let settled = feed_back(&members, &r2, 3);
    for leaver in ["A", "D"] {
        let mut rest = settled.clone();
        let gone = rest.remove(leaver).unwrap().owned_partitions;
        let out = run(&t, &rest);
        // Complete and balanced at once: nobody owns the leaver's
        // partitions, so there is no revocation round.
        assert_eq!(all_assigned(&out).len(), 6, "{leaver}: {out:?}");
        assert_eq!(counts(&out), vec![2, 2, 2], "{leaver}");
        // Nobody else's partitions move.
        for (id, s) in &rest {
            assert!(set(&s.owned_partitions).is_subset(&set(&out[id])), "{id}");
        }
        let gained: BTreeSet<TopicPartition> = rest
            .iter()
            .flat_map(|(id, s)| {
                set(&out[id])
                    .difference(&set(&s.owned_partitions))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(gained, set(&gone), "{leaver}");
    }
}

#[test]
fn stale_claims_lose_to_the_higher_generation() {
    let t = topics(&[("t", 4)]);
    // A owns 0 and 1 in generation 5; B claims 1 (and 2) from generation 4.
    let members = BTreeMap::from([
        (
            "A".to_string(),
            sub(&["t"], vec![tp("t", 0), tp("t", 1)], 5),
        ),
        (
            "B".to_string(),
            sub(&["t"], vec![tp("t", 1), tp("t", 2)], 4),
        ),
    ]);
    let out = run(&t, &members);
    assert_eq!(out["A"], vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(out["B"], vec![tp("t", 2), tp("t", 3)]);
    // The other way round: B's newer claim wins 1, A keeps 0.
    let members = BTreeMap::from([
        (
            "A".to_string(),
            sub(&["t"], vec![tp("t", 0), tp("t", 1)], 4),
        ),
        (
            "B".to_string(),
            sub(&["t"], vec![tp("t", 1), tp("t", 2)], 5),
        ),
    ]);
    let out = run(&t, &members);
    assert_eq!(out["A"], vec![tp("t", 0), tp("t", 3)]);
    assert_eq!(out["B"], vec![tp("t", 1), tp("t", 2)]);
}

#[test]
fn generation_from_user_data_when_the_field_is_unknown() {
    // v0/v1 subscriptions from Kafka's cooperative-sticky assignor carry
    // their generation as the i32 user data.
    let t = topics(&[("t", 2)]);
    let mut old = sub(&["t"], vec![tp("t", 0)], -1);
    old.user_data = Some(Bytes::from_static(&[0, 0, 0, 9]));
    let members = BTreeMap::from([
        ("A".to_string(), old),
        ("B".to_string(), sub(&["t"], vec![tp("t", 0)], 8)),
    ]);
    let out = run(&t, &members);
    assert_eq!(out["A"], vec![tp("t", 0)]);
    assert_eq!(out["B"], vec![tp("t", 1)]);
}

#[test]
fn same_generation_conflict_is_held_back_until_resolved() {
    // A and B both claim t/0 in generation 3: neither keeps it, and nobody
    // gets it while either still holds it.
    let t = topics(&[("t", 2)]);
    let members = BTreeMap::from([
        ("A".to_string(), sub(&["t"], vec![tp("t", 0)], 3)),
        (
            "B".to_string(),
            sub(&["t"], vec![tp("t", 0), tp("t", 1)], 3),
        ),
    ]);
    let r1 = run(&t, &members);
    assert!(!all_assigned(&r1).contains(&tp("t", 0)), "{r1:?}");
    assert_eq!(all_assigned(&r1), BTreeSet::from([tp("t", 1)]));
    let r2 = run(&t, &feed_back(&members, &r1, 4));
    assert_eq!(all_assigned(&r2).len(), 2);
    assert_eq!(counts(&r2), vec![1, 1]);
}

#[test]
fn claims_on_gone_partitions_and_dropped_topics() {
    // t shrank to 2 partitions (A's claim on t/5 is dropped); A stopped
    // subscribing to u, so A loses u/0, and B gets it only once A has
    // revoked it.
    let t = topics(&[("t", 2), ("u", 1)]);
    let members = BTreeMap::from([
        (
            "A".to_string(),
            sub(&["t"], vec![tp("t", 5), tp("u", 0)], 2),
        ),
        ("B".to_string(), sub(&["t", "u"], vec![], -1)),
    ]);
    // Balanced, B's share is u/0 (only B may have it), held back for now.
    let r1 = run(&t, &members);
    assert_eq!(r1["A"], vec![tp("t", 0), tp("t", 1)]);
    assert!(r1["B"].is_empty());
    let r2 = run(&t, &feed_back(&members, &r1, 3));
    assert_eq!(r2["A"], vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(r2["B"], vec![tp("u", 0)]);
}

#[test]
fn differing_subscriptions_balance_through_chains() {
    // A → x, B → x and y, C → y. A owns all of x but one... A can only give
    // to B, and B to C: reaching 3, 3, 3 needs A → B → C.
    let t = topics(&[("x", 5), ("y", 4)]);
    let x: Vec<TopicPartition> = (0..5).map(|p| tp("x", p)).collect();
    let y: Vec<TopicPartition> = (0..4).map(|p| tp("y", p)).collect();
    let members = BTreeMap::from([
        ("A".to_string(), sub(&["x"], x, 1)),
        ("B".to_string(), sub(&["x", "y"], y, 1)),
        ("C".to_string(), sub(&["y"], vec![], -1)),
    ]);
    let r1 = run(&t, &members);
    let r2 = run(&t, &feed_back(&members, &r1, 2));
    assert_eq!(counts(&r2), vec![3, 3, 3], "{r2:?}");
    assert_eq!(all_assigned(&r2).len(), 9);
    assert_eq!(run(&t, &feed_back(&members, &r2, 3)), r2);
    // Only one topic each for A and C: they can take no more than that.
    let t = topics(&[("x", 1), ("y", 9)]);
    let members = BTreeMap::from([
        ("A".to_string(), sub(&["x"], vec![], -1)),
        ("B".to_string(), sub(&["x", "y"], vec![], -1)),
        ("C".to_string(), sub(&["y"], vec![], -1)),
    ]);
    let out = run(&t, &members);
    assert_eq!(out["A"], vec![tp("x", 0)]);
    assert_eq!((out["B"].len(), out["C"].len()), (5, 4));
}

// ---- seeded random groups ----

struct Group {
    topics: BTreeMap<String, u32>,
    members: Members,
}

fn random_group(rng: &mut StdRng, uniform: bool) -> Group {
    let n_topics = rng.gen_range(1..=4);
    let names: Vec<String> = (0..n_topics).map(|i| format!("t{i}")).collect();
    let topics: BTreeMap<String, u32> = names
        .iter()
        .map(|t| (t.clone(), rng.gen_range(0..=9)))
        .collect();
    let n_members = rng.gen_range(1..=7);
    let all: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| tp(t, p)))
        .collect();
    let mut members = Members::new();
    for m in 0..n_members {
        let mut subscribed: Vec<String> = if uniform {
            names.clone()
        } else {
            names
                .iter()
                .filter(|_| rng.gen_bool(0.6))
                .cloned()
                .collect()
        };
        if !uniform && rng.gen_bool(0.1) {
            subscribed.push("missing".into());
        }
        // Claims: in the uniform case disjoint (a member owns partitions
        // nobody else claims), otherwise anything, with mixed generations.
        let gone_claim = (!uniform && rng.gen_bool(0.1)).then(|| tp("t0", 42));
        let owned: Vec<TopicPartition> = all
            .iter()
            .filter(|tp| {
                if uniform {
                    // Partition k goes to member (k·7 + p) mod (n + 2): some unowned.
                    let k = tp.topic.len() as u32 + tp.partition * 7;
                    rng.gen_bool(0.7) && (k % (n_members as u32 + 2)) == m as u32
                } else {
                    rng.gen_bool(0.25)
                }
            })
            .cloned()
            .chain(gone_claim)
            .collect();
        let generation = if uniform { 3 } else { rng.gen_range(-1..=4) };
        members.insert(format!("m{m}"), sub_owned(subscribed, owned, generation));
    }
    Group { topics, members }
}

fn sub_owned(topics: Vec<String>, owned: Vec<TopicPartition>, generation: i32) -> Subscription {
    Subscription {
        topics,
        owned_partitions: owned,
        generation_id: generation,
        ..Subscription::default()
    }
}

fn subscribed_topics<'a>(g: &'a Group, id: &str) -> BTreeSet<&'a str> {
    g.members[id]
        .topics
        .iter()
        .filter_map(|t| g.topics.get_key_value(t).map(|(k, _)| k.as_str()))
        .collect()
}

/// Every existing partition of a subscribed topic.
fn expected_partitions(g: &Group) -> BTreeSet<TopicPartition> {
    let mut all = BTreeSet::new();
    for id in g.members.keys() {
        for t in subscribed_topics(g, id) {
            all.extend((0..g.topics[t]).map(|p| tp(t, p)));
        }
    }
    all
}

/// The basic invariants of any round: only subscribed existing partitions,
/// none twice, none given to a member while another member's winning
/// (highest-generation) claim still holds it.
fn check_round(g: &Group, out: &Result) {
    assert_eq!(out.len(), g.members.len());
    all_assigned(out);
    for (id, list) in out {
        let subs = subscribed_topics(g, id);
        for p in list {
            assert!(subs.contains(p.topic.as_str()), "{id} got {p}");
            assert!(p.partition < g.topics[&p.topic]);
            let claims: Vec<(&String, i32)> = g
                .members
                .iter()
                .filter(|(_, s)| s.owned_partitions.contains(p))
                .map(|(m, s)| (m, s.generation_id))
                .collect();
            if let Some(max) = claims.iter().map(|c| c.1).max() {
                let winners: Vec<_> = claims.iter().filter(|c| c.1 == max).collect();
                assert!(
                    winners.iter().all(|c| c.0 == id),
                    "{p} given to {id} while {winners:?} hold it"
                );
            }
        }
    }
}

/// Optimal balance: no member can pass a partition, directly or along a
/// chain of members subscribed to what is passed, to a member with at
/// least two fewer (the semi-matching optimality condition). Implies
/// members with the same subscriptions differ by at most one.
fn check_balanced(g: &Group, out: &Result) {
    let ids: Vec<&String> = g.members.keys().collect();
    let subs: Vec<BTreeSet<&str>> = ids.iter().map(|id| subscribed_topics(g, id)).collect();
    for (u, from) in ids.iter().enumerate() {
        let mut seen = vec![false; ids.len()];
        seen[u] = true;
        let mut stack = vec![u];
        while let Some(a) = stack.pop() {
            for b in 0..ids.len() {
                let can = out[ids[a]]
                    .iter()
                    .any(|p| subs[b].contains(p.topic.as_str()));
                if !seen[b] && can {
                    seen[b] = true;
                    stack.push(b);
                    assert!(
                        out[ids[b]].len() + 2 > out[*from].len(),
                        "{from} could pass to {}: {out:?}",
                        ids[b]
                    );
                }
            }
        }
    }
}

#[test]
fn random_groups_settle_in_two_rounds_and_stay() {
    let mut rng = StdRng::seed_from_u64(0x5eed_a551);
    for case in 0..400 {
        let g = random_group(&mut rng, case % 4 == 0);
        let r1 = run(&g.topics, &g.members);
        check_round(&g, &r1);

        // Round 2: members own what round 1 gave them, one generation on.
        let g2 = Group {
            topics: g.topics.clone(),
            members: feed_back(&g.members, &r1, 10),
        };
        let r2 = run(&g2.topics, &g2.members);
        check_round(&g2, &r2);
        assert_eq!(all_assigned(&r2), expected_partitions(&g), "case {case}");
        check_balanced(&g2, &r2);
        for (id, list) in &r1 {
            assert!(set(list).is_subset(&set(&r2[id])), "case {case}: {id} lost");
        }
        // Round 3: nothing changes.
        let r3 = run(&g2.topics, &feed_back(&g.members, &r2, 11));
        assert_eq!(r3, r2, "case {case}");
        // Determinism.
        assert_eq!(run(&g.topics, &g.members), r1);
    }
}

#[test]
fn random_same_subscription_groups_revoke_no_more_than_needed() {
    let mut rng = StdRng::seed_from_u64(0xc0ffee);
    for case in 0..300 {
        let g = random_group(&mut rng, true);
        let r1 = run(&g.topics, &g.members);
        check_round(&g, &r1);
        let total = expected_partitions(&g).len();
        let m = g.members.len();
        let (q, r) = (total / m, total % m);
        // The fewest revocations: the r members owning most keep up to
        // q + 1, the rest up to q.
        let mut owned: Vec<usize> = g
            .members
            .values()
            .map(|s| s.owned_partitions.len())
            .collect();
        owned.sort_by(|a, b| b.cmp(a));
        let least: usize = owned
            .iter()
            .enumerate()
            .map(|(i, &k)| k.saturating_sub(if i < r { q + 1 } else { q }))
            .sum();
        let revoked: usize = g
            .members
            .iter()
            .map(|(id, s)| set(&s.owned_partitions).difference(&set(&r1[id])).count())
            .sum();
        assert_eq!(revoked, least, "case {case}: {r1:?}");
    }
}
