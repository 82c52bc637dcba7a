//! A partition's leader-epoch history: epoch → first offset appended in it
//! (Kafka's leader-epoch cache), kept durable in the `leader-epoch-checkpoint`
//! file (`storage::checkpoint`), for follower truncation by epochs
//! (OffsetsForLeaderEpoch) once replication exists.
//!
//! Owns: [`LeaderEpochs`] (the entries, `assign`, truncation, and
//! [`LeaderEpochs::end_offset_for`], the OffsetsForLeaderEpoch answer).
//!
//! Invariants: entries strictly increase in epoch and do not decrease in
//! start offset (asserted on every change); an entry is added when a new
//! epoch starts (the leader's `set_leader_epoch`, or a replica's first batch
//! of a newer epoch) and removed from the end on truncation.
//!
//! Must not know: files (the partition persists [`LeaderEpochs::entries`]
//! through the checkpoint module), or who decides epochs.

use crate::protocol::Offset;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(u32, Offset)>,
}

impl LeaderEpochs {
    /// From checkpointed entries (already checked by `checkpoint::parse_epochs`).
    pub fn from_entries(entries: Vec<(u32, Offset)>) -> Self {
        let e = LeaderEpochs { entries };
        e.check();
        e
    }

    fn check(&self) {
        assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "leader epochs must increase: {:?}",
            self.entries
        );
    }

    pub fn entries(&self) -> &[(u32, Offset)] {
        &self.entries
    }

    /// The newest (epoch, start offset).
    pub fn latest(&self) -> Option<(u32, Offset)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`. No change (false) when
    /// `epoch` is already the latest. `epoch` must be newer than the latest
    /// and `start` not below its start (the caller checks input; a
    /// violation here is a bug).
    pub fn assign(&mut self, epoch: u32, start: Offset) -> bool {
        if let Some((e, s)) = self.latest() {
            if e == epoch {
                return false;
            }
            assert!(
                epoch > e && start >= s,
                "epoch {epoch}@{start} after {e}@{s}"
            );
        }
        self.entries.push((epoch, start));
        self.check();
        true
    }

    /// Drops the entries whose start is at or past `end` (the log was
    /// truncated to `end`). Returns whether anything changed.
    pub fn truncate_from_end(&mut self, end: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        self.entries.len() != before
    }

    /// Drops the entries whose start is past `end` (recovery found the log
    /// ending at `end`; an epoch that starts exactly there is kept: it began
    /// with nothing written yet). Returns whether anything changed.
    pub fn drop_past(&mut self, end: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s <= end);
        self.entries.len() != before
    }

    /// OffsetsForLeaderEpoch: the largest epoch `<= epoch` this log knows
    /// and the offset where it ends (the next epoch's start, or `log_end`
    /// for the latest). `None` when the log knows no epoch that old.
    pub fn end_offset_for(&self, epoch: u32, log_end: Offset) -> Option<(u32, Offset)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        Some((found, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_truncate_and_end_offsets() {
        let mut e = LeaderEpochs::default();
        assert_eq!(e.end_offset_for(0, 10), None);
        assert!(e.assign(0, 0));
        assert!(!e.assign(0, 5), "same epoch: no change");
        assert!(e.assign(2, 10));
        assert!(e.assign(5, 30));
        assert_eq!(e.end_offset_for(0, 40), Some((0, 10)));
        assert_eq!(e.end_offset_for(1, 40), Some((0, 10)), "largest epoch <= 1");
        assert_eq!(e.end_offset_for(2, 40), Some((2, 30)));
        assert_eq!(e.end_offset_for(9, 40), Some((5, 40)));
        assert!(!e.drop_past(30), "an epoch starting at the end is kept");
        assert!(e.truncate_from_end(30));
        assert_eq!(e.entries(), &[(0, 0), (2, 10)]);
        assert!(e.truncate_from_end(5));
        assert_eq!(e.entries(), &[(0, 0)]);
    }

    #[test]
    #[should_panic(expected = "epoch")]
    fn an_older_epoch_is_a_bug() {
        let mut e = LeaderEpochs::default();
        e.assign(3, 0);
        e.assign(2, 5);
    }
}
