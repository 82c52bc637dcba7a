//! Sparse offset and time indexes of one segment, and their file format.
//!
//! Offset index: (relative offset u32 → file position u32), one entry every
//! `index_interval_bytes` of log. Lookup gives the position of the last
//! indexed batch whose base offset is <= the target (or 0).
//!
//! Time index: (T i64, relative offset u32) meaning "every batch whose base
//! offset is below `rel` has max_timestamp <= T"; T strictly increases.
//! Lookup for t gives the last entry with T < t: no batch before it can hold a
//! timestamp >= t, so a scan may start there.
//!
//! Files (`.index` / `.timeindex`, little-endian): a [`HEADER_BYTES`] header —
//! magic, version, base_offset, file_bytes (physical log size the index
//! describes), log_bytes (logical size), next_offset, max_timestamp, entry
//! count, CRC32C of header-before-crc + entries — then the entries. A file
//! whose header, CRC or sizes disagree with the log is stale and is rebuilt.
//!
//! Invariants: entries strictly increase in relative offset and position
//! (offset index) / in T and relative offset (time index).

/// Header size of both index files, in bytes.
pub const HEADER_BYTES: usize = 56;
const VERSION: u32 = 1;
pub const OFFSET_MAGIC: [u8; 4] = *b"CLOI";
pub const TIME_MAGIC: [u8; 4] = *b"CLTI";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    /// (relative offset, position).
    pub entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, rel: u32, pos: u32) {
        debug_assert!(
            self.entries.last().is_none_or(|&(r, p)| r < rel && p < pos),
            "offset index not monotonic"
        );
        self.entries.push((rel, pos));
    }

    /// Position of the last indexed batch with relative base offset <= `rel`.
    pub fn lookup(&self, rel: u32) -> u32 {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// Drops entries at or past `log_bytes` (after a rollback).
    pub fn truncate_to(&mut self, log_bytes: u64) {
        self.entries.retain(|&(_, p)| (p as u64) < log_bytes);
    }

    /// Consistent with a log of `log_bytes` holding offsets below `next_rel`.
    pub fn is_consistent(&self, log_bytes: u64, next_rel: u64) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && self
                .entries
                .last()
                .is_none_or(|&(r, p)| (p as u64) < log_bytes && (r as u64) < next_rel)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    /// (max timestamp of all batches before `rel`, rel).
    pub entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if `ts` is above the last one.
    pub fn maybe_push(&mut self, ts: i64, rel: u32) {
        if self.entries.last().is_none_or(|&(t, r)| ts > t && rel > r) {
            self.entries.push((ts, rel));
        }
    }

    /// Relative offset from which a scan for timestamp >= `t` may start.
    pub fn lookup(&self, t: i64) -> u32 {
        let i = self.entries.partition_point(|&(ts, _)| ts < t);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn truncate_to(&mut self, next_rel: u64) {
        self.entries.retain(|&(_, r)| (r as u64) < next_rel);
    }

    pub fn is_consistent(&self, next_rel: u64) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && self
                .entries
                .last()
                .is_none_or(|&(_, r)| (r as u64) < next_rel)
    }
}

/// What an index file says about its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub base_offset: u64,
    pub file_bytes: u64,
    pub log_bytes: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
}

fn encode(magic: [u8; 4], h: &IndexHeader, count: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&h.base_offset.to_le_bytes());
    out.extend_from_slice(&h.file_bytes.to_le_bytes());
    out.extend_from_slice(&h.log_bytes.to_le_bytes());
    out.extend_from_slice(&h.next_offset.to_le_bytes());
    out.extend_from_slice(&h.max_timestamp.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&out);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks magic, version, length and CRC; returns the header, entry count and body.
