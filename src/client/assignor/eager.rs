//! The eager assignors: Kafka's `RangeAssignor` and `RoundRobinAssignor`
//! (without rack awareness). Stateless: owned partitions and generations
//! are ignored; every subscribed, existing partition is assigned each time.
//!
//! - Range, per topic: the members subscribed to it, in member-id order,
//!   get consecutive ranges; with `n` partitions and `m` members each gets
//!   `n / m` and the first `n % m` one more.
//! - Round-robin: every subscribed partition, in topic-then-partition order,
//!   is dealt to the members in member-id order (circularly), skipping a
//!   member not subscribed to that partition's topic.

use std::collections::{BTreeMap, BTreeSet};

use super::{all_subscribed, empty_for, subscribed, Subscription};
use crate::protocol::TopicPartition;

pub(super) fn range(
    partitions_per_topic: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out = empty_for(members);
    // topic → (partition count, subscribed members in member-id order)
    let mut by_topic: BTreeMap<&str, (u32, Vec<&str>)> = BTreeMap::new();
    for (id, sub) in members {
        for (topic, n) in subscribed(partitions_per_topic, sub) {
            by_topic.entry(topic).or_insert((n, Vec::new())).1.push(id);
        }
    }
    for (topic, (n, consumers)) in by_topic {
        let m = u32::try_from(consumers.len()).unwrap_or(u32::MAX);
        let (per, extra) = (n / m, n % m);
        for (i, id) in (0u32..).zip(consumers) {
            let start = per * i + i.min(extra);
            let len = per + u32::from(i < extra);
            if let Some(list) = out.get_mut(id) {
                list.extend((start..start + len).map(|p| TopicPartition::new(topic, p)));
            }
        }
    }
    out
}

pub(super) fn round_robin(
    partitions_per_topic: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out = empty_for(members);
    let subs: Vec<(&String, BTreeSet<&str>)> = members
        .iter()
        .map(|(id, sub)| {
            let topics = subscribed(partitions_per_topic, sub).into_keys().collect();
            (id, topics)
        })
        .collect();
    let mut next = 0;
    for (topic, n) in all_subscribed(partitions_per_topic, members) {
        for partition in 0..n {
            // Some member subscribes to `topic`, so at most one lap finds it.
            let Some(offset) =
                (0..subs.len()).find(|k| subs[(next + k) % subs.len()].1.contains(topic))
            else {
                break;
            };
            let pick = (next + offset) % subs.len();
            if let Some(list) = out.get_mut(subs[pick].0) {
                list.push(TopicPartition::new(topic, partition));
            }
            next = (pick + 1) % subs.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{assign, AssignorKind};
    use super::*;

    fn topics(spec: &[(&str, u32)]) -> BTreeMap<String, u32> {
        spec.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, Subscription> {
        spec.iter()
            .map(|&(id, topics)| {
                let sub = Subscription {
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                    ..Subscription::default()
                };
                (id.to_string(), sub)
            })
            .collect()
    }

    /// "t0p1, t1p2" style lists.
    fn tps(list: &str) -> Vec<TopicPartition> {
        list.split(", ")
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (t, p) = s.split_once('p').unwrap();
                TopicPartition::new(t, p.parse().unwrap())
            })
            .collect()
    }

    fn check(out: &BTreeMap<String, Vec<TopicPartition>>, want: &[(&str, &str)]) {
        let want: BTreeMap<String, Vec<TopicPartition>> =
            want.iter().map(|&(m, l)| (m.to_string(), tps(l))).collect();
        assert_eq!(out, &want);
    }

    #[test]
    fn range_kafka_javadoc_example() {
        // RangeAssignor javadoc: C0 and C1, t0 and t1 with 3 partitions each.
        let out = assign(
            AssignorKind::Range,
            &topics(&[("t0", 3), ("t1", 3)]),
            &members(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
        );
        check(
            &out,
            &[("C0", "t0p0, t0p1, t1p0, t1p1"), ("C1", "t0p2, t1p2")],
        );
    }

    #[test]
    fn range_three_members() {
        // 3 members, 2 topics of 3 partitions: one of each topic apiece.
        let out = assign(
            AssignorKind::Range,
            &topics(&[("t0", 3), ("t1", 3)]),
            &members(&[
                ("C0", &["t0", "t1"]),
                ("C1", &["t0", "t1"]),
                ("C2", &["t0", "t1"]),
            ]),
        );
        check(
            &out,
            &[
                ("C0", "t0p0, t1p0"),
                ("C1", "t0p1, t1p1"),
                ("C2", "t0p2, t1p2"),
            ],
        );
        // 7 partitions over 3: 3, 2, 2 (the first n % m get one more); only
        // members subscribed to a topic share it.
        let out = assign(
            AssignorKind::Range,
            &topics(&[("a", 7), ("b", 2)]),
            &members(&[("m1", &["a"]), ("m2", &["a", "b"]), ("m3", &["a", "b"])]),
        );
        check(
            &out,
            &[
                ("m1", "ap0, ap1, ap2"),
                ("m2", "ap3, ap4, bp0"),
                ("m3", "ap5, ap6, bp1"),
            ],
        );
        // Fewer partitions than members: the last get nothing.
        let out = assign(
            AssignorKind::Range,
            &topics(&[("a", 1)]),
            &members(&[("m1", &["a"]), ("m2", &["a"])]),
        );
        check(&out, &[("m1", "ap0"), ("m2", "")]);
    }

    #[test]
    fn round_robin_kafka_javadoc_examples() {
        // Same subscriptions: C0 and C1, t0 and t1 with 3 partitions each.
        let out = assign(
            AssignorKind::RoundRobin,
            &topics(&[("t0", 3), ("t1", 3)]),
            &members(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
        );
        check(
            &out,
            &[("C0", "t0p0, t0p2, t1p1"), ("C1", "t0p1, t1p0, t1p2")],
        );
        // Differing subscriptions: C0 → t0; C1 → t0, t1; C2 → t0, t1, t2;
        // t0, t1, t2 with 1, 2, 3 partitions.
        let out = assign(
            AssignorKind::RoundRobin,
            &topics(&[("t0", 1), ("t1", 2), ("t2", 3)]),
            &members(&[
                ("C0", &["t0"]),
                ("C1", &["t0", "t1"]),
                ("C2", &["t0", "t1", "t2"]),
            ]),
        );
        check(
            &out,
            &[
                ("C0", "t0p0"),
                ("C1", "t1p0"),
                ("C2", "t1p1, t2p0, t2p1, t2p2"),
            ],
        );
    }

    #[test]
    fn round_robin_three_members() {
        let out = assign(
            AssignorKind::RoundRobin,
            &topics(&[("t0", 3), ("t1", 3)]),
            &members(&[
                ("C0", &["t0", "t1"]),
                ("C1", &["t0", "t1"]),
                ("C2", &["t0", "t1"]),
            ]),
        );
        check(
            &out,
            &[
                ("C0", "t0p0, t1p0"),
                ("C1", "t0p1, t1p1"),
                ("C2", "t0p2, t1p2"),
            ],
        );
    }
}
