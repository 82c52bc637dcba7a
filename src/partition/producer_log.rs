//! A partition's idempotent-producer state on the append path and on disk
//! (docs/idempotence.md); the state machine itself is [`super::producers`].
//!
//! Owns: the two copies of the state — `producers` (every batch appended,
//! in flight or not: what leader appends are checked against, in append
//! order, so pipelined requests are checked in order) and
//! `producers_durable` (only batches whose group committed, i.e. durable per
//! the flush policy and acknowledged) — the in-flight tickets of idempotent
//! batches (a duplicate of an in-flight batch shares its original's ticket:
//! it is answered when, and as, the original is), producer-state snapshots
//! (`<offset:020>.snapshot`, written through the I/O seam at segment roll
//! and at close, removed with their segments and past a truncation), the
//! rebuild at open (latest valid snapshot + scan of the log after it) and
//! expiry (`producer_id_expiration_ms`, on the clock seam).
//!
//! Failed writes: when the writer fails a group (write, fdatasync, roll or
//! epoch checkpoint failure), it fails that group and everything queued
//! (`Partition::fail_queued`), so nothing that was not committed survives;
//! the appended state is then rebuilt as a copy of the durable one
//! ([`Partition::producers_rolled_back`]), so it never claims a batch that
//! did not become durable (a retry of a failed batch is appended again, not
//! answered as a duplicate of offsets that were never written).
//!
//! Invariants: `producers_durable` describes exactly the batches below the
//! local durable offset; every batch in `producers` at or past it has its
//! ticket in `inflight` (asserted when a duplicate needs it); a snapshot
//! named `<offset>` holds the state of exactly the batches below `offset`.
//!
//! Must not know: connections, the wire format, other shards.

use std::collections::HashMap;
use std::rc::Rc;

use tracing::{debug, info, warn};

use super::producers::{BatchMeta, ProducerBatch, ProducerStates, SeqError, Verdict};
use super::waiters::TicketSlot;
use super::{AppendResult, AppendTicket, Partition, PartitionError};
use crate::protocol::{Offset, TopicPartition};
use crate::storage::checkpoint;
use crate::storage::log::Log;
use crate::storage::segment::Next;

/// The producer state a partition carries (fields of `Partition`).
#[derive(Default)]
pub(super) struct ProducerState {
    /// Every appended batch (in flight included).
    pub(super) appended: std::cell::RefCell<ProducerStates>,
    /// Committed batches only.
    pub(super) durable: std::cell::RefCell<ProducerStates>,
    /// Base offset → ticket of idempotent batches not yet committed.
    pub(super) inflight: std::cell::RefCell<HashMap<Offset, Rc<TicketSlot>>>,
}

impl ProducerState {
    pub(super) fn new(states: ProducerStates) -> Self {
        ProducerState {
            appended: std::cell::RefCell::new(states.clone()),
            durable: std::cell::RefCell::new(states),
            inflight: Default::default(),
        }
    }
}

impl Partition {
    /// The verdict on a leader append of `pb`, as a partition error when
    /// refused.
    pub(super) fn check_producer(&self, pb: &ProducerBatch) -> Result<Verdict, PartitionError> {
        let now = self.log.clock().wall_ms();
        let verdict =
            self.producers
                .appended
                .borrow()
                .check(pb, now, self.limits.producer_id_expiration_ms);
        verdict.map_err(|e| {
            let (tp, producer_id) = (self.tp.clone(), pb.producer_id);
            match e {
                SeqError::Fenced { current } => PartitionError::InvalidProducerEpoch {
                    tp,
                    producer_id,
                    epoch: pb.epoch,
                    current,
                },
                SeqError::OutOfOrder { expected } => PartitionError::OutOfOrderSequence {
                    tp,
                    producer_id,
                    expected,
                    got: pb.first_seq,
                },
                SeqError::Unknown => PartitionError::UnknownProducerId {
                    tp,
                    producer_id,
                    sequence: pb.first_seq,
                },
                SeqError::Invalid => PartitionError::OutOfOrderSequence {
                    tp,
                    producer_id,
                    expected: 0,
                    got: pb.first_seq,
                },
            }
        })
    }

