//! Record bytes as a list of pieces: what a fetch returns and a response
//! carries, so record bytes are never joined (copied) on their way from the
//! log or the batch cache to a socket.
//!
//! Owns: [`Records`], whole record batches back to back whose bytes are the
//! concatenation of its pieces (a piece boundary may fall anywhere, even
//! inside a batch header: the batch cache serves each batch as its stamped
//! header prefix and the producer's original bytes after it), and the walk
//! over their batch boundaries that byte budgets need.
//!
//! Invariants: no piece is empty; `len` is the sum of the pieces' lengths
//! (asserted in debug builds); equality is by content, not by how the bytes
//! are split.
//!
//! Must not know: where the pieces came from (disk, cache, a decoded frame).

use bytes::{Bytes, BytesMut};

use super::batch::{offsets, HEADER_BYTES, LENGTH_OVERHEAD_BYTES};

/// Whole record batches as pieces; see the module header.
#[derive(Clone, Default)]
pub struct Records {
    pieces: Vec<Bytes>,
    len: usize,
}

/// One whole batch inside a [`Records`]: bytes `[start, end)` of the
/// concatenation, offsets up to `next_offset` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub start: usize,
    pub end: usize,
    pub next_offset: u64,
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// Records made of `pieces` in order (empty pieces are dropped).
    pub fn from_pieces(pieces: impl IntoIterator<Item = Bytes>) -> Records {
        let mut r = Records::new();
        for p in pieces {
            r.push(p);
        }
        r
    }

    /// Appends one piece (ignored if empty).
    pub fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.len += piece.len();
        self.pieces.push(piece);
        self.debug_check();
    }

    /// Appends all of `other`'s pieces.
    pub fn append(&mut self, other: Records) {
        self.len += other.len;
        self.pieces.extend(other.pieces);
        self.debug_check();
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces in order (none empty).
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    pub fn into_pieces(self) -> Vec<Bytes> {
        self.pieces
    }

    /// The bytes as one buffer: no copy when there is at most one piece (a
    /// decoded frame, a disk read); one copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in many {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// Copies `out.len()` bytes starting at byte `pos`; false if they run
    /// past the end.
    fn copy_at(&self, mut pos: usize, out: &mut [u8]) -> bool {
        if pos.checked_add(out.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        let mut filled = 0;
        for p in &self.pieces {
            if filled == out.len() {
                break;
            }
            if pos >= p.len() {
                pos -= p.len();
                continue;
            }
            let n = (p.len() - pos).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&p[pos..pos + n]);
            filled += n;
            pos = 0;
        }
        filled == out.len()
    }

    /// The whole batches from the start, in order; stops at the first
    /// header that is incomplete or declares a length that does not fit.
    pub fn batch_spans(&self) -> impl Iterator<Item = BatchSpan> + '_ {
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            let mut head = [0u8; HEADER_BYTES];
            if !self.copy_at(pos, &mut head) {
                return None;
            }
            let be_u64 = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[at..at + 8]);
                u64::from_be_bytes(b)
            };
            let be_i32 = |at: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&head[at..at + 4]);
                i32::from_be_bytes(b)
            };
            let declared = usize::try_from(be_i32(offsets::LENGTH)).ok()?;
            let total = declared.checked_add(LENGTH_OVERHEAD_BYTES)?;
            let delta = u64::try_from(be_i32(offsets::LAST_OFFSET_DELTA)).ok()?;
            let end = pos.checked_add(total)?;
            if total < HEADER_BYTES || end > self.len {
                return None;
            }
            let span = BatchSpan {
                start: pos,
                end,
                next_offset: be_u64(offsets::BASE_OFFSET)
                    .checked_add(delta)?
                    .checked_add(1)?,
            };
            pos = end;
            Some(span)
        })
    }

    /// The first `end` bytes (sliced pieces, no copy).
    pub fn prefix(&self, end: usize) -> Records {
        if end >= self.len {
            return self.clone();
        }
        let mut out = Records::new();
        let mut left = end;
        for p in &self.pieces {
            if left == 0 {
                break;
            }
            let n = p.len().min(left);
            out.push(p.slice(..n));
            left -= n;
        }
        debug_assert_eq!(out.len, end);
        out
    }

    /// The longest prefix made of whole batches and at most `limit_bytes`
    /// long (possibly empty).
    pub fn whole_batches_within(&self, limit_bytes: usize) -> Records {
        if self.len <= limit_bytes {
            return self.clone();
        }
        let end = self
            .batch_spans()
            .take_while(|s| s.end <= limit_bytes)
            .last()
            .map_or(0, |s| s.end);
        self.prefix(end)
    }

    /// The first whole batch (empty if none is complete).
    pub fn first_batch(&self) -> Records {
        match self.batch_spans().next() {
            Some(s) => self.prefix(s.end),
            None => Records::new(),
        }
    }

    /// The offset after the last whole batch.
    pub fn next_offset(&self) -> Option<u64> {
        self.batch_spans().last().map(|s| s.next_offset)
    }

    fn debug_check(&self) {
        debug_assert!(self.pieces.iter().all(|p| !p.is_empty()), "empty piece");
        debug_assert_eq!(
            self.pieces.iter().map(Bytes::len).sum::<usize>(),
            self.len,
            "length is the sum of the pieces"
        );
    }
}

