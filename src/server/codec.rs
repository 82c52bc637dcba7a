//! What a connection needs from a wire protocol: [`Codec`] (framing,
//! decode, encode, the answers to framing errors) and [`Handler`] (what to do
//! with a decoded request). The FlatBuffers protocol implements both
//! ([`FlatBuffers`] here, `handlers::FlatBuffersHandler`); a Kafka listener
//! implements them again (4-byte big-endian size, request header with api
//! key/version/correlation id, responses in order) and reuses
//! `connection::serve` unchanged.
//!
//! Invariants: `decode` never panics, whatever the bytes; a request that
//! cannot be decoded is answered (`Err(response)`), not dropped; `encode`
//! returns the payload as buffers to be written in order, never joined.
//!
//! Must not know: shards, partitions (a handler reaches them through the
//! partition service).

use bytes::Bytes;

use crate::protocol::codec::{self, DecodeLimits};
use crate::protocol::frame::ByteOrder;
use crate::protocol::messages::{Request, Response};
use crate::protocol::ErrorCode;
use crate::shard::ops::LocalBoxFuture;

/// Framing, decoding and encoding of one wire protocol.
pub trait Codec: 'static {
    type Request;
    type Response;

    /// Byte order of the 4-byte length prefix of every frame.
    fn byte_order(&self) -> ByteOrder;

    /// Decodes one frame's payload; an undecodable one yields the response
    /// to send instead (the connection continues).
    fn decode(&self, frame: Bytes) -> Result<Self::Request, Self::Response>;

    /// The payload of one response frame, as buffers written in order.
    fn encode(&self, resp: &Self::Response) -> Vec<Bytes>;

    /// What to answer before closing on a frame above `max_frame_bytes`
    /// (None: close without answering).
    fn frame_too_large(&self, declared_bytes: u64, max_frame_bytes: u32) -> Option<Self::Response>;

    /// What to answer a zero-length frame (None: close the connection).
    fn empty_frame(&self) -> Option<Self::Response>;

    /// Whether responses must leave in request order (Kafka) rather than as
    /// they complete (FlatBuffers: correlation ids, pipelined).
    fn responses_in_order(&self) -> bool;
}

/// What a front end does with a decoded request.
pub trait Handler<Req, Resp>: 'static {
    /// Does the part of `req` that must happen before the connection's next
    /// frame is read (a produce's appends, so one connection's appends keep
    /// arrival order) and returns the rest, which completes the response.
    /// `peer` is the client's address (for group membership: client_host).
    fn start(&self, req: Req, peer: &str) -> LocalBoxFuture<'_, LocalBoxFuture<'static, Resp>>;
}

/// Corelog's FlatBuffers protocol: little-endian length, one verified
/// FlatBuffer per frame, pipelined responses matched by correlation id.
pub struct FlatBuffers {
    pub limits: DecodeLimits,
}

impl Codec for FlatBuffers {
    type Request = Request;
    type Response = Response;

    fn byte_order(&self) -> ByteOrder {
        ByteOrder::Little
    }

    fn decode(&self, frame: Bytes) -> Result<Request, Response> {
        codec::decode_request(&frame, &self.limits).map_err(|e| Response {
            correlation_id: e.correlation_id,
            error: Some(e.error),
            body: None,
        })
    }

    fn encode(&self, resp: &Response) -> Vec<Bytes> {
        codec::encode_response_parts(resp)
    }

    fn frame_too_large(&self, declared_bytes: u64, max_frame_bytes: u32) -> Option<Response> {
        Some(Response::error(
            0,
            ErrorCode::MessageTooLarge,
            format!(
                "request frame of {declared_bytes} bytes exceeds max_frame_bytes ({max_frame_bytes}); closing the connection"
            ),
        ))
    }

    fn empty_frame(&self) -> Option<Response> {
        // Four zero bytes: still in sync with the framing.
        Some(Response::error(
            0,
            ErrorCode::InvalidRequest,
            "empty frame (length 0)",
        ))
    }

    fn responses_in_order(&self) -> bool {
        false
    }
}
