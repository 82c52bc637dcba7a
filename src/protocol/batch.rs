//! The record batch format (docs/record-batch.md): the unit that is the same
//! bytes on the wire, on disk and in replication.
//!
//! Layout, little-endian, header of [`HEADER_BYTES`] = 61 bytes:
//!
//! | off | size | field                                          | in CRC |
//! |-----|------|------------------------------------------------|--------|
//! | 0   | 8    | base_offset (u64, assigned by the broker)      | no     |
//! | 8   | 4    | batch_length (u32, whole batch incl. header)   | no     |
//! | 12  | 4    | leader_epoch (u32, stamped by the broker)      | no     |
//! | 16  | 1    | magic (= 1)                                    | no     |
//! | 17  | 4    | crc32c of bytes [21, batch_length)             | no     |
//! | 21  | 2    | attributes (bits 0-2: compression codec)       | yes    |
//! | 23  | 4    | last_offset_delta (u32 = record_count - 1)     | yes    |
//! | 27  | 8    | first_timestamp_ms (i64)                       | yes    |
//! | 35  | 8    | max_timestamp_ms (i64)                         | yes    |
//! | 43  | 8    | producer_id (i64, -1 = none)                   | yes    |
//! | 51  | 2    | producer_epoch (i16, -1 = none)                | yes    |
//! | 53  | 4    | base_sequence (i32, -1 = none)                 | yes    |
//! | 57  | 4    | record_count (u32, >= 1)                       | yes    |
//! | 61  | ...  | records                                        | yes    |
//!
//! Each record: varint length (of the rest of the record), i8 attributes,
//! zigzag varlong timestamp_delta (from first_timestamp), zigzag varint
//! offset_delta, zigzag varint key length (-1 = null) + key, zigzag varint
//! value length (-1 = null) + value, zigzag varint header count, then per
//! header: zigzag varint key length + UTF-8 key, zigzag varint value length
//! (-1 = null) + value. (Kafka's record encoding, so a later Kafka listener can
//! reuse it.)
//!
//! Invariants: base_offset and leader_epoch sit outside the CRC so the broker
//! can stamp them in place without re-encoding; `validate` checks length,
//! magic, CRC, record framing and `record_count == last_offset_delta + 1`.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::compression::{self, Compression, DecompressError};

/// Size of the fixed batch header, in bytes.
pub const HEADER_BYTES: usize = 61;
/// The only batch format version this build reads and writes.
pub const MAGIC: u8 = 1;
/// Where the CRC-covered region starts.
pub const CRC_START: usize = 21;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_FIRST_TS: usize = 27;
const OFF_MAX_TS: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

/// Mask of the compression codec bits in `attributes`.
pub const COMPRESSION_MASK: u16 = 0b111;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {HEADER_BYTES}-byte header")]
    ShortHeader { len: usize },
    #[error("batch_length {declared} is invalid for {available} available bytes")]
    BadLength { declared: u32, available: usize },
    #[error("unknown batch magic {0} (expected {MAGIC})")]
    BadMagic(u8),
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record_count {record_count} disagrees with last_offset_delta {last_offset_delta}")]
    BadRecordCount {
        record_count: u32,
        last_offset_delta: u32,
    },
    #[error("compression codec {0} is not supported")]
    UnsupportedCompression(u16),
    /// The records section does not decompress with the batch's codec.
    #[error("{0}")]
    Decompress(DecompressError),
    /// The records section decompresses past `max_decompressed_batch_bytes`
    /// (a decompression bomb or a limit set too low): MessageTooLarge.
    #[error("{0}")]
    DecompressedTooLarge(DecompressError),
    #[error("record {index}: {reason}")]
    MalformedRecord { index: u32, reason: &'static str },
}

