//! Idempotent-producer state of one partition: the pure state machine and
//! its snapshot format (no I/O; [`super::producer_log`] persists and
//! rebuilds it, [`super::append`] consults it).
//!
//! Owns: per producer id, its current epoch, when it was last seen, and the
//! metadata of its last [`MAX_CACHED_BATCHES`] batches (first/last sequence,
//! base/last offset, max timestamp) — Kafka's `ProducerStateEntry`. The
//! verdict on a leader append ([`ProducerStates::check`]):
//! - epoch older than the producer's current one → `Fenced`;
//! - epoch newer → the batch must start at sequence 0 (else `OutOfOrder`);
//! - same epoch and the same first/last sequence as one of the cached
//!   batches → `Duplicate` (answered with that batch's original offsets);
//! - same epoch, first sequence == last sequence + 1 (wrapping from
//!   `i32::MAX` to 0) → `Append`; any other → `OutOfOrder`;
//! - unknown (or expired) producer id: sequence 0 → `Append`, any other →
//!   `Unknown` (Kafka's pre-2.5 UNKNOWN_PRODUCER_ID semantics: the broker
//!   cannot tell a gap from a retry, the producer must reset its sequence
//!   by bumping its epoch).
//!
//! Snapshot format (big-endian, like Kafka's producer snapshot; one file
//! `<offset:020>.snapshot` holds the state of every batch below `offset`):
//! `"CLPS" | version u16 (1) | crc32c u32 of everything after it |
//! offset u64 | producers u32 | per producer: id i64, epoch i16,
//! last_seen_ms i64, batches u8, per batch: first_seq i32, last_seq i32,
//! base_offset u64, last_offset u64, max_timestamp_ms i64`.
//!
//! Invariants: at most [`MAX_CACHED_BATCHES`] batches per producer, oldest
//! first, all of the producer's current epoch and in sequence order;
//! batches with `producer_id < 0` never reach this module.
//!
//! Must not know: files, offsets' durability, the wire format.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::batch::BatchHeader;
use crate::protocol::Offset;

/// Batches remembered per producer for duplicate detection (Kafka's 5:
/// the most a producer may have in flight per partition).
pub const MAX_CACHED_BATCHES: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"CLPS";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEAD_BYTES: usize = 4 + 2 + 4;
const BATCH_META_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// The producer fields of one batch (from its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub max_timestamp_ms: i64,
}

impl ProducerBatch {
    /// The producer fields of `h`, `None` for a non-idempotent batch
    /// (`producer_id < 0`).
    pub fn of(h: &BatchHeader) -> Option<ProducerBatch> {
        if h.producer_id < 0 {
            return None;
        }
        Some(ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: add_seq(h.base_sequence, h.last_offset_delta),
            max_timestamp_ms: h.max_timestamp_ms,
        })
    }
}

/// `seq + n`, wrapping past `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn add_seq(seq: i32, n: u32) -> i32 {
    let n = i64::from(n) % (i64::from(i32::MAX) + 1);
    let s = i64::from(seq.max(0)) + n;
    if s > i64::from(i32::MAX) {
        (s - i64::from(i32::MAX) - 1) as i32
    } else {
        s as i32
    }
}

/// Whether `next` directly follows `last` (wrapping at `i32::MAX` to 0).
pub fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Where one of a producer's batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp_ms: i64,
}

/// One producer id's state on this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Wall time (ms) this broker last appended (or recovered) a batch of it.
    pub last_seen_ms: i64,
    /// The last batches, oldest first (at most [`MAX_CACHED_BATCHES`]).
    pub batches: VecDeque<BatchMeta>,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and in sequence: assign offsets and write it.
    Append,
    /// Already appended: answer with these offsets, do not write it again.
    Duplicate(BatchMeta),
}

