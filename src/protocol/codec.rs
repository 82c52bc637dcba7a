//! Typed messages <-> FlatBuffers. The only place that touches generated code.
//!
//! Invariants:
//! - `decode_request` / `decode_response` verify the buffer exactly once with
//!   [`DecodeLimits`] and then copy out only names and numbers; record batches
//!   become `Bytes` slices of the input frame (`frame.slice_ref`, no copy).
//! - `encode_response_parts` never copies fetched record bytes: they follow
//!   the FlatBuffer as separate buffers its tables point to.
//! - Nothing read from the wire is cast with wrapping: a negative partition,
//!   offset or count where the message type is unsigned is a decode error.
//! - Decoding never panics, whatever the input bytes.
//!
//! Layout: shared helpers here, `codec/request.rs` and `codec/response.rs`
//! for the two directions, `codec/group_request.rs` and
//! `codec/group_response.rs` for the consumer-group messages (called from
//! those two), `codec/tests.rs` for round trips and fuzzing and
//! `codec/group_tests.rs` for the group messages' cases.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};

use super::error::{ErrorCode, WireError};
use super::generated::fb;
use super::ids::CorrelationId;
use super::messages::*;

/// Verifier limits applied at ingress.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_tables: usize,
    pub max_depth: usize,
    pub max_apparent_size_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_tables: 1_000_000,
            max_depth: 64,
            max_apparent_size_bytes: 1 << 31,
        }
    }
}

impl DecodeLimits {
    /// The limits the broker applies to every request frame: the configured
    /// table and depth limits, and an apparent size of twice
    /// `max_frame_bytes` (shared vectors and strings may be counted twice).
    pub fn for_requests(l: &crate::config::Limits) -> Self {
        Self {
            max_tables: l.max_flatbuffer_tables as usize,
            max_depth: l.max_flatbuffer_depth as usize,
            max_apparent_size_bytes: (l.max_frame_bytes as usize).saturating_mul(2),
        }
    }

    fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_apparent_size_bytes,
            ignore_missing_null_terminator: false,
        }
    }
}

/// A request that could not be decoded. `correlation_id` is set when the
/// envelope verified far enough to read it (0 otherwise).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub correlation_id: CorrelationId,
    pub error: WireError,
}

type R<T> = Result<T, String>;

fn decode_err(correlation_id: CorrelationId, code: ErrorCode, message: String) -> DecodeError {
    DecodeError {
        correlation_id,
        error: WireError::new(code, message),
    }
}

/// Reads `correlation_id` (field 0, u32) of the root table of a buffer that
/// did not verify as a whole, with every access bounds-checked. Returns None
/// when the envelope itself is unreadable.
fn peek_correlation_id(buf: &[u8]) -> Option<CorrelationId> {
    let u32_at = |at: usize| -> Option<u32> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = buf.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    };
    let table = u32_at(0)? as usize;
    let soffset = u32_at(table)? as i32 as i64;
    let vtable = usize::try_from(table as i64 - soffset).ok()?;
    let vtable_len = u16_at(vtable)? as usize;
    let table_len = u16_at(vtable.checked_add(2)?)? as usize;
    // Field 0 sits at vtable + 4.
    if vtable_len < 6 {
        return Some(0);
    }
    let field = u16_at(vtable + 4)? as usize;
    if field == 0 {
        return Some(0);
    }
    if field + 4 > table_len {
        return None;
    }
    u32_at(table.checked_add(field)?)
}

// ------------------------------------------------------------------ helpers

fn partition_from_wire(v: i32, ctx: &str) -> R<u32> {
    u32::try_from(v).map_err(|_| format!("{ctx}: partition {v} is negative"))
}

fn offset_from_wire(v: i64, what: &str, ctx: &str) -> R<u64> {
    u64::try_from(v).map_err(|_| format!("{ctx}: {what} {v} is negative"))
}

/// -1 (the schema default) means absent; other negatives are errors.
fn opt_offset_from_wire(v: i64, what: &str, ctx: &str) -> R<Option<u64>> {
    match v {
        -1 => Ok(None),
        v => offset_from_wire(v, what, ctx).map(Some),
    }
}

fn opt_offset_to_wire(v: Option<u64>) -> i64 {
    v.map(offset_to_wire).unwrap_or(-1)
}

