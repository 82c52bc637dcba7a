//! Reading a segment forward (split out of [`super`]): [`Cursor`] reads
//! batches from a position up to a limit, with CRC checks, and says where the
//! bytes stop being valid batches ([`Next::Invalid`]).
//!
//! Invariants: every batch a cursor returns is CRC-valid, lies below its
//! limit and (when told the expected base offset) continues the previous
//! one in offset.
//!
//! Must not know: high watermark, acks, epochs' meaning; how the segment is
//! written or recovered.

use bytes::{Bytes, BytesMut};

use super::{Segment, SCAN_READ_BYTES};
use crate::protocol::batch::{self, BatchHeader, HEADER_BYTES};
use crate::storage::StorageError;

/// Result of reading the next batch with a [`Cursor`].
#[derive(Debug)]
pub enum Next {
    Batch(BatchHeader, Bytes),
    End,
    /// The bytes at `pos` are not a valid batch (`reason` says why).
    Invalid {
        pos: u64,
        reason: String,
    },
}

/// Reads batches forward from a position, up to a limit, with CRC checks.
pub struct Cursor<'a> {
    seg: &'a Segment,
    pos: u64,
    limit: u64,
    buf: Bytes,
    buf_pos: u64,
    expected: Option<u64>,
    read_bytes: usize,
}

impl<'a> Cursor<'a> {
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// If `pieces` (batches this cursor returned, in order) are one
    /// contiguous run of its current read buffer, that run as one slice.
    pub fn buffered(&self, pieces: &[Bytes]) -> Option<Bytes> {
        let first = pieces.first()?;
        let base = self.buf.as_ptr() as usize;
        let start = (first.as_ptr() as usize).checked_sub(base)?;
        let mut end = start;
        for p in pieces {
            if p.as_ptr() as usize != base + end {
                return None;
            }
            end += p.len();
        }
        if end > self.buf.len() {
            return None;
        }
        Some(self.buf.slice(start..end))
    }

    /// Sets the minimum size of each read, in bytes (default 256 KiB).
    pub fn with_read_bytes(mut self, read_bytes: usize) -> Self {
        self.set_read_bytes(read_bytes);
        self
    }

    /// Starts the cursor with `buf`, bytes of the log read earlier from its
    /// position (a read-ahead): they are used as a read of the file would
    /// be, checks included.
    pub fn with_buffer(mut self, buf: Bytes) -> Self {
        self.buf_pos = self.pos;
        self.buf = buf;
        self
    }

    /// [`Cursor::with_read_bytes`] on the way (for the reads still to come).
    pub fn set_read_bytes(&mut self, read_bytes: usize) {
        self.read_bytes = read_bytes.max(HEADER_BYTES);
    }

    /// Makes `buf` cover `[pos, pos + need)`; `need <= limit - pos`.
    async fn fill(&mut self, need: usize) -> Result<(), StorageError> {
        let off = (self.pos - self.buf_pos) as usize;
        if self.pos >= self.buf_pos && off + need <= self.buf.len() {
            return Ok(());
        }
        if self.pos >= self.buf_pos && off < self.buf.len() {
            // The buffer holds the start of what is needed: read only from
            // its end on and join the two, so no byte is read twice (a
            // fetch whose last batch crossed the end of one read used to
            // read a whole `read_bytes` again from that batch's start).
            let have = self.buf.len() - off;
            let buf_end = self.buf_pos + self.buf.len() as u64;
            let more = if need <= HEADER_BYTES {
                self.read_bytes
            } else {
                need - have
            };
            let more = more.min((self.limit - buf_end) as usize);
            let rest = self.seg.file.read_at(buf_end, more).await?;
            let mut joined = BytesMut::with_capacity(have + rest.len());
            joined.extend_from_slice(&self.buf[off..]);
            joined.extend_from_slice(&rest);
            self.buf = joined.freeze();
            self.buf_pos = self.pos;
            return Ok(());
        }
        let want = need
            .max(self.read_bytes)
            .min((self.limit - self.pos) as usize);
        self.buf = self.seg.file.read_at(self.pos, want).await?;
        self.buf_pos = self.pos;
        Ok(())
    }

    /// The total length of the batch at the cursor, from its header alone
    /// (if the header is not buffered, one read of the cursor's read size,
    /// which a budgeted reader sets to what it may still take); None at the end
    /// or where no valid header is (then [`Cursor::next`] says what is
    /// wrong). Lets a reader with a byte budget stop before reading a batch
    /// it would not take.
    pub async fn peek_len(&mut self) -> Result<Option<u64>, StorageError> {
        if self.pos + HEADER_BYTES as u64 > self.limit {
            return Ok(None);
        }
        self.fill(HEADER_BYTES).await?;
        let off = (self.pos - self.buf_pos) as usize;
        if self.buf.len() < off + HEADER_BYTES {
            return Ok(None);
        }
        Ok(BatchHeader::parse(&self.buf[off..])
            .ok()
            .map(|h| h.total_bytes() as u64))
    }

    pub async fn next(&mut self) -> Result<Next, StorageError> {
        if self.pos >= self.limit {
            return Ok(Next::End);
        }
        let avail = self.limit - self.pos;
        let invalid = |pos, reason: String| Ok(Next::Invalid { pos, reason });
        if avail < HEADER_BYTES as u64 {
            return invalid(
                self.pos,
                format!("{avail} bytes left, less than a batch header"),
            );
        }
        self.fill(HEADER_BYTES).await?;
        let off = (self.pos - self.buf_pos) as usize;
        if self.buf.len() < off + HEADER_BYTES {
            return invalid(self.pos, "file shorter than expected".into());
        }
        let h = match BatchHeader::parse(&self.buf[off..]) {
            Ok(h) => h,
            Err(_) if self.buf[off + 8..off + 12] == [0; 4] => {
                return invalid(self.pos, "zero batch length (padding)".into())
            }
            Err(e) => return invalid(self.pos, format!("bad batch header: {e}")),
        };
        let len = h.total_bytes() as u64;
        if len > avail {
            return invalid(
                self.pos,
                format!("batch of {len} bytes runs past the end ({avail} bytes left)"),
            );
        }
        self.fill(len as usize).await?;
        let off = (self.pos - self.buf_pos) as usize;
        if self.buf.len() < off + len as usize {
            return invalid(self.pos, "file shorter than expected".into());
        }
        let bytes = self.buf.slice(off..off + len as usize);
        if let Err(e) = batch::verify_crc(&bytes) {
            return invalid(self.pos, e.to_string());
        }
        if h.record_count == 0 || h.record_count - 1 != h.last_offset_delta {
            return invalid(self.pos, "record count disagrees with offsets".into());
        }
        if let Some(exp) = self.expected {
            if h.base_offset != exp {
                return invalid(
                    self.pos,
                    format!(
                        "batch base offset {} where {exp} was expected",
                        h.base_offset
                    ),
                );
            }
        }
        self.expected = Some(h.next_offset());
        self.pos += len;
        Ok(Next::Batch(h, bytes))
    }
}

impl Segment {
    pub fn cursor(&self, pos: u64, limit: u64, expected: Option<u64>) -> Cursor<'_> {
        Cursor {
            seg: self,
            pos,
            limit,
            buf: Bytes::new(),
            buf_pos: pos,
            expected,
            read_bytes: SCAN_READ_BYTES,
        }
    }
}
