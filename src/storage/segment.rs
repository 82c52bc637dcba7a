//! One segment: `{base_offset:020}.log` on O_DIRECT, plus its in-memory
//! sparse indexes (persisted when sealed or closed).
//!
//! Write path: the partial last page ("tail") of the log is kept in memory;
//! an append copies tail + new batches into one page-aligned buffer (zero
//! padding past the logical end) and writes whole pages from the aligned start
//! of the tail. Only after the write succeeds does the logical size move.
//!
//! Recovery of the active segment (`open_active`) is told the partition's
//! recovery point: invalid data at an offset at or past it is a torn tail and
//! is cut away; invalid data below it is damage to acknowledged data, left in
//! place and reported (the segment is then `damaged`: never written again).
//! A batch of another format (magic) refuses the open; nothing is truncated.
//!
//! Invariants: `log_bytes <= file_bytes` except transiently after a
//! truncation; `tail == log[align_down(log_bytes)..log_bytes]`; batches are
//! contiguous in offset from `base_offset` to `next_offset` (append asserts
//! each new batch starts at the previous next offset); index entries point at
//! batch starts below `log_bytes`; what `append` writes are the stamped
//! bytes it was given, CRC-valid (debug builds re-check each copy).
//!
//! Zero-ahead: a small append that would move the file's size costs more
//! than the write itself (the kernel cannot complete an extending O_DIRECT
//! write inline, io_uring hands it to a worker thread, and the next
//! fdatasync must also write the inode). So alongside a small append the
//! segment writes zeros over the next [`ZERO_AHEAD_BYTES`] past its data,
//! and the appends after it are overwrites: completed inline, and their
//! fdatasync only flushes the device (docs/decisions/0014, measured by
//! `corelog-bench limits`). The zeros read as no batch (magic 0), so to
//! recovery they are padding, as the zeros after the last batch in its
//! page always were; a sealed or closed segment is trimmed back to its
//! data's last page.
//!
//! Reading forward is in [`cursor`]; opening, recovery and truncation are in
//! [`recovery`].

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::file::LogFile;
use super::index::{self, IndexHeader, OffsetIndex, TimeIndex};
use super::{align_down, segment_file_name, StorageError};
use crate::io::Io;
use crate::protocol::batch::{self, BatchHeader, Stamp, HEADER_BYTES};

mod cursor;
mod recovery;

pub use cursor::{Cursor, Next};

/// Bytes read per I/O when scanning a segment.
const SCAN_READ_BYTES: usize = 256 * 1024;

/// Step in which the active segment's blocks are reserved ahead of the
/// writes, in bytes (fallocate KEEP_SIZE; at most this much is left reserved
/// past the end of a sealed segment).
pub const PREALLOCATE_STEP_BYTES: u64 = 1024 * 1024;

/// Bytes zeroed past the data ahead of small appends (see the module doc).
pub const ZERO_AHEAD_BYTES: u64 = 512 * 1024;

/// Appends writing at least this many bytes do not zero ahead: their own
/// size amortizes the cost of extending the file, and zeroing would double
/// the bytes a disk near its bandwidth limit must write.
pub const ZERO_AHEAD_MAX_WRITE_BYTES: u64 = 128 * 1024;

/// Mutable state of a segment (borrowed only in synchronous sections).
#[derive(Debug)]
struct SegState {
    log_bytes: u64,
    file_bytes: u64,
    tail: Vec<u8>,
    next_offset: u64,
    max_timestamp: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    first_append: Option<Instant>,
    sealed: bool,
    /// Recovery left acknowledged damage in place: never written again.
    damaged: bool,
}

/// State to return to when a group write or its fdatasync fails.
#[derive(Debug, Clone)]
pub struct Mark {
    log_bytes: u64,
    tail: Vec<u8>,
    next_offset: u64,
    max_timestamp: i64,
    offset_entries: usize,
    time_entries: usize,
    bytes_since_index: u64,
    first_append: Option<Instant>,
}