/// Why a producer's batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// An older epoch than the producer's current one (a zombie instance).
    Fenced { current: i16 },
    /// Not the next sequence (a gap, or a retry older than the cached ones).
    OutOfOrder { expected: i32 },
    /// The producer id is not known here (never seen, or expired) and the
    /// batch does not start at sequence 0.
    Unknown,
    /// Negative epoch or sequence with a producer id.
    Invalid,
}

/// Every producer's state on one partition (ordered for snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    map: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.map.get(&producer_id)
    }

    /// The verdict on a leader append of `b` (see the module header). An
    /// entry not seen for `expiration_ms` at `now_ms` counts as unknown.
    pub fn check(
        &self,
        b: &ProducerBatch,
        now_ms: i64,
        expiration_ms: u64,
    ) -> Result<Verdict, SeqError> {
        if b.epoch < 0 || b.first_seq < 0 {
            return Err(SeqError::Invalid);
        }
        let entry = self
            .map
            .get(&b.producer_id)
            .filter(|e| !expired(e, now_ms, expiration_ms));
        let Some(e) = entry else {
            return if b.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SeqError::Unknown)
            };
        };
        if b.epoch < e.epoch {
            return Err(SeqError::Fenced { current: e.epoch });
        }
        if b.epoch > e.epoch {
            return if b.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SeqError::OutOfOrder { expected: 0 })
            };
        }
        if let Some(m) = e
            .batches
            .iter()
            .find(|m| m.first_seq == b.first_seq && m.last_seq == b.last_seq)
        {
            return Ok(Verdict::Duplicate(*m));
        }
        match e.batches.back() {
            None if b.first_seq == 0 => Ok(Verdict::Append),
            None => Err(SeqError::OutOfOrder { expected: 0 }),
            Some(last) if in_sequence(last.last_seq, b.first_seq) => Ok(Verdict::Append),
            Some(last) => Err(SeqError::OutOfOrder {
                expected: add_seq(last.last_seq, 1),
            }),
        }
    }

    /// Records `b` at `[base_offset, last_offset]` (after a `check` that
    /// said `Append`, or unchecked when rebuilding from the log or for a
    /// replica append). A new epoch forgets the old epoch's batches.
    pub fn apply(
        &mut self,
        b: &ProducerBatch,
        base_offset: Offset,
        last_offset: Offset,
        seen_ms: i64,
    ) {
        let e = self
            .map
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                last_seen_ms: seen_ms,
                batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
            });
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.batches.clear();
        }
        e.last_seen_ms = e.last_seen_ms.max(seen_ms);
        if e.batches.len() == MAX_CACHED_BATCHES {
            e.batches.pop_front();
        }
        e.batches.push_back(BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            base_offset,
            last_offset,
            max_timestamp_ms: b.max_timestamp_ms,
        });
        assert!(e.batches.len() <= MAX_CACHED_BATCHES);
    }

    /// Ids of producers not seen for `expiration_ms` at `now_ms`.
    pub fn expired_ids(&self, now_ms: i64, expiration_ms: u64) -> Vec<i64> {
        self.map
            .iter()
            .filter(|(_, e)| expired(e, now_ms, expiration_ms))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn remove(&mut self, producer_id: i64) {
        self.map.remove(&producer_id);
    }

    /// The snapshot of this state as of `offset` (format in the module header).
    pub fn encode_snapshot(&self, offset: Offset) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + self.map.len() * (19 + 5 * BATCH_META_BYTES));
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(self.map.len() as u32).to_be_bytes());
        for (id, e) in &self.map {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_seen_ms.to_be_bytes());
            body.push(e.batches.len() as u8);
            for m in &e.batches {
                body.extend_from_slice(&m.first_seq.to_be_bytes());
                body.extend_from_slice(&m.last_seq.to_be_bytes());
                body.extend_from_slice(&m.base_offset.to_be_bytes());
                body.extend_from_slice(&m.last_offset.to_be_bytes());
                body.extend_from_slice(&m.max_timestamp_ms.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(SNAPSHOT_HEAD_BYTES + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses [`ProducerStates::encode_snapshot`]'s format: the offset it
    /// was taken at and the state; an error names what is wrong.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Offset, ProducerStates), String> {
        if bytes.len() < SNAPSHOT_HEAD_BYTES || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err("not a producer snapshot (bad magic)".into());
        }
        let mut r = Reader(&bytes[4..]);
        let version = r.u16()?;
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = r.u32()?;
        if crc32c::crc32c(r.0) != crc {
            return Err("CRC mismatch".into());
        }
        let offset = r.u64()?;
        let count = r.u32()?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let id = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let last_seen_ms = r.u64()? as i64;
            let n = r.u8()? as usize;
            if id < 0 || epoch < 0 || n > MAX_CACHED_BATCHES {
                return Err(format!(
                    "bad producer entry {id} (epoch {epoch}, {n} batches)"
                ));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let m = BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                    max_timestamp_ms: r.u64()? as i64,
                };
                if m.last_offset < m.base_offset || m.last_offset >= offset {
                    return Err(format!("producer {id}: batch at offsets past the snapshot"));
                }
                batches.push_back(m);
            }
            map.insert(
                id,
                ProducerEntry {
                    epoch,
                    last_seen_ms,
                    batches,
                },
            );
        }
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok((offset, ProducerStates { map }))
    }
}