/// The fixed header of one batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub leader_epoch: u32,
    pub magic: u8,
    pub crc: u32,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl BatchHeader {
    /// Decodes the header at the start of `buf`. Checks only that the header
    /// is complete, the magic is known and `batch_length` is at least a header;
    /// `batch_length` may exceed `buf` (a partial read). No CRC check.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::ShortHeader { len: buf.len() });
        }
        let h = BatchHeader {
            base_offset: u64_at(buf, OFF_BASE_OFFSET),
            batch_length: u32_at(buf, OFF_LENGTH),
            leader_epoch: u32_at(buf, OFF_LEADER_EPOCH),
            magic: buf[OFF_MAGIC],
            crc: u32_at(buf, OFF_CRC),
            attributes: u16_at(buf, OFF_ATTRIBUTES),
            last_offset_delta: u32_at(buf, OFF_LAST_OFFSET_DELTA),
            first_timestamp_ms: u64_at(buf, OFF_FIRST_TS) as i64,
            max_timestamp_ms: u64_at(buf, OFF_MAX_TS) as i64,
            producer_id: u64_at(buf, OFF_PRODUCER_ID) as i64,
            producer_epoch: u16_at(buf, OFF_PRODUCER_EPOCH) as i16,
            base_sequence: u32_at(buf, OFF_BASE_SEQUENCE) as i32,
            record_count: u32_at(buf, OFF_RECORD_COUNT),
        };
        if h.magic != MAGIC {
            return Err(BatchError::BadMagic(h.magic));
        }
        if (h.batch_length as usize) < HEADER_BYTES {
            return Err(BatchError::BadLength {
                declared: h.batch_length,
                available: buf.len(),
            });
        }
        Ok(h)
    }

    /// Offset of the last record in the batch. Saturates at `u64::MAX`: the
    /// broker never assigns offsets near it, but `base_offset` sits outside
    /// the CRC and a header read from a peer or a damaged file may say
    /// anything (found by the `frame_decode` fuzz target).
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.last_offset_delta))
    }

    /// Offset right after the batch (saturating, like `last_offset`).
    pub fn next_offset(&self) -> u64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> u16 {
        self.attributes & COMPRESSION_MASK
    }

    /// The batch's codec; `UnsupportedCompression` for codes 5-7.
    pub fn codec(&self) -> Result<Compression, BatchError> {
        Compression::from_code(self.compression())
            .ok_or(BatchError::UnsupportedCompression(self.compression()))
    }
}

impl From<DecompressError> for BatchError {
    fn from(e: DecompressError) -> Self {
        match e {
            DecompressError::TooLarge { .. } => BatchError::DecompressedTooLarge(e),
            DecompressError::Corrupt { .. } => BatchError::Decompress(e),
        }
    }
}

/// CRC32C of the CRC-covered region of a complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START.min(batch.len())..])
}

