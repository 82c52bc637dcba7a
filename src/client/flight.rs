//! The producer's per-partition queue of unacknowledged batches: the request
//! window (adaptive batching), ordered resends, and the idempotent sequence
//! space of each partition.
//!
//! Owns, per partition: the batches sealed and not yet resolved (in seal
//! order), how many produce requests are out, the retry round and backoff
//! hold, whether the open batch's linger expired at a full window, and the
//! producer identity + next sequence number the partition's batches use.
//!
//! At most `max` requests per partition are in flight. A batch sealed while
//! its partition is at the window waits here; a linger that expires then
//! does not seal the open batch, which keeps filling (up to `batch_bytes`)
//! until a response frees a slot. So at low load every record leaves at once
//! (linger 0 means no added wait), and under load batches grow with the
//! broker's round trip instead of the request rate growing with the record
//! rate, like Kafka's `max.in.flight.requests.per.connection`.
//!
//! Retries keep order: when a request fails and its batch is to be resent,
//! the partition starts a new round and holds: nothing more is sent until
//! every request of the partition still out has come back (answered or
//! failed); then the unacknowledged batches leave again from the oldest, in
//! order. With sequence numbers the broker refuses a batch whose predecessor
//! it has not written (OutOfOrderSequence), so a later batch can never land
//! before an earlier one.
//!
//! Invariants (pure logic, no I/O; asserted):
//! - per partition, batches leave for the first time in the order they were
//!   sealed, and the batches on the wire are always a prefix of the queue;
//! - per partition, requests out `<= max`, and a batch has at most one
//!   request out;
//! - a partition takes a new identity (sequence 0) only with no request out.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::protocol::messages::ProducerIdentity;
use crate::protocol::TopicPartition;

/// The sequence space a partition's batches are numbered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SeqSpace {
    /// Identity of the batches numbered so far (None: none yet).
    pub(crate) identity: Option<ProducerIdentity>,
    /// Base sequence of the next batch sent for the first time.
    pub(crate) next: i32,
    /// A batch of this space failed for good after a sequence number was
    /// used: the broker will never accept the ones after it (a gap), so the
    /// partition needs another identity before sending anything new.
    pub(crate) burnt: bool,
}

impl SeqSpace {
    /// Takes `count` sequence numbers; returns the first. Wraps at i32::MAX
    /// to 0 as Kafka does.
    pub(crate) fn take(&mut self, count: u32) -> i32 {
        let base = self.next;
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        self.next = match base.checked_add(count) {
            Some(n) => n,
            None => count - (i32::MAX - base) - 1,
        };
        base
    }
}

struct Slot<B> {
    id: u64,
    batch: B,
    /// The round of the request out for this batch, if one is.
    out: Option<u64>,
    /// Whether the batch ever left (its bytes, identity and sequence are fixed).
    sent: bool,
}

struct Part<B> {
    queue: VecDeque<Slot<B>>,
    /// Requests out, including those whose batch was already failed.
    in_flight: usize,
    /// Generation of the open batch whose linger expired at a full window.
    due: Option<u64>,
    round: u64,
    /// A request of this round failed: send nothing until `in_flight == 0`.
    holding: bool,
    /// Backoff: send nothing before this instant.
    not_before: Option<Instant>,
    seq: SeqSpace,
}

impl<B> Default for Part<B> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: 0,
            due: None,
            round: 0,
            holding: false,
            not_before: None,
            seq: SeqSpace::default(),
        }
    }
}

impl<B> Part<B> {
    /// Whether a new batch would be sent at once (room in the window, nothing
    /// waiting, no hold).
    fn has_room(&self, max: usize) -> bool {
        self.in_flight < max && !self.holding && self.queue.iter().all(|s| s.out.is_some())
    }
}

/// A request came back for a batch still in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Returned {
    /// It was sent in the current round (no retry started since).
    pub(crate) same_round: bool,
    /// It is the oldest unacknowledged batch of its partition.
    pub(crate) oldest: bool,
}

pub(crate) struct Flights<B> {
    max: usize,
    parts: HashMap<TopicPartition, Part<B>>,
    next_id: u64,
}

