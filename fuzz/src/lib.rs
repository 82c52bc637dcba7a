//! The checks behind Corelog's fuzz targets, shared with the corpus replay
//! test (`tests/fuzz_corpus.rs` includes this file with `#[path]`, so the
//! checked-in corpus runs through exactly these functions in CI on stable).
//!
//! Owns: one entry point per target ([`frame_decode`], [`batch_parse`],
//! [`response_decode`]), each calling what the broker or the client calls
//! on untrusted bytes, with the limits they use, and asserting invariants
//! beyond "no panic":
//! - a request that decodes re-encodes and decodes to the same value, and
//!   its batches are slices of the frame (no copy);
//! - a request that does not decode gets an error response that itself
//!   encodes and decodes to the same value;
//! - a batch that validates has a good CRC and yields exactly
//!   `record_count` records numbered 0, 1, 2, ...; stamping base offset and
//!   leader epoch keeps it valid;
//! - `records()` never yields more than `record_count` records, stops after
//!   its first error, and hands out only slices of its input;
//! - `batches()` yields whole batches back to back (lengths add up to its
//!   position) and stops after an error;
//! - a response that decodes re-encodes and decodes to the same value.
//!
//! Invariant: every function here terminates in time linear in its input
//! and panics only when a Corelog invariant is broken (a finding).

use bytes::Bytes;
use corelog::config::Limits;
use corelog::protocol::batch::{
    self, records, set_base_offset, set_leader_epoch, validate, verify_crc, BatchError,
    BatchHeader, HEADER_BYTES,
};
use corelog::protocol::codec::{
    decode_request, decode_response, encode_request, encode_response, DecodeLimits,
};
use corelog::protocol::frame::{check_length, FrameError, LENGTH_PREFIX_BYTES};
use corelog::protocol::messages::{RequestBody, Response, ResponseBody};
use corelog::protocol::ErrorCode;

/// What [`frame_decode`] saw in its input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FrameSummary {
    /// Frames that decoded to a request (stream pass).
    pub requests: usize,
    /// Frames that did not decode and were answered with an error.
    pub rejected: usize,
    /// Zero-length frames.
    pub empty: usize,
    /// The stream ended with a frame above `max_frame_bytes` (closed).
    pub too_large: bool,
    /// The stream ended inside a frame.
    pub truncated: bool,
    /// Batches in decoded produce requests that passed `validate`.
    pub valid_batches: usize,
}

/// What [`batch_parse`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// The input (after the mode byte and fix-ups) passed `validate`.
    pub valid: bool,
    /// Whole batches `batches()` yielded over the input.
    pub batches: usize,
    /// Records `records()` yielded without error.
    pub records: usize,
}

/// Mode bit of [`batch_parse`]'s first byte: set `batchLength` to match the
/// input's length (Kafka's: length - 12, big-endian) and recompute the CRC, so the fuzzer reaches record
/// parsing instead of stopping at the CRC.
pub const BATCH_FIX_CRC: u8 = 1;

/// A request frame stream, as `server::connection::read_loop` sees it: each
/// frame's length prefix is checked against the default `max_frame_bytes`,
/// then the payload is decoded with the server's verifier limits
/// (`DecodeLimits::for_requests`), answered, and produce batches go through
/// the handler's size check and `batch::validate` as `Partition::append`
/// does. Then the whole input after the first prefix is decoded once more
/// as a single frame, so mutations that change the payload's length still
/// reach the decoder.
pub fn frame_decode(data: &[u8]) -> FrameSummary {
    let limits = Limits::default();
    let decode = DecodeLimits::for_requests(&limits);
    let mut out = FrameSummary::default();
    let mut rest = data;
    // At most one frame per 4 input bytes: bounded by input.
    while rest.len() >= LENGTH_PREFIX_BYTES {
        let prefix = [rest[0], rest[1], rest[2], rest[3]];
        rest = &rest[LENGTH_PREFIX_BYTES..];
        match check_length(prefix, limits.max_frame_bytes) {
            Err(FrameError::Empty) => {
                out.empty += 1;
                answer_error(0, ErrorCode::InvalidRequest, "empty frame (length 0)");
            }
            Err(FrameError::TooLarge {
                declared_bytes,
                max_frame_bytes,
            }) => {
                assert!(declared_bytes > u64::from(max_frame_bytes));
                answer_error(0, ErrorCode::MessageTooLarge, "frame too large");
                out.too_large = true;
                break;
            }
            Ok(len) => {
                assert!(len > 0 && len <= limits.max_frame_bytes as usize);
                if rest.len() < len {
                    out.truncated = true;
                    break;
                }
                let frame = Bytes::copy_from_slice(&rest[..len]);
                rest = &rest[len..];
                check_request(&frame, &decode, &limits, &mut out);
            }
        }
    }
    if data.len() > LENGTH_PREFIX_BYTES {
        let whole = Bytes::copy_from_slice(&data[LENGTH_PREFIX_BYTES..]);
        check_request(&whole, &decode, &limits, &mut FrameSummary::default());
    }
    out
}