fn expired(e: &ProducerEntry, now_ms: i64, expiration_ms: u64) -> bool {
    now_ms.saturating_sub(e.last_seen_ms) >= expiration_ms.min(i64::MAX as u64) as i64
}

/// Big-endian reads with bounds checks.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("truncated snapshot".into());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;

    fn b(pid: i64, epoch: i16, first: i32, records: u32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: add_seq(first, records - 1),
            max_timestamp_ms: 0,
        }
    }

    /// Checks and applies like a leader append; offsets follow `next`.
    fn append(
        s: &mut ProducerStates,
        next: &mut u64,
        x: ProducerBatch,
    ) -> Result<Verdict, SeqError> {
        let v = s.check(&x, 0, DAY_MS)?;
        if v == Verdict::Append {
            let n = (x.last_seq as i64 - x.first_seq as i64).rem_euclid(i32::MAX as i64 + 1) as u64;
            s.apply(&x, *next, *next + n, 0);
            *next += n + 1;
        }
        Ok(v)
    }

    #[test]
    fn duplicates_among_the_last_five_and_the_sixth_is_out_of_order() {
        let mut s = ProducerStates::default();
        let mut next = 0;
        for i in 0..6 {
            assert_eq!(
                append(&mut s, &mut next, b(7, 0, i * 2, 2)),
                Ok(Verdict::Append)
            );
        }
        // Batches 1..=5 (seq 2..12) are cached; a retry of each is a duplicate
        // with its original offsets.
        for i in 1..6 {
            match append(&mut s, &mut next, b(7, 0, i * 2, 2)) {
                Ok(Verdict::Duplicate(m)) => {
                    assert_eq!(m.base_offset, i as u64 * 2);
                    assert_eq!(m.last_offset, i as u64 * 2 + 1);
                }
                other => panic!("batch {i}: {other:?}"),
            }
        }
        // The oldest (seq 0-1) fell out of the cache: out of order.
        assert_eq!(
            append(&mut s, &mut next, b(7, 0, 0, 2)),
            Err(SeqError::OutOfOrder { expected: 12 })
        );
        assert_eq!(next, 12, "duplicates assign no offsets");
        // A gap, and an overlap that matches no cached batch.
        assert_eq!(
            append(&mut s, &mut next, b(7, 0, 13, 1)),
            Err(SeqError::OutOfOrder { expected: 12 })
        );
        assert_eq!(
            append(&mut s, &mut next, b(7, 0, 11, 2)),
            Err(SeqError::OutOfOrder { expected: 12 })
        );
        assert_eq!(
            append(&mut s, &mut next, b(7, 0, 12, 1)),
            Ok(Verdict::Append)
        );
        assert_eq!(s.get(7).map(|e| e.batches.len()), Some(MAX_CACHED_BATCHES));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(add_seq(i32::MAX, 1), 0);
        assert_eq!(add_seq(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(i32::MAX, 1));
        let mut s = ProducerStates::default();
        // Known producer at the end of the sequence space (a new epoch starts
        // at 0, so put it there through apply as the log would).
        s.apply(&b(1, 0, i32::MAX - 2, 2), 0, 1, 0);
        let mut next = 2;
        let x = b(1, 0, i32::MAX, 3); // MAX, 0, 1
        assert_eq!(x.last_seq, 1);
        assert_eq!(append(&mut s, &mut next, x), Ok(Verdict::Append));
        assert_eq!(
            append(&mut s, &mut next, b(1, 0, 2, 1)),
            Ok(Verdict::Append)
        );
        assert!(matches!(
            append(&mut s, &mut next, x),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn fencing_new_epochs_and_unknown_producers() {
        let mut s = ProducerStates::default();
        let mut next = 0;
        assert_eq!(
            append(&mut s, &mut next, b(3, 2, 0, 1)),
            Ok(Verdict::Append)
        );
        assert_eq!(
            append(&mut s, &mut next, b(3, 2, 1, 1)),
            Ok(Verdict::Append)
        );
        assert_eq!(
            append(&mut s, &mut next, b(3, 1, 2, 1)),
            Err(SeqError::Fenced { current: 2 })
        );
        // A newer epoch must start at 0.
        assert_eq!(
            append(&mut s, &mut next, b(3, 3, 2, 1)),
            Err(SeqError::OutOfOrder { expected: 0 })
        );
        assert_eq!(
            append(&mut s, &mut next, b(3, 3, 0, 1)),
            Ok(Verdict::Append)
        );
        // The old epoch is fenced now, even its former duplicates.
        assert_eq!(
            append(&mut s, &mut next, b(3, 2, 1, 1)),
            Err(SeqError::Fenced { current: 3 })
        );
        assert_eq!(s.get(3).map(|e| e.batches.len()), Some(1));
        // Unknown producer: sequence 0 starts it, anything else is refused.
        assert_eq!(
            append(&mut s, &mut next, b(9, 0, 5, 1)),
            Err(SeqError::Unknown)
        );
        assert_eq!(
            append(&mut s, &mut next, b(9, 0, 0, 1)),
            Ok(Verdict::Append)
        );
        assert_eq!(
            append(&mut s, &mut next, b(9, -1, 0, 1)),
            Err(SeqError::Invalid)
        );
    }

    #[test]
    fn expired_producers_count_as_unknown() {
        let mut s = ProducerStates::default();
        s.apply(&b(4, 0, 0, 1), 0, 0, 1_000);
        let x = b(4, 0, 1, 1);
        assert_eq!(s.check(&x, 1_000 + 999, 1_000), Ok(Verdict::Append));
        assert_eq!(s.check(&x, 2_000, 1_000), Err(SeqError::Unknown));
        assert_eq!(s.expired_ids(2_000, 1_000), vec![4]);
        assert!(s.expired_ids(1_999, 1_000).is_empty());
    }

    #[test]
    fn snapshot_round_trips_and_refuses_damage() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.apply(&b(1, 0, i, 1), i as u64, i as u64, 5);
        }
        s.apply(&b(2, 4, 0, 3), 10, 12, 6);
        let bytes = s.encode_snapshot(13);
        assert_eq!(ProducerStates::decode_snapshot(&bytes), Ok((13, s.clone())));
        let empty = ProducerStates::default().encode_snapshot(0);
        assert_eq!(
            ProducerStates::decode_snapshot(&empty),
            Ok((0, ProducerStates::default()))
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                ProducerStates::decode_snapshot(&bad).is_err(),
                "flip at {i}"
            );
        }
        assert!(ProducerStates::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        // A batch at or past the snapshot's own offset is refused.
        assert!(ProducerStates::decode_snapshot(&s.encode_snapshot(12)).is_err());
    }
}