/// Offsets above i64::MAX cannot be represented on the wire; they saturate
/// (no layer produces them).
fn offset_to_wire(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn partition_to_wire(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

fn wire_error(code: fb::ErrorCode, message: Option<&str>) -> Option<WireError> {
    let code = ErrorCode::from_wire(code);
    if code == ErrorCode::None {
        None
    } else {
        Some(WireError::new(code, message.unwrap_or_default()))
    }
}

fn error_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    e: Option<&WireError>,
) -> (fb::ErrorCode, Option<WIPOffset<&'a str>>) {
    match e {
        None => (fb::ErrorCode::None, None),
        Some(e) => (
            e.code.to_wire(),
            if e.message.is_empty() {
                None
            } else {
                Some(fbb.create_string(&e.message))
            },
        ),
    }
}

fn acks_to_wire(a: Acks) -> fb::Acks {
    match a {
        Acks::None => fb::Acks::None,
        Acks::Leader => fb::Acks::Leader,
        Acks::All => fb::Acks::All,
    }
}

fn acks_from_wire(a: fb::Acks) -> R<Acks> {
    match a {
        fb::Acks::None => Ok(Acks::None),
        fb::Acks::Leader => Ok(Acks::Leader),
        fb::Acks::All => Ok(Acks::All),
        other => Err(format!("produce: unknown acks value {}", other.0)),
    }
}

fn api_to_wire(a: ApiKey) -> fb::ApiKey {
    match a {
        ApiKey::ApiVersions => fb::ApiKey::ApiVersions,
        ApiKey::CreateTopic => fb::ApiKey::CreateTopic,
        ApiKey::DeleteTopic => fb::ApiKey::DeleteTopic,
        ApiKey::Metadata => fb::ApiKey::Metadata,
        ApiKey::Produce => fb::ApiKey::Produce,
        ApiKey::Fetch => fb::ApiKey::Fetch,
        ApiKey::ListOffsets => fb::ApiKey::ListOffsets,
        ApiKey::DeleteRecords => fb::ApiKey::DeleteRecords,
        ApiKey::AlterTopicConfig => fb::ApiKey::AlterTopicConfig,
        ApiKey::InitProducerId => fb::ApiKey::InitProducerId,
        ApiKey::FindCoordinator => fb::ApiKey::FindCoordinator,
        ApiKey::JoinGroup => fb::ApiKey::JoinGroup,
        ApiKey::SyncGroup => fb::ApiKey::SyncGroup,
        ApiKey::Heartbeat => fb::ApiKey::Heartbeat,
        ApiKey::LeaveGroup => fb::ApiKey::LeaveGroup,
        ApiKey::OffsetCommit => fb::ApiKey::OffsetCommit,
        ApiKey::OffsetFetch => fb::ApiKey::OffsetFetch,
        ApiKey::ListGroups => fb::ApiKey::ListGroups,
        ApiKey::DescribeGroups => fb::ApiKey::DescribeGroups,
        ApiKey::DeleteGroups => fb::ApiKey::DeleteGroups,
    }
}

fn api_from_wire(a: fb::ApiKey) -> Option<ApiKey> {
    Some(match a {
        fb::ApiKey::ApiVersions => ApiKey::ApiVersions,
        fb::ApiKey::CreateTopic => ApiKey::CreateTopic,
        fb::ApiKey::DeleteTopic => ApiKey::DeleteTopic,
        fb::ApiKey::Metadata => ApiKey::Metadata,
        fb::ApiKey::Produce => ApiKey::Produce,
        fb::ApiKey::Fetch => ApiKey::Fetch,
        fb::ApiKey::ListOffsets => ApiKey::ListOffsets,
        fb::ApiKey::DeleteRecords => ApiKey::DeleteRecords,
        fb::ApiKey::AlterTopicConfig => ApiKey::AlterTopicConfig,
        fb::ApiKey::InitProducerId => ApiKey::InitProducerId,
        fb::ApiKey::FindCoordinator => ApiKey::FindCoordinator,
        fb::ApiKey::JoinGroup => ApiKey::JoinGroup,
        fb::ApiKey::SyncGroup => ApiKey::SyncGroup,
        fb::ApiKey::Heartbeat => ApiKey::Heartbeat,
        fb::ApiKey::LeaveGroup => ApiKey::LeaveGroup,
        fb::ApiKey::OffsetCommit => ApiKey::OffsetCommit,
        fb::ApiKey::OffsetFetch => ApiKey::OffsetFetch,
        fb::ApiKey::ListGroups => ApiKey::ListGroups,
        fb::ApiKey::DescribeGroups => ApiKey::DescribeGroups,
        fb::ApiKey::DeleteGroups => ApiKey::DeleteGroups,
        _ => return None,
    })
}

/// Maps an optional FlatBuffers vector of tables through `f`.
fn map_vec<'a, T: flatbuffers::Follow<'a> + 'a, U>(
    v: Option<Vector<'a, ForwardsUOffset<T>>>,
    mut f: impl FnMut(T::Inner) -> R<U>,
) -> R<Vec<U>> {
    match v {
        None => Ok(Vec::new()),
        Some(v) => {
            let mut out = Vec::with_capacity(v.len());
            for item in v.iter() {
                out.push(f(item)?);
            }
            Ok(out)
        }
    }
}