/// Checks the CRC of a complete batch (`batch.len() == batch_length`).
pub fn verify_crc(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.batch_length as usize != batch.len() {
        return Err(BatchError::BadLength {
            declared: h.batch_length,
            available: batch.len(),
        });
    }
    let computed = compute_crc(batch);
    if computed != h.crc {
        return Err(BatchError::CrcMismatch {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Full validation of one complete batch as received from a producer, with
/// the default decompression limit: see [`validate_bounded`].
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_bounded(batch, compression::DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES)
}

/// Full validation of one complete batch: length, magic, CRC, codec, record
/// count and the framing of every record. A compressed batch's records are
/// decompressed (holding at most `max_decompressed_batch_bytes`) and checked
/// like plain ones; the batch itself is never rewritten.
pub fn validate_bounded(
    batch: &[u8],
    max_decompressed_batch_bytes: usize,
) -> Result<BatchHeader, BatchError> {
    let h = verify_crc(batch)?;
    h.codec()?;
    if h.record_count == 0 || h.record_count.checked_sub(1) != Some(h.last_offset_delta) {
        return Err(BatchError::BadRecordCount {
            record_count: h.record_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    let body = records_body(batch, &h, max_decompressed_batch_bytes)?;
    let mut iter = RecordIter::new(&body, h.record_count);
    let deltas = std::iter::from_fn(|| iter.next_offset_delta());
    for (n, delta) in (0u32..).zip(deltas) {
        if delta? != n {
            return Err(BatchError::MalformedRecord {
                index: n,
                reason: "offset_delta is not the record's position",
            });
        }
    }
    Ok(h)
}

/// What the broker writes into a batch's header in place, outside the CRC:
/// its base offset and the leader epoch it was appended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub base_offset: u64,
    pub leader_epoch: u32,
}

/// The one stamping step: writes `stamp` into the header of `batch` (outside
/// the CRC, so the batch stays valid and its records are never re-encoded).
pub fn stamp(batch: &mut [u8], stamp: Stamp) {
    set_base_offset(batch, stamp.base_offset);
    set_leader_epoch(batch, stamp.leader_epoch);
}

/// Whether the bytes at a batch boundary of a stored log are a batch of a
/// format this build does not read (another magic), as opposed to garbage
/// (a torn or damaged write). `bytes` starts at the boundary and runs to the
/// end of the file; `at_segment_start` is true at a segment's position 0.
///
/// Another format is recognised by a magic byte that is neither ours nor 0
/// (zero padding) where the whole segment starts (a segment is written by
/// one format), or elsewhere when the declared length fits in the file and
/// the CRC over its [`CRC_START`].. range verifies: random bytes do not do
/// that. Returns the foreign magic.
pub fn foreign_format(bytes: &[u8], at_segment_start: bool) -> Option<u8> {
    let magic = *bytes.get(OFF_MAGIC)?;
    if magic == MAGIC || magic == 0 || bytes.len() < HEADER_BYTES {
        return None;
    }
    if at_segment_start {
        return Some(magic);
    }
    let len = u32_at(bytes, OFF_LENGTH) as usize;
    if len < HEADER_BYTES || len > bytes.len() {
        return None;
    }
    (compute_crc(&bytes[..len]) == u32_at(bytes, OFF_CRC)).then_some(magic)
}

/// The `batch_length` a header declares (`None` if `head` is too short to
/// hold it); not validated.
pub fn declared_length(head: &[u8]) -> Option<u32> {
    (head.len() >= OFF_LENGTH + 4).then(|| u32_at(head, OFF_LENGTH))
}

/// Stamps the broker-assigned base offset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
}

/// Stamps the leader epoch (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: u32) {
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_le_bytes());
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: u32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Iterates the records of a batch body (the bytes after the header).
pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u32,
    index: u32,
}

impl<'a> RecordIter<'a> {
    pub fn new(body: &'a [u8], record_count: u32) -> Self {
        Self {
            buf: body,
            pos: 0,
            remaining: record_count,
            index: 0,
        }
    }
}

/// Records of a complete, already validated, uncompressed batch. A
/// compressed batch is `UnsupportedCompression` here: read it through
/// [`records_body`] (which decompresses within a bound).
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.compression() != 0 {
        return Err(BatchError::UnsupportedCompression(h.compression()));
    }
    let end = (h.batch_length as usize).min(batch.len());
    Ok(RecordIter::new(&batch[HEADER_BYTES..end], h.record_count))
}

/// The records section of a complete batch with header `h`, decompressed
/// if the batch is compressed (holding at most `max_decompressed_bytes`);
/// borrowed as it is otherwise. Iterate it with
/// `RecordIter::new(&body, h.record_count)`.
pub fn records_body<'a>(
    batch: &'a [u8],
    h: &BatchHeader,
    max_decompressed_bytes: usize,
) -> Result<Cow<'a, [u8]>, BatchError> {
    let end = (h.batch_length as usize).min(batch.len());
    let body = batch.get(HEADER_BYTES..end).unwrap_or_default();
    match h.codec()? {
        Compression::None => Ok(Cow::Borrowed(body)),
        codec => Ok(Cow::Owned(compression::decompress(
            codec,
            body,
            max_decompressed_bytes,
        )?)),
    }
}

fn read_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let u = read_uvarint(buf, pos)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    i32::try_from(read_varlong(buf, pos)?).ok()
}

fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize, len: i32) -> Option<Option<&'a [u8]>> {
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(Some(s))
}

/// The fixed fields of one record, as `RecordIter::walk` reads them.
struct RecordFields<'a> {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: u32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

impl<'a> RecordIter<'a> {
    /// Reads the next record's framing and fields, handing each header to
    /// `on_header` (so validation can check headers without allocating).
    fn walk(
        &mut self,
        mut on_header: impl FnMut(usize, &'a [u8], Option<&'a [u8]>),
    ) -> Result<RecordFields<'a>, &'static str> {
        let buf = self.buf;
        let mut pos = self.pos;
        let len = read_varint(buf, &mut pos).ok_or("bad length varint")?;
        let len = usize::try_from(len).map_err(|_| "negative record length")?;
        let end = pos.checked_add(len).ok_or("record length overflows")?;
        let rec = buf.get(..end).ok_or("record runs past the batch")?;
        let attributes = *rec.get(pos).ok_or("record too short")? as i8;
        pos += 1;
        let timestamp_delta = read_varlong(rec, &mut pos).ok_or("bad timestamp delta")?;
        let offset_delta = read_varint(rec, &mut pos).ok_or("bad offset delta")?;
        let offset_delta = u32::try_from(offset_delta).map_err(|_| "negative offset delta")?;
        let klen = read_varint(rec, &mut pos).ok_or("bad key length")?;
        let key = read_bytes(rec, &mut pos, klen).ok_or("bad key")?;
        let vlen = read_varint(rec, &mut pos).ok_or("bad value length")?;
        let value = read_bytes(rec, &mut pos, vlen).ok_or("bad value")?;
        let hcount = read_varint(rec, &mut pos).ok_or("bad header count")?;
        let hcount = usize::try_from(hcount).map_err(|_| "negative header count")?;
        // Every header takes at least 2 bytes: bound the count by input.
        if hcount > (end - pos) / 2 {
            return Err("header count exceeds record size");
        }
        for _ in 0..hcount {
            let hk = read_varint(rec, &mut pos).ok_or("bad header key length")?;
            if hk < 0 {
                return Err("null header key");
            }
            let k = read_bytes(rec, &mut pos, hk)
                .ok_or("bad header key")?
                .unwrap_or_default();
            let hv = read_varint(rec, &mut pos).ok_or("bad header value length")?;
            let v = read_bytes(rec, &mut pos, hv).ok_or("bad header value")?;
            on_header(hcount, k, v);
        }
        if pos != end {
            return Err("record length disagrees with its fields");
        }
        self.pos = end;
        Ok(RecordFields {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
        })
    }

    /// Advances over one record like `next`, returning only its offset delta:
    /// checks the same framing but allocates nothing (used by `validate`).
    fn next_offset_delta(&mut self) -> Option<Result<u32, BatchError>> {
        self.step(|it| it.walk(|_, _, _| ()).map(|f| f.offset_delta))
    }