    /// The ticket of a duplicate: the original's offsets, resolved when (and
    /// as) the original is — at once if it is already committed.
    pub(super) fn duplicate_ticket(self: &Rc<Self>, m: BatchMeta) -> AppendTicket {
        let slot = if m.base_offset < self.local_durable.get() {
            let s = Rc::new(TicketSlot::default());
            s.complete(Ok(()));
            s
        } else {
            match self.producers.inflight.borrow().get(&m.base_offset) {
                Some(s) => s.clone(),
                None => panic!(
                    "{}: uncommitted duplicate at offset {} has no in-flight ticket",
                    self.tp, m.base_offset
                ),
            }
        };
        AppendTicket {
            result: AppendResult {
                base_offset: m.base_offset,
                last_offset: m.last_offset,
                log_start_offset: self.log_start.get(),
            },
            slot,
            partition: Rc::downgrade(self),
        }
    }

    /// A batch was queued at `[base, last]` (leader or replica append).
    pub(super) fn producer_appended(
        &self,
        pb: &ProducerBatch,
        base: Offset,
        last: Offset,
        slot: &Rc<TicketSlot>,
    ) {
        let now = self.log.clock().wall_ms();
        self.producers
            .appended
            .borrow_mut()
            .apply(pb, base, last, now);
        let prev = self
            .producers
            .inflight
            .borrow_mut()
            .insert(base, slot.clone());
        assert!(prev.is_none(), "two batches in flight at offset {base}");
    }

    /// The writer committed these batches: they enter the durable state.
    pub(super) fn producers_committed<'a>(
        &self,
        batches: impl Iterator<Item = (&'a Option<ProducerBatch>, Offset, Offset)>,
    ) {
        let now = self.log.clock().wall_ms();
        let mut durable = self.producers.durable.borrow_mut();
        let mut inflight = self.producers.inflight.borrow_mut();
        for (pb, base, last) in batches {
            if let Some(pb) = pb {
                durable.apply(pb, base, last, now);
                inflight.remove(&base);
            }
        }
    }

    /// Everything uncommitted failed: the appended state goes back to the
    /// durable one (see the module header).
    pub(super) fn producers_rolled_back(&self) {
        let durable = self.producers.durable.borrow().clone();
        *self.producers.appended.borrow_mut() = durable;
        self.producers.inflight.borrow_mut().clear();
    }

    /// Drops producers not seen for `producer_id_expiration_ms`.
    pub(super) fn expire_producers(&self) {
        let now = self.log.clock().wall_ms();
        let ids = self
            .producers
            .appended
            .borrow()
            .expired_ids(now, self.limits.producer_id_expiration_ms);
        if ids.is_empty() {
            return;
        }
        let (mut a, mut d) = (
            self.producers.appended.borrow_mut(),
            self.producers.durable.borrow_mut(),
        );
        for id in &ids {
            a.remove(*id);
            d.remove(*id);
        }
        info!(tp = %self.tp, expired = ids.len(), "expired idle producer ids");
    }

    /// Writes the durable producer state as the snapshot at `offset` (the
    /// log end, everything below it committed). Best effort: without it the
    /// next open scans more of the log.
    pub(super) async fn snapshot_producers(&self, offset: Offset) {
        assert_eq!(
            self.local_durable.get(),
            offset,
            "a producer snapshot covers exactly the committed batches"
        );
        self.expire_producers();
        let bytes = self.producers.durable.borrow().encode_snapshot(offset);
        let name = checkpoint::snapshot_name(offset);
        if let Err(e) =
            checkpoint::write_atomic(&self.log.io().disk, self.log.dir(), &name, &bytes).await
        {
            warn!(tp = %self.tp, error = %e, "could not write the producer-state snapshot");
        }
    }

    /// Removes the snapshots below the first segment (retention deleted
    /// their segments).
    pub(super) async fn delete_old_snapshots(&self) {
        let first = self.log.start_offset();
        if let Err(e) = delete_snapshots(&self.log, move |o| o < first).await {
            warn!(tp = %self.tp, error = %e, "could not delete old producer-state snapshots");
        }
    }

    /// After a truncation to `end`: snapshots past it go, and the state is
    /// rebuilt from the latest one at or below it plus the log after it.
    pub(super) async fn reload_producers(&self, end: Offset) -> Result<(), PartitionError> {
        let states = recover_producers(&self.tp, &self.log, end).await?;
        *self.producers.durable.borrow_mut() = states.clone();
        *self.producers.appended.borrow_mut() = states;
        self.producers.inflight.borrow_mut().clear();
        Ok(())
    }
}

