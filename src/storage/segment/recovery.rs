//! Opening and cutting a segment (split out of [`super`]): loading or
//! rebuilding the indexes of a sealed segment, recovery of the active
//! segment, refusing a foreign format, and truncation to an offset.
//!
//! Recovery of the active segment (`open_active`) is told the partition's
//! recovery point: invalid data at an offset at or past it is a torn tail and
//! is cut away; invalid data below it is damage to acknowledged data, left in
//! place and reported (the segment is then `damaged`: never written again).
//! A batch of another format (magic) refuses the open; nothing is truncated.
//!
//! Must not know: high watermark, acks, epochs' meaning.

use std::path::Path;

use bytes::Bytes;
use tracing::warn;

use super::{empty_state, note_batch, Next, Segment};
use crate::io::Io;
use crate::protocol::batch::{self, HEADER_BYTES};
use crate::storage::file::LogFile;
use crate::storage::index;
use crate::storage::scan::{CorruptBatch, RecoveryStats};
use crate::storage::{align_down, align_up, StorageError};

impl Segment {
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
            let len = batch::declared_total_bytes(&head).unwrap_or(0);
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

    /// Whether everything from `good_end` to the end of the file is zero:
    /// the rest of the last batch's page, and pages zeroed ahead of the
    /// appends (at most a write and [`super::ZERO_AHEAD_BYTES`] past the
    /// data; more than that is not padding the broker wrote).
    async fn is_pure_padding(&self, good_end: u64, file_bytes: u64) -> Result<bool, StorageError> {
        let most = align_up(good_end) + super::ZERO_AHEAD_MAX_WRITE_BYTES + super::ZERO_AHEAD_BYTES;
        if file_bytes > most {
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
        self.zeroed_to.set(0);
        // Indexes describing the longer file must never be trusted again.
        self.persist_indexes().await?;
        Ok(self.next_offset())
    }
}
