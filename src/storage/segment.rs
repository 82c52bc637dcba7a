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

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::file::LogFile;
use super::index::{self, IndexHeader, OffsetIndex, TimeIndex};
use super::scan::{CorruptBatch, RecoveryStats};
use super::{align_down, segment_file_name, StorageError};
use crate::io::Io;
use crate::protocol::batch::{self, BatchHeader, Stamp, HEADER_BYTES};

/// Bytes read per I/O when scanning a segment.
const SCAN_READ_BYTES: usize = 256 * 1024;

/// Step in which the active segment's blocks are reserved ahead of the
/// writes, in bytes (fallocate KEEP_SIZE; at most this much is left reserved
/// past the end of a sealed segment).
pub const PREALLOCATE_STEP_BYTES: u64 = 1024 * 1024;

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
}

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
        self.read_bytes = read_bytes.max(HEADER_BYTES);
        self
    }

    /// Makes `buf` cover `[pos, pos + need)`; `need <= limit - pos`.
    async fn fill(&mut self, need: usize) -> Result<(), StorageError> {
        let off = (self.pos - self.buf_pos) as usize;
        if self.pos >= self.buf_pos && off + need <= self.buf.len() {
            return Ok(());
        }
        let want = need
            .max(self.read_bytes)
            .min((self.limit - self.pos) as usize);
        self.buf = self.seg.file.read_at(self.pos, want).await?;
        self.buf_pos = self.pos;
        Ok(())
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
        let len = h.batch_length as u64;
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

fn note_batch(st: &mut SegState, base: u64, interval: u32, pos: u64, h: &BatchHeader) {
    debug_assert_eq!(h.base_offset, st.next_offset, "offsets not contiguous");
    let rel = (h.base_offset - base) as u32;
    if st.bytes_since_index >= interval as u64 {
        st.offset_index.push(rel, pos as u32);
        st.time_index.maybe_push(st.max_timestamp, rel);
        st.bytes_since_index = 0;
    }
    st.bytes_since_index += h.batch_length as u64;
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

    /// Opens a sealed segment: loads its indexes, or rebuilds them by
    /// scanning the log if they are missing, stale or inconsistent.
    pub async fn open_sealed(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u32,
        io: Io,
        stats: &mut RecoveryStats,
    ) -> Result<Segment, StorageError> {
        let seg = Self::open_file(dir, base_offset, index_interval_bytes, io, false).await?;
        let file_bytes = seg.file.size().await?;
        seg.refuse_foreign_format(0, file_bytes).await?;
        match seg.load_indexes(file_bytes).await {
            Ok(()) => {}
            Err(reason) => {
                warn!(file = %seg.log_path().display(), %reason, "rebuilding segment indexes");
                stats.indexes_rebuilt += 1;
                stats.segments_scanned += 1;
                let (good_end, stop) = seg.scan(file_bytes).await?;
                stats.bytes_scanned += good_end;
                if let Some(reason) = stop {
                    seg.refuse_foreign_format(good_end, file_bytes).await?;
                    if !seg.is_pure_padding(good_end, file_bytes).await? {
                        warn!(file = %seg.log_path().display(), position = good_end,
                            offset = seg.next_offset(), bytes_ignored = file_bytes - good_end, %reason,
                            "sealed segment has invalid data; serving only the part before it (the file is kept)");
                        stats.sealed_damage.push(CorruptBatch {
                            file: seg.log_path().to_path_buf(),
                            position: good_end,
                            offset: seg.next_offset(),
                            reason,
                        });
                    }
                }
                // The rebuilt indexes are in memory; writing them only saves
                // the next open a scan (it can fail, e.g. on a full disk).
                if let Err(e) = seg.persist_indexes().await {
                    warn!(file = %seg.log_path().display(), error = %e,
                        "could not write the rebuilt indexes; using them from memory");
                }
            }
        }
        seg.st.borrow_mut().sealed = true;
        Ok(seg)
    }

    /// Opens the active (last) segment: scans every batch, truncates a torn or
    /// corrupt tail, rebuilds the in-memory indexes.
    ///
    /// `recovery_point`: every offset below it was fdatasynced before the
    /// crash. Invalid data at an offset below it is not a torn tail: it is
    /// left in place, recorded in `stats.acked_damage`, and the segment is
    /// served up to it and never written again.
    pub async fn open_active(
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u32,
        io: Io,
        recovery_point: u64,
        stats: &mut RecoveryStats,
    ) -> Result<Segment, StorageError> {
        let seg = Self::open_file(dir, base_offset, index_interval_bytes, io, true).await?;
        let file_bytes = seg.file.size().await?;
        // After a clean close the indexes describe this very file: rescan
        // only from the last indexed batch (the bytes before it never change:
        // appends only rewrite the tail page with the same prefix).
        let mut scan_from = 0;
        let (good_end, stop) = match seg.load_indexes(file_bytes).await {
            Ok(()) => {
                let (pos, offset) = {
                    let mut st = seg.st.borrow_mut();
                    st.bytes_since_index = 0;
                    match st.offset_index.entries.last() {
                        Some(&(rel, pos)) => (pos as u64, base_offset + rel as u64),
                        None => {
                            st.max_timestamp = i64::MIN;
                            (0, base_offset)
                        }
                    }
                };
                scan_from = pos;
                seg.scan_from(pos, offset, file_bytes).await?
            }
            Err(_) => {
                if file_bytes > 0 {
                    stats.indexes_rebuilt += 1;
                }
                seg.scan(file_bytes).await?
            }
        };
        stats.segments_scanned += 1;
        stats.bytes_scanned += good_end.saturating_sub(scan_from);
        if let Some(reason) = stop {
            seg.refuse_foreign_format(good_end, file_bytes).await?;
            let next = seg.next_offset();
            if !seg.is_pure_padding(good_end, file_bytes).await? {
                if next < recovery_point {
                    // Acknowledged (fdatasynced) data is damaged: never cut it.
                    stats.acked_damage = Some(CorruptBatch {
                        file: seg.log_path().to_path_buf(),
                        position: good_end,
                        offset: next,
                        reason,
                    });
                    seg.st.borrow_mut().damaged = true;
                } else {
                    stats.bytes_truncated += file_bytes - good_end;
                    warn!(file = %seg.log_path().display(), bytes_truncated = file_bytes - good_end,
                        last_good_offset = if next > base_offset { (next - 1) as i64 } else { -1 },
                        position = good_end, recovery_point, %reason,
                        "truncating torn or corrupt log tail (past the recovery point)");
                    seg.file.truncate(good_end).await?;
                    seg.st.borrow_mut().file_bytes = good_end;
                }
            }
        } else if good_end == 0 {
            seg.refuse_foreign_format(0, file_bytes).await?;
        }
        seg.load_tail(good_end).await?;
        if seg.st.borrow().log_bytes > 0 {
            // The age of a recovered segment counts from the restart.
            seg.st.borrow_mut().first_append = Some(seg.io.clock.now());
        }
        Ok(seg)
    }

    /// Reads the partial last page up to `good_end` into memory (the tail
    /// the next append rewrites).
    async fn load_tail(&self, good_end: u64) -> Result<(), StorageError> {
        let seg = self;
        let tail_start = align_down(good_end);
        let tail = seg
            .file
            .read_at(tail_start, (good_end - tail_start) as usize)
            .await?;
        if tail.len() as u64 != good_end - tail_start {
            return Err(StorageError::Corrupt {
                file: seg.log_path().to_path_buf(),
                offset: seg.next_offset(),
                reason: "short read of the tail page".into(),
            });
        }
        seg.st.borrow_mut().tail = tail.to_vec();
        Ok(())
    }

    /// Fails with [`StorageError::UnknownFormat`] when the bytes at batch
    /// boundary `pos` are a batch of another format (`batch::foreign_format`).
    async fn refuse_foreign_format(&self, pos: u64, file_bytes: u64) -> Result<(), StorageError> {
        if pos + HEADER_BYTES as u64 > file_bytes {
            return Ok(());
        }
        let head = self.file.read_at(pos, HEADER_BYTES).await?;
        let at_start = pos == 0;
        if batch::foreign_format(&head, true).is_none() {
            return Ok(());
        }
        let bytes = if at_start {
            head
        } else {
            // The whole declared batch (bounded by the file) for the CRC check.
            let len = batch::declared_length(&head).unwrap_or(0) as u64;
            let len = len.clamp(HEADER_BYTES as u64, file_bytes - pos);
            self.file.read_at(pos, len as usize).await?
        };
        match batch::foreign_format(&bytes, at_start) {
            Some(magic) => Err(StorageError::UnknownFormat {
                file: self.log_path().to_path_buf(),
                position: pos,
                magic,
            }),
            None => Ok(()),
        }
    }

    async fn is_pure_padding(&self, good_end: u64, file_bytes: u64) -> Result<bool, StorageError> {
        if file_bytes > super::align_up(good_end) {
            return Ok(false);
        }
        let rest = self
            .file
            .read_at(good_end, (file_bytes - good_end) as usize)
            .await?;
        Ok(rest.iter().all(|&b| b == 0))
    }

    /// Rebuilds state by reading every batch; returns the end of the last
    /// good batch and why the scan stopped early (None: reached the end).
    async fn scan(&self, file_bytes: u64) -> Result<(u64, Option<String>), StorageError> {
        *self.st.borrow_mut() = empty_state(self.base_offset);
        self.scan_from(0, self.base_offset, file_bytes).await
    }

    /// Scans from the batch at `pos` holding `offset`, on top of the state
    /// already loaded (which must describe everything before `pos`).
    async fn scan_from(
        &self,
        pos: u64,
        offset: u64,
        file_bytes: u64,
    ) -> Result<(u64, Option<String>), StorageError> {
        self.st.borrow_mut().next_offset = offset;
        let mut cur = self.cursor(pos, file_bytes, Some(offset));
        let stop = loop {
            let pos = cur.position();
            match cur.next().await? {
                Next::Batch(h, _) => {
                    let mut st = self.st.borrow_mut();
                    note_batch(
                        &mut st,
                        self.base_offset,
                        self.index_interval_bytes,
                        pos,
                        &h,
                    );
                }
                Next::End => break None,
                Next::Invalid { reason, .. } => break Some(reason),
            }
        };
        let good_end = cur.position();
        let mut st = self.st.borrow_mut();
        st.log_bytes = good_end;
        st.file_bytes = file_bytes;
        Ok((good_end, stop))
    }

    async fn read_whole(&self, ext: &str) -> Result<Bytes, String> {
        let path = self.path_for(ext);
        let f = LogFile::open(&self.io.disk, &path, false, false, self.io.faults.clone())
            .await
            .map_err(|e| e.to_string())?;
        let size = f.size().await.map_err(|e| e.to_string())?;
        let b = f.read_at(0, size as usize).await.map_err(|e| e.to_string());
        let _ = f.close().await;
        b
    }

    async fn load_indexes(&self, file_bytes: u64) -> Result<(), String> {
        let (oh, oi) = index::decode_offset_index(&self.read_whole("index").await?)
            .map_err(|e| format!(".index: {e}"))?;
        let (th, ti) = index::decode_time_index(&self.read_whole("timeindex").await?)
            .map_err(|e| format!(".timeindex: {e}"))?;
        if oh != th {
            return Err("offset and time index headers disagree".into());
        }
        if oh.base_offset != self.base_offset {
            return Err(format!("index is for base offset {}", oh.base_offset));
        }
        if oh.file_bytes != file_bytes || oh.log_bytes > file_bytes {
            return Err(format!(
                "index describes a {}-byte log, the file has {file_bytes}",
                oh.file_bytes
            ));
        }
        let next_rel = oh
            .next_offset
            .checked_sub(self.base_offset)
            .filter(|r| *r <= u32::MAX as u64 + 1)
            .ok_or("index next_offset out of range")?;
        if !oi.is_consistent(oh.log_bytes, next_rel) || !ti.is_consistent(next_rel) {
            return Err("index entries inconsistent with the log".into());
        }
        let mut st = self.st.borrow_mut();
        st.log_bytes = oh.log_bytes;
        st.file_bytes = file_bytes;
        st.next_offset = oh.next_offset;
        st.max_timestamp = oh.max_timestamp;
        st.offset_index = oi;
        st.time_index = ti;
        Ok(())
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
    pub async fn append(&self, batches: &[(Bytes, Option<Stamp>)]) -> Result<(), StorageError> {
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
        self.preallocate_for(written_end).await;
        self.file.write_at(buf, start).await?;
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

    /// Gives back the blocks reserved past the end of the file (a truncate
    /// to the current size drops a KEEP_SIZE preallocation on ext4/xfs), so
    /// a sealed segment holds only its own pages. Best effort: the data is
    /// unchanged either way.
    pub async fn release_preallocation(&self) {
        let reserved = self.preallocated_bytes.get();
        if reserved == 0 || reserved == u64::MAX {
            return;
        }
        let size = self.st.borrow().file_bytes;
        match self.file.truncate(size).await {
            Ok(()) => self.preallocated_bytes.set(0),
            Err(e) => warn!(error = %e, "could not release preallocated blocks"),
        }
    }

    /// Where a cut that drops `offset` and everything after it goes: the
    /// position and base offset of the first batch holding `offset` or a
    /// later one (`None`: nothing in this segment does).
    pub async fn cut_point(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        let limit = self.log_bytes();
        let mut cur = self.cursor(self.position_for_offset(offset), limit, None);
        loop {
            let pos = cur.position();
            match cur.next().await? {
                Next::Batch(h, _) if h.last_offset() >= offset => {
                    return Ok(Some((pos, h.base_offset)))
                }
                Next::Batch(..) => {}
                Next::End => return Ok(None),
                Next::Invalid { pos, reason } => {
                    return Err(StorageError::Corrupt {
                        file: self.log_path().to_path_buf(),
                        offset,
                        reason: format!(
                            "cannot truncate past invalid data at byte {pos}: {reason}"
                        ),
                    })
                }
            }
        }
    }

    /// Cuts the segment at batch boundary `cut` (from [`Segment::cut_point`])
    /// durably (truncate + fdatasync), rebuilds its state by a scan and
    /// rewrites its indexes; it becomes writable (unsealed). Returns the new
    /// next offset. The caller removes every later segment first.
    pub async fn truncate_at(&self, cut: u64) -> Result<u64, StorageError> {
        assert!(cut <= self.log_bytes(), "a cut inside the segment");
        self.file.truncate(cut).await?;
        self.file.fdatasync().await?;
        let (good_end, stop) = self.scan(cut).await?;
        if let Some(reason) = stop {
            return Err(StorageError::Corrupt {
                file: self.log_path().to_path_buf(),
                offset: self.next_offset(),
                reason: format!("after truncation to byte {cut}: {reason}"),
            });
        }
        debug_assert_eq!(
            good_end, cut,
            "the scan reads back exactly the kept batches"
        );
        self.load_tail(cut).await?;
        {
            let mut st = self.st.borrow_mut();
            st.sealed = false;
            st.first_append = (cut > 0).then(|| self.io.clock.now());
        }
        if self.preallocated_bytes.get() != u64::MAX {
            self.preallocated_bytes.set(0);
        }
        // Indexes describing the longer file must never be trusted again.
        self.persist_indexes().await?;
        Ok(self.next_offset())
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
        if let Err(e) = self.file.truncate(m.log_bytes).await {
            warn!(error = %e, "could not truncate after a failed write");
        }
        // The truncate may have released reserved blocks: reserve again.
        if self.preallocated_bytes.get() != u64::MAX {
            self.preallocated_bytes.set(0);
        }
    }

    pub async fn fdatasync(&self) -> Result<(), StorageError> {
        self.file.fdatasync().await
    }

    /// Marks the segment read-only (after its indexes are persisted and the
    /// next segment exists).
    pub fn mark_sealed(&self) {
        self.st.borrow_mut().sealed = true;
    }

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

    /// The batch header at `pos` as stored (not CRC-checked), if one parses
    /// and ends within the logical size.
    pub async fn header_at(&self, pos: u64) -> Result<Option<BatchHeader>, StorageError> {
        let limit = self.log_bytes();
        if pos + HEADER_BYTES as u64 > limit {
            return Ok(None);
        }
        let b = self.file.read_at(pos, HEADER_BYTES).await?;
        Ok(BatchHeader::parse(&b).ok().filter(|h| {
            h.batch_length as usize >= HEADER_BYTES && pos + h.batch_length as u64 <= limit
        }))
    }

    #[cfg(test)]
    pub fn index_entries(&self) -> (usize, usize) {
        let st = self.st.borrow();
        (st.offset_index.entries.len(), st.time_index.entries.len())
    }
}