/// The response the server encodes for a refused frame, and what a client
/// decodes from it.
fn answer_error(correlation_id: u32, code: ErrorCode, message: &str) {
    let resp = Response::error(correlation_id, code, message);
    let back = decode_response(
        &Bytes::from(encode_response(&resp)),
        &DecodeLimits::default(),
    )
    .expect("an error response the broker encodes must decode");
    assert_eq!(back, resp, "error response round trip");
}

fn check_request(frame: &Bytes, decode: &DecodeLimits, limits: &Limits, out: &mut FrameSummary) {
    let req = match decode_request(frame, decode) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                matches!(
                    e.error.code,
                    ErrorCode::InvalidRequest | ErrorCode::UnsupportedVersion
                ),
                "decode error with code {:?}",
                e.error.code
            );
            out.rejected += 1;
            let resp = Response {
                correlation_id: e.correlation_id,
                error: Some(e.error),
                body: None,
            };
            let back = decode_response(
                &Bytes::from(encode_response(&resp)),
                &DecodeLimits::default(),
            )
            .expect("the error response for a bad frame must decode");
            assert_eq!(back, resp, "error response round trip");
            return;
        }
    };
    out.requests += 1;
    let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let re = encode_request(&req);
    let back = decode_request(&re, decode).expect("a re-encoded request must decode");
    assert_eq!(back, req, "request round trip");
    if let RequestBody::Produce(p) = &req.body {
        for part in p.topics.iter().flat_map(|t| t.partitions.iter()) {
            if !part.batch.is_empty() {
                let at = part.batch.as_ptr() as usize;
                assert!(
                    frame_range.contains(&at) && at + part.batch.len() <= frame_range.end,
                    "a produce batch is not a slice of its frame"
                );
            }
            // handlers::produce refuses oversized batches before the owner
            // shard validates the rest.
            if part.batch.len() > limits.max_batch_bytes as usize {
                continue;
            }
            if check_batch(&part.batch).valid {
                out.valid_batches += 1;
            }
        }
    }
}

/// One record batch as `Partition::append` (validate, stamp) and a consumer
/// (`batches`, `verify_crc`, `records`) see it. The first byte is a mode
/// ([`BATCH_FIX_CRC`]); the rest is the batch.
pub fn batch_parse(data: &[u8]) -> BatchSummary {
    let Some((&mode, body)) = data.split_first() else {
        return BatchSummary::default();
    };
    let mut buf = body.to_vec();
    if mode & BATCH_FIX_CRC != 0 && buf.len() >= HEADER_BYTES {
        // Kafka's batchLength: the bytes after the field (big-endian).
        let len = i32::try_from(buf.len() - batch::LENGTH_OVERHEAD_BYTES).unwrap_or(i32::MAX);
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        batch::set_crc(&mut buf);
    }
    let mut out = check_batch(&buf);
    out.batches = check_batches(&buf);
    out
}

