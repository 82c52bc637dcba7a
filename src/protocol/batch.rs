//! The record batch format (docs/record-batch.md): the unit that is the same
//! bytes on the wire, on disk and in replication. It is Kafka's RecordBatch
//! v2 (magic 2) byte for byte, so a Kafka listener can serve it unconverted.
//!
//! Layout, big-endian, header of [`HEADER_BYTES`] = 61 bytes:
//!
//! | off | size | field                                             | in CRC |
//! |-----|------|---------------------------------------------------|--------|
//! | 0   | 8    | baseOffset (i64, assigned by the broker)          | no     |
//! | 8   | 4    | batchLength (i32, bytes after this field)         | no     |
//! | 12  | 4    | partitionLeaderEpoch (i32, stamped by the broker) | no     |
//! | 16  | 1    | magic (= 2)                                       | no     |
//! | 17  | 4    | crc (u32, CRC32C of bytes [21, end))              | no     |
//! | 21  | 2    | attributes (i16, see below)                       | yes    |
//! | 23  | 4    | lastOffsetDelta (i32 = records count - 1)         | yes    |
//! | 27  | 8    | baseTimestamp (i64, ms)                           | yes    |
//! | 35  | 8    | maxTimestamp (i64, ms)                            | yes    |
//! | 43  | 8    | producerId (i64, -1 = none)                       | yes    |
//! | 51  | 2    | producerEpoch (i16, -1 = none)                    | yes    |
//! | 53  | 4    | baseSequence (i32, -1 = none)                     | yes    |
//! | 57  | 4    | records count (i32, >= 1)                         | yes    |
//! | 61  | ...  | records                                           | yes    |
//!
//! A batch is `batchLength + 12` bytes in all ([`BatchHeader::total_bytes`]).
//! Attributes (Kafka's bits): 0-2 compression codec, 3 timestamp type
//! (0 = CreateTime, 1 = LogAppendTime), 4 transactional, 5 control,
//! 6 delete horizon set.
//!
//! Each record: varint length (of the rest of the record), i8 attributes,
//! zigzag varlong timestamp_delta (from baseTimestamp), zigzag varint
//! offset_delta, zigzag varint key length (-1 = null) + key, zigzag varint
//! value length (-1 = null) + value, zigzag varint header count, then per
//! header: zigzag varint key length + UTF-8 key, zigzag varint value length
//! (-1 = null) + value (Kafka's record encoding).
//!
//! Invariants: baseOffset and partitionLeaderEpoch sit outside the CRC so the
//! broker can stamp them in place without re-encoding; `validate` checks
//! length, magic, CRC, record framing and that the records count is
//! `lastOffsetDelta + 1`; no header value, however hostile, makes any
//! function here panic.
//!
//! Must not know: segments, partitions, wire frames.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::compression::{self, Compression, DecompressError};

/// Size of the fixed batch header, in bytes.
pub const HEADER_BYTES: usize = 61;
/// The only batch format version this build reads and writes (Kafka's v2).
pub const MAGIC: u8 = 2;
/// Where the CRC-covered region starts (the attributes).
pub const CRC_START: usize = 21;
/// Bytes of a batch up to and including `batchLength`: the whole batch is
/// `batchLength + LENGTH_OVERHEAD_BYTES` bytes.
pub const LENGTH_OVERHEAD_BYTES: usize = 12;
/// The prefix of a batch that holds everything [`stamp`] writes (base
/// offset, batchLength, partitionLeaderEpoch); the rest of a stamped batch
/// is the producer's bytes unchanged.
pub const STAMPED_PREFIX_BYTES: usize = 16;

/// Header field offsets (Kafka's DefaultRecordBatch), for tests and tools
/// that read or patch a header by hand.
pub mod offsets {
    pub const BASE_OFFSET: usize = 0;
    pub const LENGTH: usize = 8;
    pub const LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const FIRST_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
}
use offsets::{
    ATTRIBUTES as OFF_ATTRIBUTES, BASE_OFFSET as OFF_BASE_OFFSET,
    BASE_SEQUENCE as OFF_BASE_SEQUENCE, CRC as OFF_CRC, FIRST_TIMESTAMP as OFF_FIRST_TS,
    LAST_OFFSET_DELTA as OFF_LAST_OFFSET_DELTA, LEADER_EPOCH as OFF_LEADER_EPOCH,
    LENGTH as OFF_LENGTH, MAGIC as OFF_MAGIC, MAX_TIMESTAMP as OFF_MAX_TS,
    PRODUCER_EPOCH as OFF_PRODUCER_EPOCH, PRODUCER_ID as OFF_PRODUCER_ID,
    RECORD_COUNT as OFF_RECORD_COUNT,
};