impl<B> Flights<B> {
    /// `max` requests in flight per partition; 0 = no limit.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: if max == 0 { usize::MAX } else { max },
            parts: HashMap::new(),
            next_id: 1,
        }
    }

    /// A sealed batch joins its partition's queue; returns its id.
    pub(crate) fn push(&mut self, tp: &TopicPartition, batch: B) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.part(tp).queue.push_back(Slot {
            id,
            batch,
            out: None,
            sent: false,
        });
        id
    }

    /// The next batch of `tp` to put on the wire now, if any: its id, the
    /// batch, and whether it left before (a resend). Call
    /// [`Flights::mark_sent`] once its request is enqueued.
    pub(crate) fn next_send(
        &mut self,
        tp: &TopicPartition,
        now: Instant,
    ) -> Option<(u64, &mut B, bool)> {
        let max = self.max;
        let part = self.parts.get_mut(tp)?;
        if part.holding {
            if part.in_flight > 0 {
                return None;
            }
            part.holding = false;
        }
        if part.not_before.is_some_and(|t| t > now) {
            return None;
        }
        part.not_before = None;
        if part.in_flight >= max {
            return None;
        }
        let at = part.queue.iter().position(|s| s.out.is_none())?;
        debug_assert!(part.queue.iter().take(at).all(|s| s.out.is_some()));
        let slot = &mut part.queue[at];
        Some((slot.id, &mut slot.batch, slot.sent))
    }

    /// The request for batch `id` (from `next_send`) is enqueued.
    pub(crate) fn mark_sent(&mut self, tp: &TopicPartition, id: u64) {
        let part = self.part(tp);
        let round = part.round;
        let slot = part
            .queue
            .iter_mut()
            .find(|s| s.id == id)
            .expect("mark_sent of a batch in the queue");
        assert!(slot.out.is_none(), "a batch has at most one request out");
        slot.out = Some(round);
        slot.sent = true;
        part.in_flight += 1;
        assert!(part.in_flight <= self.max, "window overflow");
    }

    /// The request for batch `id` came back (answered or failed). None if
    /// the batch was already resolved (failed behind an earlier failure).
    pub(crate) fn returned(&mut self, tp: &TopicPartition, id: u64) -> Option<Returned> {
        let part = self.part(tp);
        assert!(part.in_flight > 0, "returned without a request in flight");
        part.in_flight -= 1;
        let round = part.round;
        let at = part.queue.iter().position(|s| s.id == id)?;
        let slot = &mut part.queue[at];
        let sent_round = slot.out.take().expect("a returned batch had a request out");
        Some(Returned {
            same_round: sent_round == round,
            oldest: at == 0,
        })
    }

    /// Batch `id` of `tp`, which must be queued.
    pub(crate) fn batch_mut(&mut self, tp: &TopicPartition, id: u64) -> &mut B {
        let part = self.parts.get_mut(tp).expect("partition of a queued batch");
        let slot = part
            .queue
            .iter_mut()
            .find(|s| s.id == id)
            .expect("batch is queued");
        &mut slot.batch
    }

    /// Removes batch `id` (acknowledged).
    pub(crate) fn remove(&mut self, tp: &TopicPartition, id: u64) -> Option<B> {
        let part = self.parts.get_mut(tp)?;
        let at = part.queue.iter().position(|s| s.id == id)?;
        part.queue.remove(at).map(|s| s.batch)
    }

    /// Batch `id` will be resent: if its request was of the current round,
    /// a new round starts (hold until every request out came back), and the
    /// partition sends nothing before `not_before`.
    pub(crate) fn retry(&mut self, tp: &TopicPartition, same_round: bool, not_before: Instant) {
        let part = self.part(tp);
        if same_round {
            part.round += 1;
            part.holding = true;
        }
        part.not_before = Some(part.not_before.map_or(not_before, |t| t.max(not_before)));
    }

    /// Batch `id` failed for good: removes it and, when `gap` (its sequence
    /// number was used and it is not written), every later batch that already
    /// left (the broker refuses them after the gap). Returns the removed
    /// batches, `id`'s first; their requests still out keep counting.
    pub(crate) fn fail(&mut self, tp: &TopicPartition, id: u64, gap: bool) -> Vec<B> {
        let Some(part) = self.parts.get_mut(tp) else {
            return Vec::new();
        };
        let Some(at) = part.queue.iter().position(|s| s.id == id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(s) = part.queue.remove(at) {
            out.push(s.batch);
        }
        if gap {
            part.seq.burnt = true;
            while part.queue.get(at).is_some_and(|s| s.sent) {
                if let Some(s) = part.queue.remove(at) {
                    out.push(s.batch);
                }
            }
        }
        out
    }

    /// Removes every batch of every partition (the producer is fenced).
    pub(crate) fn drain_all(&mut self) -> Vec<B> {
        let mut out = Vec::new();
        for part in self.parts.values_mut() {
            out.extend(part.queue.drain(..).map(|s| s.batch));
        }
        out
    }

    /// The oldest batch of `tp` if it has no request out (for expiry).
    pub(crate) fn oldest_idle(&self, tp: &TopicPartition) -> Option<(u64, &B)> {
        let s = self.parts.get(tp)?.queue.front()?;
        s.out.is_none().then_some((s.id, &s.batch))
    }

    /// When the partition may send next, if it is held by a backoff.
    pub(crate) fn not_before(&self, tp: &TopicPartition) -> Option<Instant> {
        self.parts.get(tp)?.not_before
    }

    /// Whether `tp` has a batch that is not on the wire.
    pub(crate) fn has_unsent(&self, tp: &TopicPartition) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|p| p.queue.iter().any(|s| s.out.is_none()))
    }

    /// Requests of `tp` out.
    pub(crate) fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.parts.get(tp).map_or(0, |p| p.in_flight)
    }

    pub(crate) fn seq_mut(&mut self, tp: &TopicPartition) -> &mut SeqSpace {
        &mut self.part(tp).seq
    }

    /// Partitions with batches not yet resolved.
    pub(crate) fn busy_partitions(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.queue.is_empty())
            .map(|(tp, _)| tp.clone())
            .collect();
        v.sort();
        v
    }

    /// The linger of open batch `generation` expired: true if it should be
    /// sealed and offered now, false if the window is full (it is sealed
    /// when a slot frees, see [`Flights::take_due`]).
    pub(crate) fn linger_expired(&mut self, tp: &TopicPartition, generation: u64) -> bool {
        let max = self.max;
        let part = self.part(tp);
        if part.has_room(max) {
            true
        } else {
            part.due = Some(generation);
            false
        }
    }

    /// The generation of the open batch to seal now that the window has
    /// room, if its linger expired while it was full.
    pub(crate) fn take_due(&mut self, tp: &TopicPartition) -> Option<u64> {
        let max = self.max;
        let part = self.parts.get_mut(tp)?;
        if part.has_room(max) {
            part.due.take()
        } else {
            None
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

    /// Sends everything `tp` may send now; returns the batches, in order.
    fn send_all(f: &mut Flights<u32>, p: u32) -> Vec<(u64, u32)> {
        let now = Instant::now();
        let mut out = Vec::new();
        while let Some((id, b, _)) = f.next_send(&tp(p), now) {
            let b = *b;
            f.mark_sent(&tp(p), id);
            out.push((id, b));
        }
        out
    }

    fn values(v: &[(u64, u32)]) -> Vec<u32> {
        v.iter().map(|x| x.1).collect()
    }

    #[test]
    fn a_full_window_queues_in_order_and_frees_one_by_one() {
        let mut f = Flights::new(2);
        for b in 1..=4 {
            f.push(&tp(0), b);
        }
        let sent = send_all(&mut f, 0);
        assert_eq!(values(&sent), vec![1, 2]);
        // Another partition has its own window.
        f.push(&tp(1), 10);
        assert_eq!(values(&send_all(&mut f, 1)), vec![10]);
        assert!(f.returned(&tp(0), sent[0].0).is_some());
        assert_eq!(f.remove(&tp(0), sent[0].0), Some(1));
        let s3 = send_all(&mut f, 0);
        assert_eq!(values(&s3), vec![3]);
        f.returned(&tp(0), sent[1].0);
        f.remove(&tp(0), sent[1].0);
        let s4 = send_all(&mut f, 0);
        assert_eq!(values(&s4), vec![4]);
        // With nothing waiting, a new batch goes at once again.
        f.returned(&tp(0), s3[0].0);
        f.remove(&tp(0), s3[0].0);
        f.push(&tp(0), 5);
        assert_eq!(values(&send_all(&mut f, 0)), vec![5]);
    }

    #[test]
    fn a_linger_at_a_full_window_seals_when_a_slot_frees() {
        let mut f = Flights::new(1);
        assert!(f.linger_expired(&tp(0), 7), "free window: seal now");
        f.push(&tp(0), 1);
        let s = send_all(&mut f, 0);
        assert!(!f.linger_expired(&tp(0), 8), "full window: keep filling");
        assert_eq!(f.take_due(&tp(0)), None);
        f.returned(&tp(0), s[0].0);
        f.remove(&tp(0), s[0].0);
        assert_eq!(f.take_due(&tp(0)), Some(8));
        assert_eq!(f.take_due(&tp(0)), None);
    }

    #[test]
    fn zero_means_no_limit() {
        let mut f = Flights::new(0);
        for i in 0..10_000 {
            f.push(&tp(0), i);
        }
        assert_eq!(send_all(&mut f, 0).len(), 10_000);
    }

    #[test]
    fn a_retry_waits_for_the_requests_out_then_resends_in_order() {
        let mut f = Flights::new(3);
        for b in 1..=4 {
            f.push(&tp(0), b);
        }
        let s = send_all(&mut f, 0);
        assert_eq!(values(&s), vec![1, 2, 3]);
        // Batch 1 fails (retriable): hold until 2 and 3 came back.
        let r = f.returned(&tp(0), s[0].0).expect("queued");
        assert_eq!(
            r,
            Returned {
                same_round: true,
                oldest: true
            }
        );
        f.retry(&tp(0), r.same_round, Instant::now());
        assert!(send_all(&mut f, 0).is_empty(), "held while 2 and 3 are out");
        // 2 comes back refused (out of order), from the old round.
        let r = f.returned(&tp(0), s[1].0).expect("queued");
        assert_eq!(
            r,
            Returned {
                same_round: false,
                oldest: false
            }
        );
        f.retry(&tp(0), r.same_round, Instant::now());
        assert!(send_all(&mut f, 0).is_empty());
        // 3 was written after all? Not possible without 2; say it failed too.
        let r = f.returned(&tp(0), s[2].0).expect("queued");
        f.retry(&tp(0), r.same_round, Instant::now());
        let again = send_all(&mut f, 0);
        assert_eq!(
            values(&again),
            vec![1, 2, 3],
            "resent from the oldest, in order"
        );
        assert_eq!(again[0].0, s[0].0, "same batches, same ids");
    }

    #[test]
    fn a_fatal_failure_after_a_used_sequence_fails_the_batches_sent_after_it() {
        let mut f = Flights::new(5);
        for b in 1..=5 {
            f.push(&tp(0), b);
        }
        let s: Vec<_> = (0..3)
            .map(|_| {
                let (id, b, _) = f.next_send(&tp(0), Instant::now()).expect("room");
                let b = *b;
                f.mark_sent(&tp(0), id);
                (id, b)
            })
            .collect();
        f.returned(&tp(0), s[0].0);
        let gone = f.fail(&tp(0), s[0].0, true);
        assert_eq!(
            gone,
            vec![1, 2, 3],
            "2 and 3 left after the gap; 4 and 5 did not"
        );
        assert!(f.seq_mut(&tp(0)).burnt);
        assert_eq!(f.in_flight(&tp(0)), 2, "their requests are still out");
        assert_eq!(f.returned(&tp(0), s[1].0), None, "already resolved");
    }

    #[test]
    fn sequence_numbers_wrap_like_kafka() {
        let mut s = SeqSpace::default();
        assert_eq!(s.take(10), 0);
        assert_eq!(s.next, 10);
        s.next = i32::MAX - 1;
        assert_eq!(s.take(3), i32::MAX - 1);
        assert_eq!(s.next, 1);
    }
}
