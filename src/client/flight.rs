//! The producer's per-partition request window (adaptive batching).
//!
//! Owns: how many produce requests each partition has in flight, the sealed
//! batches waiting for a slot, and whether the open batch's linger expired
//! while the window was full.
//!
//! At most `max` requests per partition are in flight. A batch sealed while
//! its partition is at the window waits here; a linger that expires then
//! does not seal the open batch, which keeps filling (up to `batch_bytes`)
//! until a response frees a slot. So at low load every record leaves at once
//! (linger 0 means no added wait), and under load batches grow with the
//! broker's round trip instead of the request rate growing with the record
//! rate, like Kafka's `max.in.flight.requests.per.connection`.
//!
//! Invariants (pure logic, no I/O):
//! - per partition, batches leave in the order they were sealed;
//! - per partition, `in_flight <= max`;
//! - a batch waits only while its partition's window is full.

use std::collections::{HashMap, VecDeque};

use crate::protocol::TopicPartition;

/// What to do after a request of a partition finished.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<B> {
    /// Send this waiting batch (its slot is taken).
    Send(B),
    /// Seal the open batch of this generation (its linger expired while the
    /// window was full) and offer it.
    SealDue(u64),
    Nothing,
}

struct Part<B> {
    in_flight: usize,
    waiting: VecDeque<B>,
    /// Generation of the open batch whose linger expired at a full window.
    due: Option<u64>,
}

impl<B> Default for Part<B> {
    fn default() -> Self {
        Self {
            in_flight: 0,
            waiting: VecDeque::new(),
            due: None,
        }
    }
}

pub(crate) struct Flights<B> {
    max: usize,
    parts: HashMap<TopicPartition, Part<B>>,
}

impl<B> Flights<B> {
    /// `max` requests in flight per partition; 0 = no limit.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: if max == 0 { usize::MAX } else { max },
            parts: HashMap::new(),
        }
    }

    /// A sealed batch: returned if it may be sent now (its slot is taken),
    /// otherwise kept until [`Flights::finished`] hands it out.
    pub(crate) fn offer(&mut self, tp: &TopicPartition, batch: B) -> Option<B> {
        let max = self.max;
        let part = self.part(tp);
        if part.in_flight < max && part.waiting.is_empty() {
            part.in_flight += 1;
            Some(batch)
        } else {
            part.waiting.push_back(batch);
            None
        }
    }

    /// The linger of open batch `generation` expired: true if it should be
    /// sealed and offered now, false if the window is full (it is sealed
    /// when a slot frees).
    pub(crate) fn linger_expired(&mut self, tp: &TopicPartition, generation: u64) -> bool {
        let max = self.max;
        let part = self.part(tp);
        if part.in_flight < max && part.waiting.is_empty() {
            true
        } else {
            part.due = Some(generation);
            false
        }
    }

    /// A request of `tp` finished (answered or failed).
    pub(crate) fn finished(&mut self, tp: &TopicPartition) -> Next<B> {
        let part = self.part(tp);
        assert!(part.in_flight > 0, "finished without a request in flight");
        part.in_flight -= 1;
        if let Some(b) = part.waiting.pop_front() {
            part.in_flight += 1;
            return Next::Send(b);
        }
        match part.due.take() {
            Some(g) => Next::SealDue(g),
            None => Next::Nothing,
        }
    }

    fn part(&mut self, tp: &TopicPartition) -> &mut Part<B> {
        if !self.parts.contains_key(tp) {
            self.parts.insert(tp.clone(), Part::default());
        }
        self.parts.get_mut(tp).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_full_window_queues_in_order_and_frees_one_by_one() {
        let mut f = Flights::new(2);
        assert_eq!(f.offer(&tp(0), 1), Some(1));
        assert_eq!(f.offer(&tp(0), 2), Some(2));
        assert_eq!(f.offer(&tp(0), 3), None);
        assert_eq!(f.offer(&tp(0), 4), None);
        // Another partition has its own window.
        assert_eq!(f.offer(&tp(1), 10), Some(10));
        assert_eq!(f.finished(&tp(0)), Next::Send(3));
        assert_eq!(f.finished(&tp(0)), Next::Send(4));
        // With nothing waiting, a new batch goes at once again.
        assert_eq!(f.finished(&tp(0)), Next::Nothing);
        assert_eq!(f.offer(&tp(0), 5), Some(5));
    }

    #[test]
    fn a_linger_at_a_full_window_seals_when_a_slot_frees() {
        let mut f = Flights::new(1);
        assert!(f.linger_expired(&tp(0), 7), "free window: seal now");
        assert_eq!(f.offer(&tp(0), 1), Some(1));
        assert!(!f.linger_expired(&tp(0), 8), "full window: keep filling");
        assert_eq!(f.finished(&tp(0)), Next::SealDue(8));
        assert_eq!(f.offer(&tp(0), 2), Some(2));
        assert_eq!(f.finished(&tp(0)), Next::Nothing);
    }

    #[test]
    fn zero_means_no_limit() {
        let mut f = Flights::new(0);
        for i in 0..10_000 {
            assert_eq!(f.offer(&tp(0), i), Some(i));
        }
    }
}