/// Mask of the compression codec bits in `attributes`.
pub const COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit 3: timestamp type (set = LogAppendTime).
pub const TIMESTAMP_TYPE_BIT: u16 = 1 << 3;
/// Attribute bit 4: the batch is part of a transaction.
pub const TRANSACTIONAL_BIT: u16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction markers).
pub const CONTROL_BIT: u16 = 1 << 5;
/// Attribute bit 6: the delete horizon is set (baseTimestamp holds it).
pub const DELETE_HORIZON_BIT: u16 = 1 << 6;

/// Kafka's timestamp types (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {HEADER_BYTES}-byte header")]
    ShortHeader { len: usize },
    #[error("batchLength {declared} is invalid for {available} available bytes (a batch is batchLength + 12 bytes, at least {HEADER_BYTES})")]
    BadLength { declared: i64, available: usize },
    #[error("unknown batch magic {0} (expected {MAGIC})")]
    BadMagic(u8),
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("records count {record_count} disagrees with lastOffsetDelta {last_offset_delta} (count must be >= 1 and lastOffsetDelta + 1)")]
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
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

/// The fixed header of one batch, decoded. Fields keep Kafka's names'
/// meaning: `batch_length` is Kafka's batchLength (bytes after that field);
/// use [`BatchHeader::total_bytes`] for the size of the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Kafka's batchLength: bytes after this field (total - 12). `parse`
    /// guarantees `batch_length + 12 >= HEADER_BYTES`.
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
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Smallest valid batchLength: a header with no records after it.
const MIN_BATCH_LENGTH: u32 = (HEADER_BYTES - LENGTH_OVERHEAD_BYTES) as u32;

impl BatchHeader {
    /// Decodes the header at the start of `buf`. Checks only that the header
    /// is complete, the magic is known and `batchLength` covers at least a
    /// header (a negative one is refused); the batch may run past `buf` (a
    /// partial read). No CRC check.
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
        // batchLength is an i32: negative values (>= 2^31 read unsigned) and
        // lengths shorter than a header are refused.
        if h.batch_length < MIN_BATCH_LENGTH || h.batch_length > i32::MAX as u32 {
            return Err(BatchError::BadLength {
                declared: i64::from(h.batch_length as i32),
                available: buf.len(),
            });
        }
        Ok(h)
    }

    /// Bytes of the whole batch: `batchLength + 12`.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LENGTH_OVERHEAD_BYTES
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

    /// The compression codec (attribute bits 0-2; Kafka's numbers).
    pub fn compression(&self) -> u16 {
        self.attributes & COMPRESSION_MASK
    }

    /// The timestamp type (attribute bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch is part of a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch is a control batch (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether the delete horizon is set (attribute bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
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