pub struct Segment {
    base_offset: u64,
    dir: PathBuf,
    index_interval_bytes: u32,
    file: LogFile,
    io: Io,
    st: RefCell<SegState>,
    /// Blocks are reserved up to here (u64::MAX: the file system refused,
    /// do not try again for this segment).
    preallocated_bytes: Cell<u64>,
    /// The file holds zeros (or data) up to here, past `file_bytes` when
    /// appends have zeroed ahead; 0 when unknown (after a truncation).
    zeroed_to: Cell<u64>,
    /// Data writes made without write-through (counted before each starts),
    /// and how many of them the last successful fdatasync covered: the
    /// file needs a sync only while these differ.
    plain_writes: Cell<u64>,
    synced_plain_writes: Cell<u64>,
}

fn note_batch(st: &mut SegState, base: u64, interval: u32, pos: u64, h: &BatchHeader) {
    debug_assert_eq!(h.base_offset, st.next_offset, "offsets not contiguous");
    let rel = (h.base_offset - base) as u32;
    if st.bytes_since_index >= interval as u64 {
        st.offset_index.push(rel, pos as u32);
        st.time_index.maybe_push(st.max_timestamp, rel);
        st.bytes_since_index = 0;
    }
    st.bytes_since_index += h.total_bytes() as u64;
    st.max_timestamp = st.max_timestamp.max(h.max_timestamp_ms);
    st.next_offset = h.next_offset();
}

fn empty_state(base: u64) -> SegState {
    SegState {
        log_bytes: 0,
        file_bytes: 0,
        tail: Vec::new(),
        next_offset: base,
        max_timestamp: i64::MIN,
        offset_index: OffsetIndex::default(),
        time_index: TimeIndex::default(),
        bytes_since_index: 0,
        first_append: None,
        sealed: false,
        damaged: false,
    }
}

impl Segment {
    fn path_for(&self, ext: &str) -> PathBuf {
        self.dir.join(segment_file_name(self.base_offset, ext))
    }

    pub fn log_path(&self) -> &Path {
        self.file.path()
    }

    /// The segment's log, offset index and time index paths.
    pub fn file_paths(&self) -> [PathBuf; 3] {
        [
            self.path_for("log"),
            self.path_for("index"),
            self.path_for("timeindex"),
        ]
    }

