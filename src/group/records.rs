//! The internal topic's record format: what `__consumer_offsets` holds, and
//! which of its partitions a group lives in.
//!
//! Owns: keys and values of the two record kinds (a committed offset per
//! group, topic and partition; a group's membership record), their encoding
//! into record batches (RecordBatch v2 like every other topic) and decoding
//! on replay, and [`partition_for_group`].
//!
//! Format (docs/consumer-groups.md): keys and values are compact JSON with a
//! version field, so `corelog consume __consumer_offsets` is readable and the
//! format can grow. A record with a null value is a tombstone: the key is
//! gone. The last record for a key wins, so replaying the log from its start
//! rebuilds the state; a snapshot (`group::coordinator`) rewrites every live
//! key so the log before it can be dropped.
//!
//! Invariants: decoding never panics on what it reads (a record it cannot
//! parse is skipped with a warning, never applied); encode then decode is the
//! identity (tested).
//!
//! Must not know: group state transitions, partitions' I/O, shards.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::batch::BatchBuilder;

/// The internal topic holding every group's offsets and membership.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Current version of keys and values.
const FORMAT_VERSION: u8 = 1;

/// The partition of [`OFFSETS_TOPIC`] (of `partitions`) that holds `group`:
/// Kafka's choice, `abs(javaHashCode(group)) % partitions`.
pub fn partition_for_group(group: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "the offsets topic has partitions");
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.unsigned_abs() };
    abs % partitions
}

/// FNV-1a, 64 bits (member-id salts; not a security boundary).
pub fn hash64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Key {
    Offset {
        v: u8,
        group: String,
        topic: String,
        partition: u32,
    },
    Group {
        v: u8,
        group: String,
    },
}

impl Key {
    pub fn offset(group: &str, topic: &str, partition: u32) -> Key {
        Key::Offset {
            v: FORMAT_VERSION,
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
        }
    }

    pub fn group(group: &str) -> Key {
        Key::Group {
            v: FORMAT_VERSION,
            group: group.to_string(),
        }
    }

    pub fn group_id(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group, .. } => group,
        }
    }
}

/// A committed offset's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub v: u8,
    pub offset: u64,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
    pub commit_ms: i64,
}

impl OffsetValue {
    pub fn new(offset: u64, leader_epoch: Option<i32>, metadata: &str, commit_ms: i64) -> Self {
        Self {
            v: FORMAT_VERSION,
            offset,
            leader_epoch,
            metadata: metadata.to_string(),
            commit_ms,
        }
    }
}

/// One member in a group's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// Its metadata for the group's protocol, hex.
    pub subscription: String,
    /// What the leader assigned it, hex.
    pub assignment: String,
}

/// A group's membership record (written when a generation's assignment is
/// in force, when the group empties, and when a static member is replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub v: u8,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Wall-clock ms of the group's last state change.
    pub state_ms: i64,
    pub members: Vec<MemberValue>,
}

impl GroupValue {
    pub fn version() -> u8 {
        FORMAT_VERSION
    }
}

/// A decoded record: a key and its value (`None` for a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Offset(Key, Option<OffsetValue>),
    Group(Key, Option<GroupValue>),
}

impl Entry {
    pub fn key(&self) -> &Key {
        match self {
            Entry::Offset(k, _) | Entry::Group(k, _) => k,
        }
    }

    fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Entry::Offset(k, v) => (json(k), v.as_ref().map(json)),
            Entry::Group(k, v) => (json(k), v.as_ref().map(json)),
        }
    }

    /// Decodes one record; `None` (with a warning) for what it cannot read.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Entry> {
        let key: Key = serde_json::from_slice(key?)
            .map_err(|e| tracing::warn!("{OFFSETS_TOPIC}: skipping a record with a bad key: {e}"))
            .ok()?;
        let bad = |e: serde_json::Error| {
            tracing::warn!(
                "{OFFSETS_TOPIC}: skipping a record of group '{}' with a bad value: {e}",
                key.group_id()
            )
        };
        match &key {
            Key::Offset { .. } => {
                let v = match value {
                    None => None,
                    Some(b) => Some(serde_json::from_slice(b).map_err(bad).ok()?),
                };
                Some(Entry::Offset(key, v))
            }
            Key::Group { .. } => {
                let v = match value {
                    None => None,
                    Some(b) => Some(serde_json::from_slice(b).map_err(bad).ok()?),
                };
                Some(Entry::Group(key, v))
            }
        }
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and integers: serializing cannot fail.
    serde_json::to_vec(v).expect("plain structs always serialize")
}

/// Encodes entries into batches of at most about `max_batch_bytes` each
/// (at least one entry per batch), timestamped `wall_ms`.
pub fn encode_batches(entries: &[Entry], wall_ms: i64, max_batch_bytes: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for e in entries {
        let (k, v) = e.encode();
        let size = b.record_size_bytes(wall_ms, Some(&k), v.as_deref(), &[]);
        if !b.is_empty() && b.size_bytes() + size > max_batch_bytes {
            out.push(std::mem::take(&mut b).finish());
        }
        b.push(wall_ms, Some(&k), v.as_deref(), &[]);
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
}

/// Lowercase hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Bytes of a hex string (`None` if it is not hex).
pub fn from_hex(s: &str) -> Option<Bytes> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    for i in (0..s.len()).step_by(2) {
        out.push(u8::from_str_radix(s.get(i..i + 2)?, 16).ok()?);
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{records, verify_crc};

    #[test]
    fn partition_is_kafkas() {
        // Java: "my-group".hashCode() == -1_906_497_762 (abs, mod 50 = 12).
        assert_eq!(partition_for_group("my-group", 50), 12);
        assert_eq!(partition_for_group("", 16), 0);
        for g in ["a", "group-1", "ünïcode", "x".repeat(300).as_str()] {
            assert!(partition_for_group(g, 7) < 7);
        }
    }

    #[test]
    fn entries_round_trip_through_batches() {
        let entries = vec![
            Entry::Offset(
                Key::offset("g", "t", 3),
                Some(OffsetValue::new(42, Some(7), "meta", 1_000)),
            ),
            Entry::Offset(Key::offset("g", "t", 4), None),
            Entry::Group(
                Key::group("g"),
                Some(GroupValue {
                    v: 1,
                    protocol_type: Some("consumer".into()),
                    protocol: Some("range".into()),
                    generation: 5,
                    leader: Some("m1".into()),
                    state_ms: 9,
                    members: vec![MemberValue {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "127.0.0.1".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 20_000,
                        subscription: to_hex(b"\x00\x01sub"),
                        assignment: to_hex(b""),
                    }],
                }),
            ),
            Entry::Group(Key::group("h"), None),
        ];
        let batches = encode_batches(&entries, 5, 100);
        assert!(batches.len() > 1, "a small bound splits batches");
        let mut back = Vec::new();
        for b in &batches {
            verify_crc(b).expect("valid batch");
            for r in records(b).expect("records") {
                let r = r.expect("record");
                back.push(Entry::decode(r.key, r.value).expect("decodes"));
            }
        }
        assert_eq!(back, entries);
    }

    #[test]
    fn garbage_is_skipped_not_applied() {
        assert_eq!(Entry::decode(None, Some(b"{}")), None);
        assert_eq!(Entry::decode(Some(b"not json"), None), None);
        let k = serde_json::to_vec(&Key::offset("g", "t", 0)).expect("json");
        assert_eq!(Entry::decode(Some(&k), Some(b"[1,2")), None);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("00ff").as_deref(), Some(&[0u8, 255][..]));
    }
}
