//! Consumer-group partition assignment, the client's pure half (no I/O, no
//! async): Kafka's consumer protocol bytes (`protocol.rs`) and the assignors
//! the group leader runs over the members' subscriptions ([`assign`]:
//! `eager.rs` for range and round-robin, `sticky.rs` for cooperative-sticky).
//!
//! A member encodes its [`Subscription`] as its JoinGroup protocol metadata
//! (protocol name = [`AssignorKind::name`]); the leader decodes every
//! member's, calls [`assign`], and sends each member its [`Assignment`]
//! bytes in SyncGroup. The bytes are Kafka's, so Java and librdkafka
//! consumers can share a group with Corelog consumers.
//!
//! Invariants of [`assign`], for every kind:
//! - every member gets an entry, possibly empty;
//! - only topics that a member subscribes to and that exist (are keys of
//!   `partitions_per_topic`) are assigned to it, partitions `0..count`;
//! - no partition is assigned twice; each member's list is sorted;
//! - the result depends only on the inputs (deterministic: members are taken
//!   in member-id order, partitions in topic-then-partition order).
//!
//! Range and round-robin are eager: every partition is assigned every time
//! (members revoke everything before rejoining). Cooperative-sticky may
//! leave a partition unassigned for one round while its previous owner gives
//! it up (`sticky.rs`): a member whose assignment lacks partitions it owns
//! revokes them and rejoins at once, which is the group member's job.
//!
//! Kafka also orders members by their static group instance id when they
//! have one; this input has member ids only, so they are ordered by member
//! id. Kafka's rack-aware variants need partition replica racks, which
//! Corelog does not have, so `rack_id` is carried but not used.

mod eager;
mod protocol;
mod sticky;

#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod sticky_tests;

use std::collections::BTreeMap;

use crate::protocol::TopicPartition;

pub use protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    AssignorError, Subscription, CONSUMER_PROTOCOL_VERSION,
};

/// The assignors, by their Kafka protocol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssignorKind {
    /// Kafka's `RangeAssignor` ("range").
    Range,
    /// Kafka's `RoundRobinAssignor` ("roundrobin").
    RoundRobin,
    /// Kafka's `CooperativeStickyAssignor` ("cooperative-sticky").
    CooperativeSticky,
}

impl AssignorKind {
    pub const ALL: [AssignorKind; 3] = [
        AssignorKind::Range,
        AssignorKind::RoundRobin,
        AssignorKind::CooperativeSticky,
    ];

    /// The protocol name members put in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "roundrobin",
            AssignorKind::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor with this protocol name, if we have it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kafka's `RebalanceProtocol.COOPERATIVE` (members keep what they still
    /// own across a rebalance) rather than `EAGER` (members revoke all).
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignorKind::CooperativeSticky)
    }
}

impl std::fmt::Display for AssignorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Assigns the partitions of the subscribed, existing topics to the members
/// (keyed by member id). See the module invariants.
pub fn assign(
    kind: AssignorKind,
    partitions_per_topic: &BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out = match kind {
        AssignorKind::Range => eager::range(partitions_per_topic, members),
        AssignorKind::RoundRobin => eager::round_robin(partitions_per_topic, members),
        AssignorKind::CooperativeSticky => sticky::assign(partitions_per_topic, members),
    };
    for id in members.keys() {
        out.entry(id.clone()).or_default();
    }
    for partitions in out.values_mut() {
        partitions.sort();
    }
    out
}

/// The topics `sub` subscribes to that exist, with their partition counts.
fn subscribed<'a>(
    partitions_per_topic: &'a BTreeMap<String, u32>,
    sub: &Subscription,
) -> BTreeMap<&'a str, u32> {
    sub.topics
        .iter()
        .filter_map(|t| partitions_per_topic.get_key_value(t.as_str()))
        .map(|(t, &n)| (t.as_str(), n))
        .collect()
}

/// Every topic some member subscribes to that exists, with its count.
fn all_subscribed<'a>(
    partitions_per_topic: &'a BTreeMap<String, u32>,
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<&'a str, u32> {
    let mut topics = BTreeMap::new();
    for sub in members.values() {
        topics.extend(subscribed(partitions_per_topic, sub));
    }
    topics
}

/// An empty entry for every member.
fn empty_for(members: &BTreeMap<String, Subscription>) -> BTreeMap<String, Vec<TopicPartition>> {
    members.keys().map(|id| (id.clone(), Vec::new())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in AssignorKind::ALL {
            assert_eq!(AssignorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(AssignorKind::from_name("sticky"), None);
        assert_eq!(AssignorKind::CooperativeSticky.name(), "cooperative-sticky");
        assert!(AssignorKind::CooperativeSticky.is_cooperative());
        assert!(!AssignorKind::Range.is_cooperative());
        assert!(!AssignorKind::RoundRobin.is_cooperative());
    }

    #[test]
    fn every_member_gets_an_entry_and_only_existing_subscribed_topics() {
        let topics = BTreeMap::from([("a".to_string(), 2), ("empty".to_string(), 0)]);
        let members = BTreeMap::from([
            (
                "m1".to_string(),
                Subscription {
                    topics: vec!["a".into(), "missing".into(), "empty".into()],
                    ..Subscription::default()
                },
            ),
            (
                "m2".to_string(),
                Subscription {
                    topics: vec!["missing".into()],
                    ..Subscription::default()
                },
            ),
            ("m3".to_string(), Subscription::default()),
        ]);
        for kind in AssignorKind::ALL {
            let out = assign(kind, &topics, &members);
            assert_eq!(out.len(), 3, "{kind}");
            assert_eq!(
                out["m1"],
                vec![TopicPartition::new("a", 0), TopicPartition::new("a", 1)],
                "{kind}"
            );
            assert!(out["m2"].is_empty() && out["m3"].is_empty(), "{kind}");
        }
        // No members: nothing.
        for kind in AssignorKind::ALL {
            assert!(assign(kind, &topics, &BTreeMap::new()).is_empty());
        }
    }
}