/// Snapshot offsets in the partition directory, ascending.
async fn list_snapshots(log: &Log) -> Result<Vec<Offset>, PartitionError> {
    let dir = log.dir().to_path_buf();
    let listed = log
        .io()
        .disk
        .blocking(move |disk| disk.list_dir(&dir))
        .await
        .map_err(|e| PartitionError::Storage(format!("list {}: {e}", log.dir().display())))?;
    let mut out: Vec<Offset> = listed
        .iter()
        .filter_map(|e| checkpoint::parse_snapshot_name(&e.name))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Deletes the snapshots whose offset `doomed` selects (then fsyncs the
/// directory).
async fn delete_snapshots(
    log: &Log,
    doomed: impl Fn(Offset) -> bool,
) -> Result<(), PartitionError> {
    let offsets: Vec<Offset> = list_snapshots(log)
        .await?
        .into_iter()
        .filter(|o| doomed(*o))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    let dir = log.dir().to_path_buf();
    log.io()
        .disk
        .blocking(move |disk| {
            for o in offsets {
                let path = dir.join(checkpoint::snapshot_name(o));
                match disk.remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("delete {}: {e}", path.display())),
                }
            }
            disk.sync_dir_blocking(&dir)
                .map_err(|e| format!("fsync {}: {e}", dir.display()))
        })
        .await
        .map_err(PartitionError::Storage)
}

/// The producer state of the batches below `end`: the latest valid snapshot
/// at or below `end` (and not below the first segment), then a scan of the
/// log from there. Snapshots past `end` (the future of a truncated or lost
/// tail), below the first segment, or unreadable are deleted.
pub(super) async fn recover_producers(
    tp: &TopicPartition,
    log: &Log,
    end: Offset,
) -> Result<ProducerStates, PartitionError> {
    let first = log.start_offset();
    let mut doomed = Vec::new();
    let mut found: Option<(Offset, ProducerStates)> = None;
    for offset in list_snapshots(log).await?.into_iter().rev() {
        if offset > end || offset < first {
            doomed.push(offset);
            continue;
        }
        if found.is_some() {
            continue;
        }
        let name = checkpoint::snapshot_name(offset);
        let read = checkpoint::read(&log.io().disk, log.dir(), &name)
            .await
            .map_err(PartitionError::from_storage)?;
        match read.map(|b| ProducerStates::decode_snapshot(&b)) {
            Some(Ok((at, states))) if at == offset => found = Some((offset, states)),
            Some(Ok((at, _))) => {
                warn!(%tp, file = %name, holds = at, "producer snapshot names the wrong offset: ignored");
                doomed.push(offset);
            }
            Some(Err(why)) => {
                warn!(%tp, file = %name, reason = %why, "corrupt producer snapshot: ignored, falling back to an older one or the log");
                doomed.push(offset);
            }
            None => {}
        }
    }
    if !doomed.is_empty() {
        delete_snapshots(log, |o| doomed.contains(&o)).await?;
    }
    let from_snapshot = found.is_some();
    let (from, mut states) = found.unwrap_or((first, ProducerStates::default()));
    // Batches read back from the log count as seen now: a producer is never
    // expired early because of its own timestamps or a restart.
    let now = log.clock().wall_ms();
    let scanned = scan_into(tp, log, from, end, &mut states, now).await?;
    debug!(%tp, from_snapshot, scanned_from = from, batches = scanned,
        producers = states.len(), "rebuilt idempotent-producer state");
    Ok(states)
}

/// Applies the idempotent batches in `[from, end)` to `states`; returns how
/// many it applied. Damage stops the scan of a segment (logged).
async fn scan_into(
    tp: &TopicPartition,
    log: &Log,
    from: Offset,
    end: Offset,
    states: &mut ProducerStates,
    seen_ms: i64,
) -> Result<usize, PartitionError> {
    let mut applied = 0;
    for seg in log.segments() {
        if seg.next_offset() <= from || seg.base_offset() >= end {
            continue;
        }
        let pos = if seg.base_offset() >= from {
            0
        } else {
            seg.position_for_offset(from)
        };
        let mut cursor = seg.cursor(pos, seg.log_bytes(), None);
        loop {
            match cursor.next().await.map_err(PartitionError::from_storage)? {
                Next::Batch(h, _) => {
                    if h.base_offset >= end {
                        break;
                    }
                    if h.base_offset < from {
                        continue;
                    }
                    if let Some(pb) = ProducerBatch::of(&h) {
                        states.apply(&pb, h.base_offset, h.last_offset(), seen_ms);
                        applied += 1;
                    }
                }
                Next::End => break,
                Next::Invalid { pos, reason } => {
                    warn!(%tp, file = %seg.log_path().display(), pos, %reason,
                        "producer-state scan stopped at invalid data in this segment");
                    break;
                }
            }
        }
    }
    Ok(applied)
}