fn configs_from_wire<'a>(
    v: Option<Vector<'a, ForwardsUOffset<fb::ConfigEntry<'a>>>>,
) -> R<Vec<ConfigEntry>> {
    map_vec(v, |c| {
        Ok(ConfigEntry {
            key: c.key().to_string(),
            value: c.value().to_string(),
        })
    })
}

fn configs_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    configs: &[ConfigEntry],
) -> Option<WIPOffset<Vector<'a, ForwardsUOffset<fb::ConfigEntry<'a>>>>> {
    if configs.is_empty() {
        return None;
    }
    let items: Vec<_> = configs
        .iter()
        .map(|c| {
            let key = Some(fbb.create_string(&c.key));
            let value = Some(fbb.create_string(&c.value));
            fb::ConfigEntry::create(fbb, &fb::ConfigEntryArgs { key, value })
        })
        .collect();
    Some(fbb.create_vector(&items))
}

fn bytes_of(frame: &Bytes, v: Option<Vector<'_, u8>>) -> Bytes {
    match v {
        Some(v) if !v.is_empty() => frame.slice_ref(v.bytes()),
        _ => Bytes::new(),
    }
}

/// A leader epoch: -1 (the schema default) means unknown; other negatives
/// are errors.
fn leader_epoch_from_wire(v: i32, ctx: &str) -> R<Option<i32>> {
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v)),
        v => Err(format!("{ctx}: leader_epoch {v} is negative")),
    }
}

fn leader_epoch_to_wire(v: Option<i32>) -> i32 {
    v.unwrap_or(-1)
}

/// A string field whose Rust type is `String`: absent when empty (decodes
/// back to empty).
fn str_to_wire<'a>(fbb: &mut FlatBufferBuilder<'a>, s: &str) -> Option<WIPOffset<&'a str>> {
    if s.is_empty() {
        None
    } else {
        Some(fbb.create_string(s))
    }
}

/// A string field whose Rust type is `Option<String>`: `Some("")` stays
/// present (and empty).
fn opt_str_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    s: Option<&str>,
) -> Option<WIPOffset<&'a str>> {
    s.map(|s| fbb.create_string(s))
}

fn opt_string(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

fn string_or_empty(s: Option<&str>) -> String {
    s.unwrap_or_default().to_string()
}

/// Opaque bytes (group metadata, assignments): absent when empty.
fn bytes_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    b: &Bytes,
) -> Option<WIPOffset<Vector<'a, u8>>> {
    if b.is_empty() {
        None
    } else {
        Some(fbb.create_vector(&b[..]))
    }
}

/// A list of strings: absent when empty.
fn strings_to_wire<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    v: &[String],
) -> Option<WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>>> {
    if v.is_empty() {
        return None;
    }
    let items: Vec<_> = v.iter().map(|s| fbb.create_string(s)).collect();
    Some(fbb.create_vector(&items))
}

fn strings_from_wire(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

mod group_request;
mod group_response;
mod request;
mod response;

pub use request::{decode_request, encode_request};
pub use response::{decode_response, encode_response, encode_response_parts};

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod tests;
