//! Kafka's consumer protocol: the bytes a consumer-group member sends as its
//! JoinGroup protocol metadata (`ConsumerProtocolSubscription`) and the bytes
//! the leader hands each member in SyncGroup (`ConsumerProtocolAssignment`),
//! byte-compatible with the Java client (schemas in Kafka's
//! `clients/src/main/resources/common/message/ConsumerProtocol*.json`).
//!
//! Format: big-endian, non-flexible: `i16` version, then the fields of that
//! version; a string is an `i16` length + UTF-8 (`-1` = null where
//! nullable), an array an `i32` count, bytes an `i32` length (`-1` = null).
//!
//! ```text
//! Subscription  v0: Topics [string], UserData nullable bytes
//!               v1: + OwnedPartitions [Topic string, Partitions [i32]]
//!               v2: + GenerationId i32 (-1 unknown)
//!               v3: + RackId nullable string
//! Assignment  v0-3: AssignedPartitions [Topic string, Partitions [i32]], UserData nullable bytes
//! ```
//!
//! Invariants:
//! - We write version 3 of both (what the Java client 3.x writes).
//! - We read every version from 0; a version above 3 is read as version 3
//!   and the bytes after the v3 fields are ignored (Kafka's rule: later
//!   versions only append fields). Trailing bytes after any version's
//!   fields are ignored, as the Java client does.
//! - Decoding never panics and never allocates more than the input could
//!   hold: every length and count is checked against the bytes left before
//!   anything is reserved; negative partition ids, null where the schema
//!   forbids it and invalid UTF-8 are errors.
//!
//! Hand-written, not `kafka-protocol`: that crate (0.18) has both types, but
//! its array decoder reserves `Vec::with_capacity(count)` straight from the
//! untrusted `i32` count, so a 10-byte hostile subscription asks for tens of
//! GiB (an abort, not an error) — and this is input from other group members.
//! The format is small and frozen (only appended to), so ~150 lines here.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{PartitionId, TopicPartition};

/// The version we write of both messages.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// A member's subscription: its JoinGroup protocol metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the member wants to consume.
    pub topics: Vec<String>,
    /// Assignor-specific data (Kafka's cooperative-sticky assignor puts its
    /// generation here as an `i32` for leaders that read only v0/v1).
    pub user_data: Option<Bytes>,
    /// Partitions the member owns right now (v1+).
    pub owned_partitions: Vec<TopicPartition>,
    /// Generation in which `owned_partitions` were assigned; -1 unknown (v2+).
    pub generation_id: i32,
    /// The member's rack (v3+).
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

/// What the leader gives one member: its SyncGroup assignment bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub partitions: Vec<TopicPartition>,
    pub user_data: Option<Bytes>,
}

/// Why consumer-protocol bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignorError {
    #[error("{message}: unsupported version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    #[error("{field}: needs {needed} bytes, only {remaining} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{field}: invalid length {len}")]
    InvalidLength { field: &'static str, len: i32 },
    #[error("{field}: {count} elements cannot fit in the {remaining} bytes left")]
    CountTooLarge {
        field: &'static str,
        count: i32,
        remaining: usize,
    },
    #[error("{field}: not UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("topic {topic}: negative partition {partition}")]
    NegativePartition { topic: String, partition: i32 },
}

/// Encodes a subscription as version 3.
///
/// Values Kafka's format cannot carry (a string over 32,767 bytes, user data
/// over 2 GiB, a partition id over `i32::MAX`) are clamped to the format's
/// limit; none arise from valid topic names and partition ids.
pub fn encode_subscription(sub: &Subscription) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    put_len32(&mut buf, sub.topics.len());
    for topic in &sub.topics {
        put_string(&mut buf, topic);
    }
    put_nullable_bytes(&mut buf, sub.user_data.as_deref());
    put_topic_partitions(&mut buf, &sub.owned_partitions);
    buf.put_i32(sub.generation_id);
    match &sub.rack_id {
        Some(rack) => put_string(&mut buf, rack),
        None => buf.put_i16(-1),
    }
    buf.freeze()
}

/// Decodes a subscription of any version (see the module invariants).
pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription, AssignorError> {
    let mut r = Reader { buf: bytes };
    let version = r.version("subscription")?;
    let count = r.count("topics", 2)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(r.string("topic")?);
    }
    let user_data = r.nullable_bytes("user_data")?;
    let owned_partitions = if version >= 1 {
        r.topic_partitions("owned_partitions")?
    } else {
        Vec::new()
    };
    let generation_id = if version >= 2 {
        r.i32("generation_id")?
    } else {
        -1
    };
    let rack_id = if version >= 3 {
        r.nullable_string("rack_id")?
    } else {
        None
    };
    Ok(Subscription {
        topics,
        user_data,
        owned_partitions,
        generation_id,
        rack_id,
    })
}

