//! Typed messages <-> FlatBuffers. The only place that touches generated code.
//!
//! Invariant: `decode_request` / `decode_response` verify the buffer once with
//! [`DecodeLimits`] and then copy out only names and numbers; record batches
//! become `Bytes` slices of the input frame (no copy).
//! TODO(helper: protocol+client): implement.

use bytes::Bytes;

use super::error::WireError;
use super::ids::CorrelationId;
use super::messages::{Request, Response};

/// Verifier limits applied at ingress.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_tables: usize,
    pub max_depth: usize,
    pub max_apparent_size_bytes: usize,
}

/// A request that could not be decoded. `correlation_id` is set when the
/// envelope verified far enough to read it (0 otherwise).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    pub correlation_id: CorrelationId,
    pub error: WireError,
}

pub fn decode_request(_frame: &Bytes, _limits: &DecodeLimits) -> Result<Request, DecodeError> {
    todo!()
}

pub fn encode_request(_req: &Request) -> Vec<u8> {
    todo!()
}

pub fn decode_response(_frame: &Bytes, _limits: &DecodeLimits) -> Result<Response, DecodeError> {
    todo!()
}

pub fn encode_response(_resp: &Response) -> Vec<u8> {
    todo!()
}