    fn step<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, &'static str>,
    ) -> Option<Result<T, BatchError>> {
        if self.remaining == 0 {
            if self.pos != self.buf.len() {
                self.pos = self.buf.len();
                return Some(Err(BatchError::MalformedRecord {
                    index: self.index,
                    reason: "bytes left after the last record",
                }));
            }
            return None;
        }
        match read(self) {
            Ok(r) => {
                self.remaining -= 1;
                self.index += 1;
                Some(Ok(r))
            }
            Err(reason) => {
                let index = self.index;
                self.remaining = 0;
                self.pos = self.buf.len();
                Some(Err(BatchError::MalformedRecord { index, reason }))
            }
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(|it| {
            let mut headers = Vec::new();
            let f = it.walk(|count, k, v| {
                headers.reserve_exact(count.saturating_sub(headers.len()));
                headers.push((k, v));
            })?;
            Ok(Record {
                attributes: f.attributes,
                timestamp_delta: f.timestamp_delta,
                offset_delta: f.offset_delta,
                key: f.key,
                value: f.value,
                headers,
            })
        })
    }
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn varlong_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

fn put_opt_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

fn opt_bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// Builds one batch record by record (the producer side).
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    first_timestamp_ms: Option<i64>,
    max_timestamp_ms: i64,
    count: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(HEADER_BYTES));
        buf.resize(HEADER_BYTES, 0);
        Self {
            buf,
            first_timestamp_ms: None,
            max_timestamp_ms: i64::MIN,
            count: 0,
        }
    }

    /// Bytes the batch would have if finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes `push` would add for this record.
    pub fn record_size_bytes(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        let body = self.record_body_len(timestamp_ms, key, value, headers);
        varlong_len(body as i64) + body
    }

    fn record_body_len(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        let ts_delta = timestamp_ms.wrapping_sub(self.first_timestamp_ms.unwrap_or(timestamp_ms));
        1 + varlong_len(ts_delta)
            + varlong_len(self.count as i64)
            + opt_bytes_len(key)
            + opt_bytes_len(value)
            + varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| opt_bytes_len(Some(k)) + opt_bytes_len(*v))
                .sum::<usize>()
    }

    pub fn record_count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record; returns its offset delta inside the batch.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> u32 {
        let first = *self.first_timestamp_ms.get_or_insert(timestamp_ms);
        let body = self.record_body_len(timestamp_ms, key, value, headers);
        let delta = self.count;
        put_varlong(&mut self.buf, body as i64);
        let before = self.buf.len();
        self.buf.put_u8(0);
        put_varlong(&mut self.buf, timestamp_ms.wrapping_sub(first));
        put_varlong(&mut self.buf, delta as i64);
        put_opt_bytes(&mut self.buf, key);
        put_opt_bytes(&mut self.buf, value);
        put_varlong(&mut self.buf, headers.len() as i64);
        for (k, v) in headers {
            put_opt_bytes(&mut self.buf, Some(k));
            put_opt_bytes(&mut self.buf, *v);
        }
        debug_assert_eq!(self.buf.len() - before, body);
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        self.count += 1;
        delta
    }

    /// Seals the batch with its records section compressed by `codec`
    /// (attribute bits 0-2 set to its code; the header is otherwise what
    /// `finish` writes). `Compression::None` is `finish`.
    pub fn finish_compressed(self, codec: Compression) -> Bytes {
        if codec == Compression::None {
            return self.finish();
        }
        let plain = self.finish();
        let body = compression::compress(codec, &plain[HEADER_BYTES..]);
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + body.len());
        buf.extend_from_slice(&plain[..HEADER_BYTES]);
        buf.extend_from_slice(&body);
        let len = buf.len() as u32;
        buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        buf[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&codec.code().to_le_bytes());
        let crc = compute_crc(&buf);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        buf.freeze()
    }

    /// Seals the batch: writes the header (base offset 0, no producer id) and
    /// the CRC. Panics if no record was pushed (a caller bug, not input).
    pub fn finish(self) -> Bytes {
        assert!(self.count > 0, "BatchBuilder::finish on an empty batch");
        let mut buf = self.buf;
        let len = buf.len() as u32;
        let first = self.first_timestamp_ms.unwrap_or(0);
        let h = &mut buf[..HEADER_BYTES];
        h[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        h[OFF_MAGIC] = MAGIC;
        h[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&0u16.to_le_bytes());
        h[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(self.count - 1).to_le_bytes());
        h[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&first.to_le_bytes());
        h[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        h[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_le_bytes());
        h[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_le_bytes());
        h[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_le_bytes());
        h[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        let crc = compute_crc(&buf);
        buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        buf.freeze()
    }
}

/// Walks concatenated batches (a fetch response or a segment read). Yields
/// each complete batch with its header; stops silently at an incomplete
/// trailing batch or at zero padding (batch_length 0); yields an error for a
/// header that does not parse. CRCs are not checked here: see `verify_crc`.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub fn batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter { buf, pos: 0 }
}

impl<'a> BatchIter<'a> {
    /// Bytes consumed by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        if rest.len() < HEADER_BYTES || u32_at(rest, OFF_LENGTH) == 0 {
            return None;
        }
        match BatchHeader::parse(rest) {
            Ok(h) if (h.batch_length as usize) <= rest.len() => {
                let b = &rest[..h.batch_length as usize];
                self.pos += h.batch_length as usize;
                Some(Ok((h, b)))
            }
            Ok(_) => None,
            Err(e) => {
                self.pos = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut b = BatchBuilder::new();
        b.push(1000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(1005, None, Some(b"v2"), &[(b"h", Some(b"x"))]);
        b.push(999, Some(b""), None, &[]);
        b.finish()
    }

    #[test]
    fn round_trip() {
        let batch = sample();
        let h = validate(&batch).expect("valid");
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.first_timestamp_ms, 1000);
        assert_eq!(h.max_timestamp_ms, 1005);
        assert_eq!(h.producer_id, -1);
        let recs: Vec<_> = records(&batch)
            .expect("iter")
            .map(|r| r.expect("rec"))
            .collect();
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp_delta, 5);
        assert_eq!(recs[1].headers, vec![(&b"h"[..], Some(&b"x"[..]))]);
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].timestamp_delta, -1);
    }

    #[test]
    fn stamping_keeps_crc() {
        let mut batch = BytesMut::from(&sample()[..]);
        set_base_offset(&mut batch, 42);
        set_leader_epoch(&mut batch, 7);
        let h = validate(&batch).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.leader_epoch, 7);
        assert_eq!(h.last_offset(), 44);
    }

    #[test]
    fn rejects_corruption() {
        let batch = sample();
        for i in CRC_START..batch.len() {
            let mut b = batch.to_vec();
            b[i] ^= 0x40;
            assert!(
                matches!(validate(&b), Err(BatchError::CrcMismatch { .. })),
                "flip at {i}"
            );
        }
        assert!(validate(&batch[..batch.len() - 1]).is_err());
        assert!(validate(&batch[..10]).is_err());
        let mut b = batch.to_vec();
        b[OFF_MAGIC] = 9;
        assert_eq!(validate(&b), Err(BatchError::BadMagic(9)));
    }

    #[test]
    fn lying_record_count_is_rejected_even_with_good_crc() {
        let mut b = sample().to_vec();
        b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&4u32.to_le_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&3u32.to_le_bytes());
        let crc = compute_crc(&b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            validate(&b),
            Err(BatchError::MalformedRecord { .. })
        ));
    }

    #[test]
    fn iterates_concatenated_batches_and_stops_at_padding() {
        let a = sample();
        let b = sample();
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        all.extend_from_slice(&[0u8; 100]);
        let got: Vec<_> = batches(&all).map(|r| r.expect("ok").0).collect();
        assert_eq!(got.len(), 2);
        let partial = &all[..a.len() + 10];
        assert_eq!(batches(partial).count(), 1);
    }

    #[test]
    fn offsets_of_a_hostile_header_saturate() {
        // Regression (fuzz/regressions/frame_decode/overflow-last-offset):
        // a base_offset near u64::MAX overflowed in last_offset/next_offset.
        let mut b = BytesMut::from(&sample()[..]);
        set_base_offset(&mut b, u64::MAX - 1);
        let h = validate(&b).expect("base_offset is outside the CRC");
        assert_eq!(h.last_offset(), u64::MAX);
        assert_eq!(h.next_offset(), u64::MAX);
        assert_eq!(
            batches(&b).map(|r| r.expect("ok").0.next_offset()).last(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn builder_size_estimate_is_exact() {
        let mut b = BatchBuilder::new();
        let before = b.size_bytes();
        let est = b.record_size_bytes(5, Some(b"key"), Some(&[7u8; 300]), &[]);
        b.push(5, Some(b"key"), Some(&[7u8; 300]), &[]);
        assert_eq!(b.size_bytes() - before, est);
    }

    fn reseal(b: &mut [u8]) {
        let len = b.len() as u32;
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        let crc = compute_crc(b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }

    fn compressed(codec: Compression, records: u32, value: &[u8]) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b.push(1000 + i64::from(i), Some(b"k"), Some(value), &[]);
        }
        b.finish_compressed(codec).to_vec()
    }

    #[test]
    fn compressed_batches_validate_and_read_like_plain_ones() {
        let plain = sample();
        let want: Vec<_> = records(&plain)
            .expect("iter")
            .map(|r| r.expect("rec"))
            .collect();
        for codec in Compression::ALL {
            let mut b = BatchBuilder::new();
            b.push(1000, Some(b"k1"), Some(b"v1"), &[]);
            b.push(1005, None, Some(b"v2"), &[(b"h", Some(b"x"))]);
            b.push(999, Some(b""), None, &[]);
            let batch = b.finish_compressed(codec);
            let h = validate(&batch).expect("valid");
            assert_eq!(h.codec(), Ok(codec));
            assert_eq!(h.compression(), codec.code());
            assert_eq!((h.record_count, h.max_timestamp_ms), (3, 1005));
            let body = records_body(&batch, &h, 1 << 20).expect("body");
            let got: Vec<_> = RecordIter::new(&body, h.record_count)
                .map(|r| r.expect("rec"))
                .collect();
            assert_eq!(got, want, "{codec}");
            if codec != Compression::None {
                // The plain iterator refuses rather than misreads.
                assert!(matches!(
                    records(&batch).map(|_| ()),
                    Err(BatchError::UnsupportedCompression(_))
                ));
            }
        }
    }

    #[test]
    fn compressed_batch_with_a_lying_record_count_is_refused() {
        for codec in Compression::ALL.into_iter().skip(1) {
            // Header of a 4-record batch over the body of a 3-record one.
            let four = compressed(codec, 4, b"value");
            let three = compressed(codec, 3, b"value");
            let mut b = four[..HEADER_BYTES].to_vec();
            b.extend_from_slice(&three[HEADER_BYTES..]);
            reseal(&mut b);
            assert!(
                matches!(validate(&b), Err(BatchError::MalformedRecord { .. })),
                "{codec}: more records claimed than present"
            );
            // And the other way: fewer claimed than present.
            let mut b = three[..HEADER_BYTES].to_vec();
            b.extend_from_slice(&four[HEADER_BYTES..]);
            reseal(&mut b);
            assert!(
                matches!(validate(&b), Err(BatchError::MalformedRecord { .. })),
                "{codec}: fewer records claimed than present"
            );
        }
    }

    #[test]
    fn decompression_bomb_is_too_large_and_bad_frames_are_corrupt() {
        for codec in Compression::ALL.into_iter().skip(1) {
            let bomb = compressed(codec, 4, &[0u8; 512 * 1024]);
            assert!(bomb.len() < 256 * 1024, "{codec}: zeros compress");
            assert!(
                matches!(
                    validate_bounded(&bomb, 1 << 20),
                    Err(BatchError::DecompressedTooLarge(_))
                ),
                "{codec}"
            );
            assert!(validate_bounded(&bomb, 4 << 20).is_ok(), "{codec}");
            let mut bad = bomb[..HEADER_BYTES].to_vec();
            bad.extend_from_slice(b"this is not a compressed frame at all");
            reseal(&mut bad);
            assert!(
                matches!(validate(&bad), Err(BatchError::Decompress(_))),
                "{codec}"
            );
            // Truncated compressed section (CRC fixed up): refused.
            let mut cut = bomb[..bomb.len() - 8].to_vec();
            reseal(&mut cut);
            assert!(validate(&cut).is_err(), "{codec} truncated");
        }
        for code in 5u16..8 {
            let mut b = sample().to_vec();
            b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&code.to_le_bytes());
            reseal(&mut b);
            assert_eq!(validate(&b), Err(BatchError::UnsupportedCompression(code)));
        }
    }
}