/// Checks one buffer as a single batch.
fn check_batch(b: &[u8]) -> BatchSummary {
    let mut out = BatchSummary::default();
    let parsed = BatchHeader::parse(b);
    let crc = verify_crc(b);
    let valid = validate(b);
    if let Ok(h) = &crc {
        assert_eq!(
            parsed.as_ref().ok(),
            Some(h),
            "verify_crc ok but parse differs"
        );
        assert_eq!(h.total_bytes(), b.len());
    }
    if let Ok(h) = &valid {
        out.valid = true;
        assert_eq!(crc.as_ref().ok(), Some(h), "validate ok but verify_crc not");
        assert!(h.record_count >= 1);
        assert_eq!(h.last_offset_delta, h.record_count - 1);
        let mut n = 0u32;
        for r in records(b).expect("a valid batch has records") {
            let r = r.unwrap_or_else(|e| panic!("record {n} of a valid batch: {e}"));
            assert_eq!(r.offset_delta, n, "offset deltas are positions");
            n += 1;
        }
        assert_eq!(
            n, h.record_count,
            "a valid batch yields record_count records"
        );
        // The broker stamps these in place; the batch stays valid.
        let mut stamped = b.to_vec();
        let base = h.crc as u64 ^ 0x5a5a_5a5a_5a5a;
        set_base_offset(&mut stamped, base);
        set_leader_epoch(&mut stamped, h.crc);
        let s = validate(&stamped).expect("stamping keeps a batch valid");
        assert_eq!((s.base_offset, s.leader_epoch), (base, h.crc));
        assert_eq!(s.last_offset(), base + u64::from(h.last_offset_delta));
        assert_eq!(s.next_offset(), s.last_offset() + 1);
    }
    if let Ok(h) = &parsed {
        assert!(b.len() >= HEADER_BYTES && h.total_bytes() >= HEADER_BYTES);
        // Offsets come from the wire here (a consumer reads them from a
        // broker): computing them must not overflow.
        let _ = (h.last_offset(), h.next_offset());
        let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
        let inside = |s: &[u8]| {
            s.is_empty()
                || (range.contains(&(s.as_ptr() as usize))
                    && s.as_ptr() as usize + s.len() <= range.end)
        };
        let iter = records(b).expect("records() parses what parse() parsed");
        let mut ok = 0u64;
        let mut items = 0u64;
        let mut failed = false;
        // Bounded: every Ok record consumes at least one byte.
        for r in iter {
            items += 1;
            assert!(!failed, "records() yielded after an error");
            match r {
                Ok(r) => {
                    ok += 1;
                    assert!(r.key.is_none_or(inside) && r.value.is_none_or(inside));
                    for (k, v) in &r.headers {
                        assert!(inside(k) && v.is_none_or(inside));
                    }
                }
                Err(e) => {
                    assert!(matches!(e, BatchError::MalformedRecord { .. }), "{e}");
                    failed = true;
                }
            }
            assert!(
                items <= u64::from(h.record_count) + 1,
                "records() yielded more than record_count + one error"
            );
        }
        assert!(
            ok <= u64::from(h.record_count),
            "more records than record_count"
        );
        out.records = ok as usize;
    }
    out
}

/// Walks `buf` as concatenated batches (a fetch response's records or a
/// segment read); returns the whole batches yielded.
fn check_batches(buf: &[u8]) -> usize {
    let mut it = batch::batches(buf);
    let mut consumed = 0usize;
    let mut yielded = 0usize;
    let mut failed = false;
    while let Some(item) = it.next() {
        assert!(!failed, "batches() yielded after an error");
        match item {
            Ok((h, raw)) => {
                assert_eq!(raw.len(), h.total_bytes());
                assert!(raw.len() >= HEADER_BYTES);
                assert_eq!(
                    raw.as_ptr() as usize,
                    buf.as_ptr() as usize + consumed,
                    "batches are back to back"
                );
                consumed += raw.len();
                assert_eq!(it.position(), consumed);
                yielded += 1;
                // What a consumer does with each batch.
                if verify_crc(raw).is_ok() {
                    let _ = check_batch(raw);
                }
            }
            Err(_) => failed = true,
        }
        assert!(yielded <= buf.len() / HEADER_BYTES);
    }
    assert!(consumed <= buf.len());
    yielded
}

/// A response payload as the client sees it: decoded with the client's
/// limits (`DecodeLimits::default()`), and for a fetch, each partition's
/// records walked as the consumer walks them.
pub fn response_decode(data: &[u8]) -> Option<Response> {
    let frame = Bytes::copy_from_slice(data);
    let resp = decode_response(&frame, &DecodeLimits::default()).ok()?;
    let back = decode_response(
        &Bytes::from(encode_response(&resp)),
        &DecodeLimits::default(),
    )
    .expect("a re-encoded response must decode");
    assert_eq!(back, resp, "response round trip");
    if let Some(ResponseBody::Fetch(f)) = &resp.body {
        for p in f.topics.iter().flat_map(|t| t.partitions.iter()) {
            // A decoded response has one piece, a slice of the frame.
            let records = p.records.to_bytes();
            if !records.is_empty() {
                assert_eq!(p.records.pieces().len(), 1, "decoded records are one piece");
                let at = records.as_ptr() as usize;
                let start = frame.as_ptr() as usize;
                assert!(at >= start && at + records.len() <= start + frame.len());
            }
            check_batches(&records);
        }
    }
    Some(resp)
}