/// Encodes an assignment as version 3, partitions grouped by topic (sorted).
pub fn encode_assignment(assignment: &Assignment) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    put_topic_partitions(&mut buf, &assignment.partitions);
    put_nullable_bytes(&mut buf, assignment.user_data.as_deref());
    buf.freeze()
}

/// Decodes an assignment of any version. Empty bytes (what the coordinator
/// hands a member the leader gave nothing) are an empty assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, AssignorError> {
    if bytes.is_empty() {
        return Ok(Assignment::default());
    }
    let mut r = Reader { buf: bytes };
    r.version("assignment")?;
    let partitions = r.topic_partitions("assigned_partitions")?;
    let user_data = r.nullable_bytes("user_data")?;
    Ok(Assignment {
        partitions,
        user_data,
    })
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn put_len32(buf: &mut BytesMut, n: usize) {
    buf.put_i32(clamp_i32(n));
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_i16(end as i16);
    buf.put_slice(&s.as_bytes()[..end]);
}

fn put_nullable_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            let len = clamp_i32(b.len());
            buf.put_i32(len);
            buf.put_slice(&b[..len as usize]);
        }
        None => buf.put_i32(-1),
    }
}

/// `[Topic string, Partitions [i32]]`, one entry per topic, sorted, no
/// duplicate partitions.
fn put_topic_partitions(buf: &mut BytesMut, partitions: &[TopicPartition]) {
    let mut sorted: Vec<&TopicPartition> = partitions.iter().collect();
    sorted.sort();
    sorted.dedup();
    let topics: Vec<&[&TopicPartition]> = sorted.chunk_by(|a, b| a.topic == b.topic).collect();
    put_len32(buf, topics.len());
    for group in topics {
        put_string(buf, &group[0].topic);
        put_len32(buf, group.len());
        for tp in group {
            buf.put_i32(i32::try_from(tp.partition).unwrap_or(i32::MAX));
        }
    }
}

/// A cursor over untrusted bytes: every read checks what is left first.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], AssignorError> {
        if self.buf.len() < n {
            return Err(AssignorError::Truncated {
                field,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, AssignorError> {
        let b = self.take(field, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, AssignorError> {
        let b = self.take(field, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn version(&mut self, message: &'static str) -> Result<i16, AssignorError> {
        let version = self.i16("version")?;
        if version < 0 {
            return Err(AssignorError::UnsupportedVersion { message, version });
        }
        Ok(version)
    }

    /// A non-null array count whose elements take at least `min_element`
    /// bytes each: bounded by the bytes left, so reserving it is safe.
    fn count(&mut self, field: &'static str, min_element: usize) -> Result<usize, AssignorError> {
        let count = self.i32(field)?;
        let n = usize::try_from(count)
            .map_err(|_| AssignorError::InvalidLength { field, len: count })?;
        if n > self.buf.len() / min_element {
            return Err(AssignorError::CountTooLarge {
                field,
                count,
                remaining: self.buf.len(),
            });
        }
        Ok(n)
    }

    fn str_of_len(&mut self, field: &'static str, len: i16) -> Result<String, AssignorError> {
        let n = usize::try_from(len).map_err(|_| AssignorError::InvalidLength {
            field,
            len: len.into(),
        })?;
        let raw = self.take(field, n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| AssignorError::InvalidUtf8 { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, AssignorError> {
        let len = self.i16(field)?;
        self.str_of_len(field, len)
    }

    fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, AssignorError> {
        match self.i16(field)? {
            -1 => Ok(None),
            len => self.str_of_len(field, len).map(Some),
        }
    }

    fn nullable_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>, AssignorError> {
        match self.i32(field)? {
            -1 => Ok(None),
            len => {
                let n = usize::try_from(len)
                    .map_err(|_| AssignorError::InvalidLength { field, len })?;
                Ok(Some(Bytes::copy_from_slice(self.take(field, n)?)))
            }
        }
    }

    /// `[Topic string, Partitions [i32]]` flattened, in wire order.
    fn topic_partitions(
        &mut self,
        field: &'static str,
    ) -> Result<Vec<TopicPartition>, AssignorError> {
        // An entry is at least a string length (2) and a count (4).
        let topics = self.count(field, 6)?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let topic = self.string("topic")?;
            let partitions = self.count("partitions", 4)?;
            out.reserve(partitions);
            for _ in 0..partitions {
                let partition = self.i32("partition")?;
                let id = PartitionId::try_from(partition).map_err(|_| {
                    AssignorError::NegativePartition {
                        topic: topic.clone(),
                        partition,
                    }
                })?;
                out.push(TopicPartition::new(topic.clone(), id));
            }
        }
        Ok(out)
    }
}
