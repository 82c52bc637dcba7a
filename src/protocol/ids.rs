//! Identifier newtypes shared by every layer.
//!
//! Invariant: an [`Offset`] is never negative once it names a stored record;
//! negative values only appear on the wire as sentinels (see
//! [`crate::protocol::messages::OffsetSpec`]).

use std::fmt;

/// A partition number inside a topic (0-based).
pub type PartitionId = u32;

/// Index of a shard (one glommio executor pinned to one CPU) in this broker.
pub type ShardId = usize;

/// Node id of a broker in a cluster. A single-node broker is node 0.
pub type NodeId = i32;

/// Logical offset of a record inside a partition.
pub type Offset = u64;

/// Correlation id pairing a response with its request on one connection.
pub type CorrelationId = u32;

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Checks a topic name: 1..=249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`
/// (it names a directory on disk).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(format!(
            "topic name is {} bytes, longer than {MAX_TOPIC_NAME_BYTES}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' has '{c}'; use only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1-eu_2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