fn decode(magic: [u8; 4], entry_bytes: usize, b: &[u8]) -> Result<(IndexHeader, &[u8]), String> {
    if b.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", b.len()));
    }
    if b[0..4] != magic {
        return Err("bad magic".into());
    }
    if u32_at(b, 4) != VERSION {
        return Err(format!("unknown version {}", u32_at(b, 4)));
    }
    let h = IndexHeader {
        base_offset: u64_at(b, 8),
        file_bytes: u64_at(b, 16),
        log_bytes: u64_at(b, 24),
        next_offset: u64_at(b, 32),
        max_timestamp: u64_at(b, 40) as i64,
    };
    let count = u32_at(b, 48) as usize;
    let body_len = count
        .checked_mul(entry_bytes)
        .ok_or_else(|| "entry count overflows".to_string())?;
    if b.len() != HEADER_BYTES + body_len {
        return Err(format!(
            "{} bytes, expected {} for {count} entries",
            b.len(),
            HEADER_BYTES + body_len
        ));
    }
    let body = &b[HEADER_BYTES..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..52]), body);
    if crc != u32_at(b, 52) {
        return Err("checksum mismatch".into());
    }
    Ok((h, body))
}

pub fn encode_offset_index(h: &IndexHeader, idx: &OffsetIndex) -> Vec<u8> {
    let mut body = Vec::with_capacity(idx.entries.len() * 8);
    for &(r, p) in &idx.entries {
        body.extend_from_slice(&r.to_le_bytes());
        body.extend_from_slice(&p.to_le_bytes());
    }
    encode(OFFSET_MAGIC, h, idx.entries.len(), &body)
}

pub fn decode_offset_index(b: &[u8]) -> Result<(IndexHeader, OffsetIndex), String> {
    let (h, body) = decode(OFFSET_MAGIC, 8, b)?;
    let entries = body
        .chunks_exact(8)
        .map(|c| (u32_at(c, 0), u32_at(c, 4)))
        .collect();
    Ok((h, OffsetIndex { entries }))
}

pub fn encode_time_index(h: &IndexHeader, idx: &TimeIndex) -> Vec<u8> {
    let mut body = Vec::with_capacity(idx.entries.len() * 12);
    for &(t, r) in &idx.entries {
        body.extend_from_slice(&t.to_le_bytes());
        body.extend_from_slice(&r.to_le_bytes());
    }
    encode(TIME_MAGIC, h, idx.entries.len(), &body)
}

pub fn decode_time_index(b: &[u8]) -> Result<(IndexHeader, TimeIndex), String> {
    let (h, body) = decode(TIME_MAGIC, 12, b)?;
    let entries = body
        .chunks_exact(12)
        .map(|c| (u64_at(c, 0) as i64, u32_at(c, 8)))
        .collect();
    Ok((h, TimeIndex { entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_round_trip() {
        let mut o = OffsetIndex::default();
        o.push(10, 4096);
        o.push(20, 9000);
        assert_eq!(o.lookup(0), 0);
        assert_eq!(o.lookup(10), 4096);
        assert_eq!(o.lookup(19), 4096);
        assert_eq!(o.lookup(25), 9000);
        let mut t = TimeIndex::default();
        t.maybe_push(100, 10);
        t.maybe_push(100, 20);
        t.maybe_push(200, 30);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(150), 10);
        assert_eq!(t.lookup(201), 30);
        let h = IndexHeader {
            base_offset: 5,
            file_bytes: 12288,
            log_bytes: 10000,
            next_offset: 40,
            max_timestamp: 300,
        };
        let b = encode_offset_index(&h, &o);
        assert_eq!(decode_offset_index(&b), Ok((h, o)));
        let b = encode_time_index(&h, &t);
        assert_eq!(decode_time_index(&b), Ok((h, t)));
        let mut bad = b.clone();
        bad[HEADER_BYTES] ^= 1;
        assert!(decode_time_index(&bad).is_err());
        assert!(decode_time_index(&b[..b.len() - 1]).is_err());
        assert!(decode_offset_index(&b).is_err());
    }
}