    async fn open_file(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u32,
        io: Io,
        create: bool,
    ) -> Result<Segment, StorageError> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = LogFile::open(&io.disk, &path, create, false, io.faults.clone()).await?;
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            index_interval_bytes,
            file,
            io,
            st: RefCell::new(empty_state(base_offset)),
            preallocated_bytes: Cell::new(0),
            zeroed_to: Cell::new(0),
            plain_writes: Cell::new(0),
            synced_plain_writes: Cell::new(0),
        })
    }

    /// Creates a new, empty segment file (the caller syncs the directory).
    pub async fn create(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u32,
        io: Io,
    ) -> Result<Segment, StorageError> {
        let seg = Self::open_file(dir, base_offset, index_interval_bytes, io, true).await?;
        let size = seg.file.size().await?;
        if size != 0 {
            seg.file.truncate(0).await?;
        }
        Ok(seg)
    }

    /// Writes `.index` and `.timeindex` (header + CRC) and syncs them.
    pub async fn persist_indexes(&self) -> Result<(), StorageError> {
        let (o, t) = {
            let st = self.st.borrow();
            let h = IndexHeader {
                base_offset: self.base_offset,
                file_bytes: st.file_bytes,
                log_bytes: st.log_bytes,
                next_offset: st.next_offset,
                max_timestamp: st.max_timestamp,
            };
            (
                index::encode_offset_index(&h, &st.offset_index),
                index::encode_time_index(&h, &st.time_index),
            )
        };
        for (ext, bytes) in [("index", o), ("timeindex", t)] {
            let path = self.path_for(ext);
            let f = LogFile::open(&self.io.disk, &path, true, true, self.io.faults.clone()).await?;
            let mut buf = f.alloc_buffer(bytes.len());
            buf.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
            f.write_at(buf, 0).await?;
            f.truncate(bytes.len() as u64).await?;
            f.fdatasync().await?;
            f.close().await?;
        }
        Ok(())
    }

    /// Appends whole batches. A batch with a [`Stamp`] is stamped (base
    /// offset and leader epoch, the one stamping step) in the copy this write
    /// makes; one without is written as given (already stamped: by the
    /// writer's group buffer, or by the leader for a replica). Each batch
    /// must start at the previous one's next offset (asserted: a bug, not
    /// input). On error nothing changes logically (call
    /// [`Segment::rollback`] to also drop what a failed fdatasync may not
    /// cover).
    ///
    /// `write_through` (flush=always): the write should be durable when it
    /// completes. It goes through the file's O_DSYNC handle when it only
    /// overwrites pages zeroed ahead (an overwrite needs no metadata, so
    /// the device flush is the whole cost); otherwise it is a plain write
    /// and [`Segment::sync_if_needed`] syncs it.
    pub async fn append(
        &self,
        batches: &[(Bytes, Option<Stamp>)],
        write_through: bool,
    ) -> Result<(), StorageError> {
        let (start, buf, new_tail, new_log_bytes, metas) = {
            let st = self.st.borrow();
            assert!(!st.sealed, "append to a sealed segment");
            assert!(!st.damaged, "append to a segment with acknowledged damage");
            let start = align_down(st.log_bytes);
            let total: usize = batches.iter().map(|(b, _)| b.len()).sum();
            // Tail and batches overwrite the front; only the padding after
            // them needs zeroing.
            let mut buf = self
                .file
                .alloc_buffer_zeroed_from(st.tail.len() + total, st.tail.len() + total);
            let bytes = buf.as_bytes_mut();
            bytes[..st.tail.len()].copy_from_slice(&st.tail);
            let mut at = st.tail.len();
            let mut metas = Vec::with_capacity(batches.len());
            let mut expect = st.next_offset;
            for (b, stamp) in batches {
                let dst = &mut bytes[at..at + b.len()];
                dst.copy_from_slice(b);
                if let Some(s) = stamp {
                    batch::stamp(dst, *s);
                }
                match BatchHeader::parse(dst) {
                    Ok(h) => {
                        assert_eq!(
                            h.base_offset, expect,
                            "a batch must start at the previous batch's next offset"
                        );
                        debug_assert!(
                            batch::verify_crc(dst).is_ok(),
                            "a stamped batch must stay CRC-valid"
                        );
                        expect = h.next_offset();
                        metas.push((start + at as u64, h));
                    }
                    Err(e) => {
                        return Err(StorageError::Corrupt {
                            file: self.log_path().to_path_buf(),
                            offset: expect,
                            reason: format!("unparsable batch queued for write: {e}"),
                        })
                    }
                }
                at += b.len();
            }
            let new_log_bytes = start + at as u64;
            let tail_from = (align_down(new_log_bytes) - start) as usize;
            let new_tail = bytes[tail_from..at].to_vec();
            (start, buf, new_tail, new_log_bytes, metas)
        };
        let written_end = start + buf.len() as u64;
        let zero = self.zero_ahead_range(start, written_end);
        self.preallocate_for(zero.map_or(written_end, |(_, to)| to))
            .await;
        let through = write_through
            && written_end <= self.zeroed_to.get()
            && self.file.open_write_through().await;
        if !through {
            self.plain_writes.set(self.plain_writes.get() + 1);
        }
        let data = async {
            if through {
                self.file.write_through_at(buf, start).await
            } else {
                self.file.write_at(buf, start).await
            }
        };
        match zero {
            None => data.await?,
            Some((from, to)) => {
                assert!(from >= written_end, "zeroing must not overlap the data");
                let (data, zeros) = futures_lite::future::zip(
                    data,
                    self.file.write_zeros(from, (to - from) as usize),
                )
                .await;
                match zeros {
                    Ok(()) => self.zeroed_to.set(to),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not zero ahead; appends extend the file")
                    }
                }
                data?;
            }
        }
        let mut st = self.st.borrow_mut();
        for (pos, h) in &metas {
            note_batch(
                &mut st,
                self.base_offset,
                self.index_interval_bytes,
                *pos,
                h,
            );
        }
        debug_assert!(new_log_bytes >= st.log_bytes, "positions must be monotonic");
        st.log_bytes = new_log_bytes;
        st.file_bytes = st.file_bytes.max(written_end);
        st.tail = new_tail;
        let now = self.io.clock.now();
        st.first_append.get_or_insert(now);
        Ok(())
    }

    /// The range to zero alongside a write of `[start, end)`, if it is a
    /// small write and less than half of [`ZERO_AHEAD_BYTES`] is zeroed past
    /// its end: from the end of what is zeroed (never below `end`) to
    /// `end + ZERO_AHEAD_BYTES`.
    fn zero_ahead_range(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        if end - start >= ZERO_AHEAD_MAX_WRITE_BYTES {
            return None;
        }
        let zeroed = self.zeroed_to.get();
        if zeroed >= end + ZERO_AHEAD_BYTES / 2 {
            return None;
        }
        let from = zeroed.max(end);
        let to = end + ZERO_AHEAD_BYTES;
        debug_assert_eq!(from % super::PAGE_BYTES, 0, "zeroing starts on a page");
        Some((from, to))
    }

    /// Reserves blocks ahead of a write ending at `end` (best effort: a file
    /// system without fallocate just allocates on write). Out of space
    /// (ENOSPC) is not remembered: the write itself may still fit (it needs
    /// less than a step), and the next write tries to reserve again, so
    /// preallocation resumes once space is freed. Any other failure means
    /// the file system cannot preallocate: not tried again for this segment.
    async fn preallocate_for(&self, end: u64) {
        if end <= self.preallocated_bytes.get() {
            return;
        }
        let target = super::align_up(end) + PREALLOCATE_STEP_BYTES;
        match self.file.pre_allocate(target).await {
            Ok(()) => self.preallocated_bytes.set(target),
            Err(e) if e.is_storage_full() => {
                tracing::debug!(error = %e, "no space to preallocate; the write allocates");
            }
            Err(e) => {
                tracing::debug!(error = %e, "preallocation not available; allocating on write");
                self.preallocated_bytes.set(u64::MAX);
            }
        }
    }

    /// Makes the file's size, as the indexes record it, end at the last
    /// page of the data (dropping zeroed-ahead pages from the record; the
    /// file itself is trimmed by [`Segment::release_preallocation`]). Called
    /// before the indexes of a sealed or closing segment are persisted.
    pub fn end_at_data(&self) {
        let mut st = self.st.borrow_mut();
        st.file_bytes = super::align_up(st.log_bytes);
        debug_assert!(st.log_bytes <= st.file_bytes);
    }

    /// Gives back the blocks reserved past the end of the file (a truncate
    /// to the current size drops a KEEP_SIZE preallocation on ext4/xfs) and
    /// the zeroed-ahead pages past the data, so a sealed segment holds only
    /// its own pages. Best effort: the data is unchanged either way.
    pub async fn release_preallocation(&self) {
        let reserved = self.preallocated_bytes.get();
        let size = self.st.borrow().file_bytes;
        let zeroed_past = self.zeroed_to.get() > size;
        if !zeroed_past && (reserved == 0 || reserved == u64::MAX) {
            return;
        }
        match self.file.truncate(size).await {
            Ok(()) => {
                if reserved != u64::MAX {
                    self.preallocated_bytes.set(0);
                }
                self.zeroed_to.set(0);
            }
            Err(e) => warn!(error = %e, "could not release preallocated blocks"),
        }
    }

    pub fn mark(&self) -> Mark {
        let st = self.st.borrow();
        Mark {
            log_bytes: st.log_bytes,
            tail: st.tail.clone(),
            next_offset: st.next_offset,
            max_timestamp: st.max_timestamp,
            offset_entries: st.offset_index.entries.len(),
            time_entries: st.time_index.entries.len(),
            bytes_since_index: st.bytes_since_index,
            first_append: st.first_append,
        }
    }

    /// Forgets everything appended after `m` and truncates the file to it
    /// (best effort: a later write rewrites the tail page anyway).
    pub async fn rollback(&self, m: Mark) {
        {
            let mut st = self.st.borrow_mut();
            st.log_bytes = m.log_bytes;
            st.tail = m.tail;
            st.next_offset = m.next_offset;
            st.max_timestamp = m.max_timestamp;
            st.offset_index.entries.truncate(m.offset_entries);
            st.time_index.entries.truncate(m.time_entries);
            st.bytes_since_index = m.bytes_since_index;
            st.first_append = m.first_append;
            st.file_bytes = m.log_bytes;
        }
        self.zeroed_to.set(0);
        if let Err(e) = self.file.truncate(m.log_bytes).await {
            warn!(error = %e, "could not truncate after a failed write");
        }
        // The truncate may have released reserved blocks: reserve again.
        if self.preallocated_bytes.get() != u64::MAX {
            self.preallocated_bytes.set(0);
        }
    }

    pub async fn fdatasync(&self) -> Result<(), StorageError> {
        let covers = self.plain_writes.get();
        self.file.fdatasync().await?;
        self.synced_plain_writes.set(covers);
        Ok(())
    }

    /// fdatasyncs the file if a completed data write may not be durable yet
    /// (a plain write since the last sync); returns whether it synced.
    /// Write-through writes are durable on completion and need none.
    pub async fn sync_if_needed(&self) -> Result<bool, StorageError> {
        if self.plain_writes.get() == self.synced_plain_writes.get() {
            return Ok(false);
        }
        self.fdatasync().await?;
        Ok(true)
    }

    /// Marks the segment read-only (after its indexes are persisted and the
    /// next segment exists) and drops its write-through handle: a sealed
    /// segment holds one file descriptor.
    pub fn mark_sealed(&self) {
        self.st.borrow_mut().sealed = true;
        self.file.release_write_through();
    }

    /// Whether the segment holds a write-through handle (tests).
    #[cfg(test)]
    pub fn has_write_through_handle(&self) -> bool {
        self.file.has_write_through()
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> u64 {
        self.st.borrow().next_offset
    }
    pub fn log_bytes(&self) -> u64 {
        self.st.borrow().log_bytes
    }
    pub fn max_timestamp(&self) -> i64 {
        self.st.borrow().max_timestamp
    }
    pub fn is_empty(&self) -> bool {
        self.st.borrow().log_bytes == 0
    }
    pub fn first_append(&self) -> Option<Instant> {
        self.st.borrow().first_append
    }
    pub fn is_sealed(&self) -> bool {
        self.st.borrow().sealed
    }
    /// Recovery left acknowledged damage in this segment (never written).
    pub fn is_damaged(&self) -> bool {
        self.st.borrow().damaged
    }

    /// Position of a batch at or before the one holding `offset`.
    pub fn position_for_offset(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        self.st.borrow().offset_index.lookup(rel) as u64
    }

    /// Position from which a scan for the first timestamp >= `t` may start.
    pub fn position_for_timestamp(&self, t: i64) -> u64 {
        let st = self.st.borrow();
        let rel = st.time_index.lookup(t);
        st.offset_index.lookup(rel) as u64
    }

    /// The first offset-index entry at a position after `pos`, as
    /// (position, offset): where a scan can resume past damage at `pos`.
    pub fn index_entry_after(&self, pos: u64) -> Option<(u64, u64)> {
        let st = self.st.borrow();
        let i = st
            .offset_index
            .entries
            .partition_point(|&(_, p)| (p as u64) <= pos);
        st.offset_index
            .entries
            .get(i)
            .map(|&(rel, p)| (p as u64, self.base_offset + rel as u64))
    }

    /// Up to `len` bytes of the log from `pos`, no further than its logical
    /// end (raw: a cursor checks what it takes from them).
    pub async fn read_range(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        let end = self.log_bytes();
        if pos >= end {
            return Ok(Bytes::new());
        }
        let len = len.min((end - pos) as usize);
        self.file.read_at(pos, len).await
    }

    /// The batch header at `pos` as stored (not CRC-checked), if one parses
    /// and ends within the logical size.
    pub async fn header_at(&self, pos: u64) -> Result<Option<BatchHeader>, StorageError> {
        let limit = self.log_bytes();
        if pos + HEADER_BYTES as u64 > limit {
            return Ok(None);
        }
        let b = self.file.read_at(pos, HEADER_BYTES).await?;
        Ok(BatchHeader::parse(&b)
            .ok()
            .filter(|h| h.total_bytes() >= HEADER_BYTES && pos + h.total_bytes() as u64 <= limit))
    }

    #[cfg(test)]
    pub fn index_entries(&self) -> (usize, usize) {
        let st = self.st.borrow();
        (st.offset_index.entries.len(), st.time_index.entries.len())
    }
}