impl From<Bytes> for Records {
    fn from(b: Bytes) -> Records {
        Records::from_pieces([b])
    }
}

impl From<Vec<u8>> for Records {
    fn from(v: Vec<u8>) -> Records {
        Records::from(Bytes::from(v))
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.len == other.len
            && self
                .pieces
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.pieces.iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Records {}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Records({} bytes in {} pieces)",
            self.len,
            self.pieces.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{self, BatchBuilder};

    /// Three batches (1, 2 and 3 records, offsets 10..16) back to back.
    fn three() -> Bytes {
        let mut all = Vec::new();
        let mut base = 10u64;
        for n in 1..=3u32 {
            let mut b = BatchBuilder::new();
            for i in 0..n {
                b.push(0, None, Some(&[i as u8; 40][..]), &[]);
            }
            let mut bytes = b.finish().to_vec();
            batch::set_base_offset(&mut bytes, base);
            base += u64::from(n);
            all.extend_from_slice(&bytes);
        }
        Bytes::from(all)
    }

    /// The same bytes cut into pieces at every `step` bytes.
    fn split(b: &Bytes, step: usize) -> Records {
        Records::from_pieces(
            (0..b.len())
                .step_by(step)
                .map(|i| b.slice(i..(i + step).min(b.len()))),
        )
    }

    #[test]
    fn batch_walk_is_the_same_however_the_bytes_are_split() {
        let b = three();
        let whole = Records::from(b.clone());
        let spans: Vec<BatchSpan> = whole.batch_spans().collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[2].end, b.len());
        assert_eq!(
            spans.iter().map(|s| s.next_offset).collect::<Vec<_>>(),
            [11, 13, 16]
        );
        for step in [1, 7, 16, 61, 100] {
            let r = split(&b, step);
            assert_eq!(r, whole, "content equality ignores the split");
            assert_eq!(r.batch_spans().collect::<Vec<_>>(), spans, "step {step}");
            assert_eq!(r.to_bytes(), b);
            assert_eq!(r.next_offset(), Some(16));
            assert_eq!(r.first_batch().len(), spans[0].end);
            let within = r.whole_batches_within(spans[1].end + 5);
            assert_eq!(within.len(), spans[1].end);
            assert_eq!(within.to_bytes(), b.slice(..spans[1].end));
            assert!(r.whole_batches_within(spans[0].end - 1).is_empty());
        }
    }

    #[test]
    fn an_incomplete_batch_ends_the_walk() {
        let b = three();
        let cut = Records::from(b.slice(..b.len() - 1));
        assert_eq!(cut.batch_spans().count(), 2);
        assert_eq!(Records::from(b.slice(..20)).batch_spans().count(), 0);
        assert_eq!(Records::new().first_batch(), Records::new());
        assert_eq!(Records::new().next_offset(), None);
    }

    #[test]
    fn empty_pieces_are_dropped_and_a_single_piece_is_not_copied() {
        let b = three();
        let r = Records::from_pieces([Bytes::new(), b.clone(), Bytes::new()]);
        assert_eq!(r.pieces().len(), 1);
        assert_eq!(r.to_bytes().as_ptr(), b.as_ptr());
    }
}
