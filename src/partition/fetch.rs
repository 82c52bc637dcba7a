//! The read paths of a partition (split out of [`super`]): fetch (consumers,
//! below the high watermark; followers, below the written offset), long
//! polls, and list_offset over the segments of [`crate::storage::log::Log`].
//!
//! Invariants: fetches return whole batches, none at or past their upper
//! bound; every batch read from disk is CRC-checked; recently written
//! batches are served from the cache; damaged acknowledged data is never
//! served.
//!
//! Must not know: connections, the wire format, other shards.

use std::time::Instant;

use bytes::Bytes;

use super::{Partition, PartitionError};
use crate::protocol::batch;
use crate::protocol::messages::OffsetSpec;
use crate::protocol::records::Records;
use crate::protocol::Offset;
use crate::storage::segment::{Next, Segment};

/// Largest single read a fetch issues, in bytes (bigger fetches read more
/// than once; a bigger single batch is read whole).
pub const MAX_FETCH_READ_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FetchData {
    /// Whole batches, the first one containing `fetch_offset`, none at or
    /// beyond the high watermark.
    pub records: Records,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

impl Partition {
    /// A consumer's fetch: whole batches from the one holding `offset`,
    /// below the high watermark.
    pub async fn fetch(&self, offset: Offset, max_bytes: u32) -> Result<FetchData, PartitionError> {
        self.fetch_until(offset, max_bytes, self.high_watermark.get())
            .await
    }

    /// A follower's fetch (later): like `fetch`, bounded by what is written
    /// on this replica instead of the high watermark.
    pub async fn fetch_replica(
        &self,
        offset: Offset,
        max_bytes: u32,
    ) -> Result<FetchData, PartitionError> {
        self.fetch_until(offset, max_bytes, self.log.written_offset())
            .await
    }

    /// Whole batches from the one holding `offset`, none at or past `upper`
    /// (the read's upper bound: the high watermark for consumers, the
    /// written offset for followers), at least one and then up to
    /// `max_bytes`.
    async fn fetch_until(
        &self,
        offset: Offset,
        max_bytes: u32,
        upper: Offset,
    ) -> Result<FetchData, PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        // During a truncation the files shrink before the bounds follow.
        let upper = upper.min(self.log.written_offset());
        let (start, hw, end) = (
            self.log_start.get(),
            self.high_watermark.get(),
            self.log_end.get(),
        );
        if let Some(d) = self.log.acked_damage() {
            let damaged_end = self.log.recovery_point().max(d.offset + 1);
            if offset >= d.offset && offset < damaged_end {
                return Err(PartitionError::CorruptData {
                    file: d.file.clone(),
                    offset,
                    reason: format!(
                        "acknowledged data from offset {} is damaged and not served: {}",
                        d.offset, d.reason
                    ),
                });
            }
        }
        let data = |records| FetchData {
            records,
            high_watermark: hw,
            log_start_offset: start,
            log_end_offset: end,
        };
        if offset < start || offset > end {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset >= upper {
            return Ok(data(Records::new()));
        }
        if let Some(records) = self.cache.read(offset, upper, max_bytes as usize) {
            return Ok(data(records));
        }
        let missing = |seg: &Segment| PartitionError::CorruptData {
            file: seg.log_path().to_path_buf(),
            offset,
            reason: "offset below the high watermark is missing from its segment".into(),
        };
        let Some(seg) = self.log.segment_for(offset) else {
            return Err(PartitionError::OffsetOutOfRange {
                tp: self.tp.clone(),
                offset,
                log_start: start,
                log_end: end,
            });
        };
        // Read about what the fetch returns plus one index interval of skip.
        let read_bytes = (max_bytes as usize)
            .saturating_add(self.config.borrow().index_interval_bytes as usize)
            .clamp(4096, MAX_FETCH_READ_BYTES);
        // A read-ahead that starts where this fetch starts is its first read.
        let ahead = {
            let mut slot = self.readahead.borrow_mut();
            match slot.as_ref() {
                Some(ra) if ra.offset == offset && ra.seg_base == seg.base_offset() => slot.take(),
                _ => None,
            }
        };
        let ahead = match ahead {
            Some(ra) => {
                let pos = ra.pos;
                ra.bytes().await.map(|b| (pos, b))
            }
            None => None,
        };
        let mut cur = match ahead {
            Some((pos, b)) => {
                self.readahead_hits.set(self.readahead_hits.get() + 1);
                seg.cursor(pos, seg.log_bytes(), None).with_buffer(b)
            }
            None => seg.cursor(seg.position_for_offset(offset), seg.log_bytes(), None),
        }
        .with_read_bytes(read_bytes);
        // Batches read so far; adjacent ones from one read are merged back
        // into a single slice of that read's buffer (no copy).
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        loop {
            if total > 0 {
                // Read no further than the budget left, and not a batch
                // that would not fit (its header says so).
                let left = (max_bytes as usize).saturating_sub(total);
                cur.set_read_bytes(left);
                let len = cur.peek_len().await.map_err(PartitionError::from_storage)?;
                if len.is_some_and(|len| total as u64 + len > u64::from(max_bytes)) {
                    break;
                }
            }
            match cur.next().await.map_err(PartitionError::from_storage)? {
                Next::Batch(h, b) => {
                    if h.last_offset() < offset {
                        continue;
                    }
                    if h.base_offset >= upper {
                        break;
                    }
                    if total == 0 && h.base_offset > offset {
                        return Err(missing(&seg));
                    }
                    if total > 0 && total + b.len() > max_bytes as usize {
                        break;
                    }
                    total += b.len();
                    pieces.push(b);
                    if total >= max_bytes as usize {
                        break;
                    }
                }
                Next::End => break,
                // Serve the good batches before the damage; the fetch that
                // starts at it gets the error.
                Next::Invalid { .. } if total > 0 => break,
                Next::Invalid { pos, reason } => {
                    return Err(PartitionError::CorruptData {
                        file: seg.log_path().to_path_buf(),
                        offset,
                        reason: format!("at byte {pos}: {reason}"),
                    })
                }
            }
        }
        if total == 0 {
            return Err(missing(&seg));
        }
        // One piece when the batches came from one read (the usual case).
        let records = match cur.buffered(&pieces) {
            Some(b) => Records::from(b),
            None => Records::from_pieces(pieces),
        };
        debug_assert_eq!(records.len(), total);
        let next = records.next_offset().unwrap_or(offset);
        // A reader that continued where the last disk fetch ended is
        // sequential: read its next range while this one is on its way.
        let sequential = self.last_disk_fetch_end.get() == offset;
        self.last_disk_fetch_end.set(next);
        let pos = cur.position();
        if sequential && pos < seg.log_bytes() && next < upper {
            // The old slot (and its memory) goes first.
            self.readahead.borrow_mut().take();
            let ahead = super::readahead::ReadAhead::start(seg.clone(), pos, next, read_bytes);
            *self.readahead.borrow_mut() = ahead;
        }
        Ok(data(records))
    }

    /// Resolves when the high watermark passes `offset` or at `deadline`.
    pub async fn wait_for_data(&self, offset: Offset, deadline: Instant) {
        let ready = self.hw_waiters.wait(offset, || {
            self.high_watermark.get() > offset || self.closing.get()
        });
        futures_lite::future::or(ready, self.log.clock().sleep_until(deadline)).await
    }

    pub async fn list_offset(&self, spec: OffsetSpec) -> Result<(Offset, i64), PartitionError> {
        if self.closed.get() {
            return Err(PartitionError::Closed(self.tp.clone()));
        }
        let hw = self.high_watermark.get();
        let t = match spec {
            OffsetSpec::Earliest => return Ok((self.log_start.get(), -1)),
            OffsetSpec::Latest => return Ok((hw, -1)),
            OffsetSpec::Timestamp(t) => t,
        };
        for seg in self.log.segments() {
            if seg.base_offset() >= hw {
                break;
            }
            if seg.max_timestamp() < t {
                continue;
            }
            let mut cur = seg.cursor(seg.position_for_timestamp(t), seg.log_bytes(), None);
            loop {
                match cur.next().await.map_err(PartitionError::from_storage)? {
                    Next::Batch(h, b) => {
                        if h.base_offset >= hw {
                            return Ok((hw, -1));
                        }
                        if h.max_timestamp_ms < t {
                            continue;
                        }
                        // A compressed batch is decompressed within the
                        // broker's bound (it was validated under it).
                        let body = batch::records_body(
                            &b,
                            &h,
                            self.limits.max_decompressed_batch_bytes as usize,
                        )?;
                        for r in batch::RecordIter::new(&body, h.record_count) {
                            let r = r?;
                            let ts = h.first_timestamp_ms.saturating_add(r.timestamp_delta);
                            let off = h.base_offset + r.offset_delta as u64;
                            if off >= hw {
                                return Ok((hw, -1));
                            }
                            if off < self.log_start.get() {
                                continue;
                            }
                            if ts >= t {
                                return Ok((off, ts));
                            }
                        }
                    }
                    Next::End => break,
                    Next::Invalid { pos, reason } => {
                        return Err(PartitionError::CorruptData {
                            file: seg.log_path().to_path_buf(),
                            offset: seg.base_offset(),
                            reason: format!("at byte {pos}: {reason}"),
                        })
                    }
                }
            }
        }
        Ok((hw, -1))
    }
}
