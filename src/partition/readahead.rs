//! Read-ahead for consumers catching up from disk: after a fetch that
//! continued where the previous disk fetch of the partition ended (a
//! sequential reader), the next range of the segment is read in the
//! background, so the disk works while the response travels and the
//! consumer decodes it, instead of each waiting for the other.
//!
//! Owns: the partition's one read-ahead slot ([`ReadAhead`]: the segment,
//! the position and offset it starts at, and the read in flight or done)
//! and the shard's read-ahead memory ([`MAX_SHARD_READAHEAD_BYTES`],
//! counted per shard thread: no sharing across shards).
//!
//! Invariants: a slot is used only by a fetch that starts exactly at its
//! offset in the same segment, and its bytes go through the same cursor
//! (CRC check, expected offsets) as a fresh read; a truncation or the
//! rollback of a failed write clears the slot before the files change, so
//! bytes that left the log are never served; the
//! bytes reserved by slots on a shard never exceed
//! [`MAX_SHARD_READAHEAD_BYTES`] (a slot gives its reservation back when
//! dropped).
//!
//! Must not know: connections, the wire format, other shards.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use crate::storage::segment::Segment;
use crate::storage::StorageError;

/// Most bytes of read-ahead held or in flight per shard, in bytes (beyond
/// it, fetches read on demand only).
pub const MAX_SHARD_READAHEAD_BYTES: usize = 64 * 1024 * 1024;

thread_local! {
    /// Bytes reserved by this shard's read-ahead slots.
    static SHARD_READAHEAD_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// A reservation of read-ahead memory, returned when dropped.
struct Reserved(usize);

impl Reserved {
    fn take(bytes: usize) -> Option<Reserved> {
        SHARD_READAHEAD_BYTES.with(|used| {
            let now = used.get();
            (now + bytes <= MAX_SHARD_READAHEAD_BYTES).then(|| {
                used.set(now + bytes);
                Reserved(bytes)
            })
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        SHARD_READAHEAD_BYTES.with(|used| {
            assert!(
                used.get() >= self.0,
                "read-ahead reservations out of balance"
            );
            used.set(used.get() - self.0);
        });
    }
}

/// One partition's read-ahead: `[pos, pos + len)` of segment `seg_base`,
/// where the batch at `offset` starts.
pub struct ReadAhead {
    pub seg_base: u64,
    pub pos: u64,
    pub offset: u64,
    /// The read; dropping the slot cancels it.
    read: glommio::Task<Result<Bytes, StorageError>>,
    _reserved: Reserved,
}

impl ReadAhead {
    /// Starts reading `len` bytes of `seg` at `pos` (where the batch at
    /// `offset` starts) in the background; None when the shard's
    /// read-ahead memory is spent.
    pub fn start(seg: Rc<Segment>, pos: u64, offset: u64, len: usize) -> Option<ReadAhead> {
        let reserved = Reserved::take(len)?;
        let seg_base = seg.base_offset();
        let read = glommio::spawn_local(async move { seg.read_range(pos, len).await });
        Some(ReadAhead {
            seg_base,
            pos,
            offset,
            read,
            _reserved: reserved,
        })
    }

    /// The bytes read (None if the read failed or was cancelled: the fetch
    /// then reads on demand, and reports any error itself).
    pub async fn bytes(self) -> Option<Bytes> {
        match self.read.await {
            Ok(b) if !b.is_empty() => Some(b),
            _ => None,
        }
    }
}

/// The bytes reserved by this shard's read-ahead slots (tests).
#[cfg(test)]
pub fn shard_readahead_bytes() -> usize {
    SHARD_READAHEAD_BYTES.with(Cell::get)
}