/// Writes the CRC of a complete batch into its header (builders and tests
/// that patch a header by hand).
pub fn set_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites batchLength for the whole of `batch` (`len - 12`) and then the
/// CRC: for tests and tools that splice or cut batches by hand.
pub fn reseal(batch: &mut [u8]) {
    assert!(
        (HEADER_BYTES..=i32::MAX as usize).contains(&batch.len()),
        "reseal of a {}-byte batch",
        batch.len()
    );
    let len = (batch.len() - LENGTH_OVERHEAD_BYTES) as u32;
    batch[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    set_crc(batch);
}

/// Checks the CRC of a complete batch (`batch.len() == total_bytes()`).
pub fn verify_crc(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.total_bytes() != batch.len() {
        return Err(BatchError::BadLength {
            declared: i64::from(h.batch_length),
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
    let count = h.record_count as i32;
    let last = h.last_offset_delta as i32;
    if count < 1 || last < 0 || i64::from(count) != i64::from(last) + 1 {
        return Err(BatchError::BadRecordCount {
            record_count: count,
            last_offset_delta: last,
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
/// that. The length field is read as Kafka's (`+ 12`) and, for the previous
/// Corelog format (magic 1, length of the whole batch), as is. Returns the
/// foreign magic.
pub fn foreign_format(bytes: &[u8], at_segment_start: bool) -> Option<u8> {
    let magic = *bytes.get(OFF_MAGIC)?;
    if magic == MAGIC || magic == 0 || bytes.len() < HEADER_BYTES {
        return None;
    }
    if at_segment_start {
        return Some(magic);
    }
    let stored = u32_at(bytes, OFF_CRC);
    let crc_ok = |len: usize| {
        (HEADER_BYTES..=bytes.len()).contains(&len) && compute_crc(&bytes[..len]) == stored
    };
    let kafka = u32_at(bytes, OFF_LENGTH) as usize + LENGTH_OVERHEAD_BYTES;
    let whole = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    (crc_ok(kafka) || crc_ok(whole)).then_some(magic)
}

/// The whole size (`batchLength + 12`) a header declares, or `None` if
/// `head` is too short to hold the field or it is negative; not validated
/// further.
pub fn declared_total_bytes(head: &[u8]) -> Option<u64> {
    let len = head.get(OFF_LENGTH..OFF_LENGTH + 4)?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    u64::try_from(len)
        .ok()
        .map(|l| l + LENGTH_OVERHEAD_BYTES as u64)
}

/// Stamps the broker-assigned base offset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the leader epoch (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: u32) {
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
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
    let end = h.total_bytes().min(batch.len());
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
    let end = h.total_bytes().min(batch.len());
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
    attributes: u16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
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
            attributes: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Sets the idempotent producer's fields written at `finish` (default:
    /// -1 for each, no producer).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Sets the attributes written at `finish` (Kafka's bits; default 0:
    /// no compression, CreateTime, not transactional, not control).
    pub fn set_attributes(&mut self, attributes: u16) {
        self.attributes = attributes;
    }

    /// Bytes the batch would have if finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the builder's buffer can hold before it grows (tests).
    #[cfg(test)]
    pub fn capacity_bytes(&self) -> usize {
        self.buf.capacity()
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
        assert!(buf.len() <= i32::MAX as usize, "batch larger than 2 GiB");
        let len = (buf.len() - LENGTH_OVERHEAD_BYTES) as u32;
        buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        let plain_attributes =
            u16::from_be_bytes([plain[OFF_ATTRIBUTES], plain[OFF_ATTRIBUTES + 1]]);
        let attributes = (plain_attributes & !COMPRESSION_MASK) | codec.code();
        buf[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        set_crc(&mut buf);
        buf.freeze()
    }

    /// Seals the batch: writes the header (base offset 0, leader epoch 0,
    /// the producer fields and attributes set before) and the CRC. Panics if
    /// no record was pushed (a caller bug, not input).
    pub fn finish(self) -> Bytes {
        assert!(self.count > 0, "BatchBuilder::finish on an empty batch");
        let mut buf = self.buf;
        assert!(buf.len() <= i32::MAX as usize, "batch larger than 2 GiB");
        let len = (buf.len() - LENGTH_OVERHEAD_BYTES) as u32;
        let first = self.first_timestamp_ms.unwrap_or(0);
        let h = &mut buf[..HEADER_BYTES];
        h[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        h[OFF_MAGIC] = MAGIC;
        h[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_be_bytes());
        h[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(self.count - 1).to_be_bytes());
        h[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&first.to_be_bytes());
        h[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        h[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        h[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        h[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&self.count.to_be_bytes());
        set_crc(&mut buf);
        buf.freeze()
    }
}

/// Walks concatenated batches (a fetch response or a segment read). Yields
/// each complete batch with its header; stops silently at an incomplete
/// trailing batch or at zero padding (batchLength 0); yields an error for a
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
            Ok(h) if h.total_bytes() <= rest.len() => {
                let b = &rest[..h.total_bytes()];
                self.pos += h.total_bytes();
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
        b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&4u32.to_be_bytes());
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&3u32.to_be_bytes());
        set_crc(&mut b);
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
    fn header_is_kafka_v2_big_endian() {
        let mut b = BatchBuilder::new();
        b.set_producer(0x0102_0304_0506_0708, 0x0a0b, 0x1122_3344);
        b.set_attributes(TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT);
        b.push(1000, Some(b"k"), Some(b"v"), &[]);
        let bytes = b.finish();
        assert_eq!(bytes[OFF_MAGIC], 2);
        let len = i32::from_be_bytes(bytes[8..12].try_into().expect("4"));
        assert_eq!(len as usize + 12, bytes.len());
        assert_eq!(&bytes[43..51], &0x0102_0304_0506_0708i64.to_be_bytes());
        assert_eq!(&bytes[51..53], &[0x0a, 0x0b]);
        assert_eq!(&bytes[53..57], &0x1122_3344i32.to_be_bytes());
        assert_eq!(&bytes[21..23], &[0, 0b1_1000]);
        let crc = u32::from_be_bytes(bytes[17..21].try_into().expect("4"));
        assert_eq!(crc, crc32c::crc32c(&bytes[21..]));
        let h = validate(&bytes).expect("valid");
        assert_eq!(h.total_bytes(), bytes.len());
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(h.is_transactional() && !h.is_control() && !h.has_delete_horizon());
        assert_eq!(h.compression(), 0);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (0x0102_0304_0506_0708, 0x0a0b, 0x1122_3344)
        );
        let plain = validate(&sample()).expect("valid");
        assert_eq!(plain.timestamp_type(), TimestampType::CreateTime);
        assert!(!plain.is_transactional() && !plain.is_control());
        assert_eq!((plain.producer_epoch, plain.base_sequence), (-1, -1));
    }

    #[test]
    fn hostile_header_values_are_refused_with_clear_errors() {
        let good = sample().to_vec();
        let patched = |at: usize, v: i32| {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            set_crc(&mut b);
            b
        };
        for len in [-1, i32::MIN, 0, 48] {
            let e = validate(&patched(OFF_LENGTH, len)).expect_err("bad length");
            assert!(matches!(e, BatchError::BadLength { .. }), "{len}: {e}");
            if len < 0 {
                assert!(e.to_string().contains(&len.to_string()), "{e}");
            }
        }
        for (count, last) in [(0i32, -1i32), (-1, -2), (-5, 2), (4, 2)] {
            let b = patched(OFF_RECORD_COUNT, count);
            let mut b2 = b.clone();
            b2[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
                .copy_from_slice(&last.to_be_bytes());
            set_crc(&mut b2);
            let e = validate(&b2).expect_err("bad count");
            assert_eq!(
                e,
                BatchError::BadRecordCount {
                    record_count: count,
                    last_offset_delta: last
                }
            );
            assert!(e.to_string().contains(&count.to_string()), "{e}");
        }
        let e = validate(&patched(OFF_LAST_OFFSET_DELTA, 7)).expect_err("mismatch");
        assert!(matches!(e, BatchError::BadRecordCount { .. }), "{e}");
        assert_eq!(declared_total_bytes(&patched(OFF_LENGTH, -3)), None);
        assert_eq!(
            declared_total_bytes(&good),
            Some(good.len() as u64),
            "batchLength + 12"
        );
    }

    #[test]
    fn previous_format_is_recognised_as_foreign_mid_segment() {
        // The previous Corelog format: magic 1, little-endian whole length.
        let mut b = sample().to_vec();
        b[OFF_MAGIC] = 1;
        let whole = b.len() as u32;
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&whole.to_le_bytes());
        assert_eq!(foreign_format(&b, false), Some(1));
        let mut k = sample().to_vec();
        k[OFF_MAGIC] = 9;
        assert_eq!(foreign_format(&k, false), Some(9));
        k[HEADER_BYTES] ^= 1;
        assert_eq!(foreign_format(&k, false), None, "garbage, not a format");
        assert_eq!(foreign_format(&sample(), true), None, "ours");
    }

    #[test]
    fn builder_size_estimate_is_exact() {
        let mut b = BatchBuilder::new();
        let before = b.size_bytes();
        let est = b.record_size_bytes(5, Some(b"key"), Some(&[7u8; 300]), &[]);
        b.push(5, Some(b"key"), Some(&[7u8; 300]), &[]);
        assert_eq!(b.size_bytes() - before, est);
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
            b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&code.to_be_bytes());
            reseal(&mut b);
            assert_eq!(validate(&b), Err(BatchError::UnsupportedCompression(code)));
        }
    }
}
