//! The shard's cache of recently written record batches, so a tailing
//! consumer is served from memory instead of re-reading the disk.
//!
//! Owns: [`BatchCache`] (one per shard, a byte budget shared by every
//! partition of the shard, evicted oldest-first across partitions) and
//! [`PartitionCache`] (one partition's view, removed with the partition).
//!
//! Invariants:
//! - Only batches that are in the log and durable on this replica per the
//!   flush policy are inserted (the writer inserts after the write, and
//!   fdatasync for flush=always, succeeded), each as two pieces: its
//!   stamped prefix (base offset, length, leader epoch: the bytes the
//!   broker writes) and the rest of the producer's own buffer, so the
//!   concatenation is exactly what a disk read returns (checked by the
//!   partition tests) and no batch is copied to be cached. The cache never
//!   stamps or copies.
//! - Accounting is by batch length; a cached body may keep alive the rest of
//!   the request frame it arrived in (other partitions' batches of the same
//!   request, each of which is accounted where it is cached).
//! - Per partition, entries are contiguous in offset and ascending; an insert
//!   that does not continue the last entry drops the partition's entries first.
//! - `used_bytes` is the sum of the lengths of the live entries and stays at
//!   or below `budget_bytes` after every insert.
//! - A read returns whole batches starting with the one containing the
//!   requested offset, as [`Records`] pieces (never joined), or `None` (a
//!   miss: read the disk); never bytes at or past the upper bound it is given
//!   (the high watermark for consumers).
//!
//! Single-threaded (one shard): `Cell`/`RefCell`, no locks.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::records::Records;
use crate::protocol::Offset;

/// One batch to cache: offsets `[base, next)`, its bytes as `head` (the
/// stamped prefix) followed by `body` (the rest, as the producer sent it).
pub struct CachedBatch {
    pub base: Offset,
    pub next: Offset,
    pub head: Bytes,
    pub body: Bytes,
}

/// One cached batch.
struct Entry {
    base: Offset,
    next: Offset,
    head: Bytes,
    body: Bytes,
}

impl Entry {
    fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// Shard-wide cache of recent batches with one byte budget.
pub struct BatchCache {
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    live_entries: Cell<usize>,
    next_id: Cell<u64>,
    /// Insertion order across partitions: (partition id, base offset). May
    /// hold stale records of entries already dropped; they are skipped.
    order: RefCell<VecDeque<(u64, Offset)>>,
    parts: RefCell<HashMap<u64, VecDeque<Entry>>>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl BatchCache {
    /// A cache holding at most `budget_bytes` of batches (0 disables it).
    pub fn new(budget_bytes: usize) -> Rc<BatchCache> {
        Rc::new(BatchCache {
            budget_bytes,
            used_bytes: Cell::new(0),
            live_entries: Cell::new(0),
            next_id: Cell::new(0),
            order: RefCell::new(VecDeque::new()),
            parts: RefCell::new(HashMap::new()),
            hits: Cell::new(0),
            misses: Cell::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    /// A view for one partition; its entries go when the view is dropped.
    pub fn register(self: &Rc<Self>) -> PartitionCache {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        PartitionCache {
            cache: self.clone(),
            id,
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    /// Fetches answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Fetches below the cached range (answered from disk).
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    fn drop_entries(&self, id: u64) {
        let removed = self.parts.borrow_mut().remove(&id);
        if let Some(q) = removed {
            let bytes: usize = q.iter().map(|e| e.len()).sum();
            self.used_bytes.set(self.used_bytes.get() - bytes);
            self.live_entries.set(self.live_entries.get() - q.len());
        }
        self.compact_order();
    }

    /// Evicts the oldest entries until `used_bytes <= budget_bytes`.
    fn evict(&self) {
        let mut order = self.order.borrow_mut();
        let mut parts = self.parts.borrow_mut();
        while self.used_bytes.get() > self.budget_bytes {
            let Some((id, base)) = order.pop_front() else {
                break;
            };
            let Some(q) = parts.get_mut(&id) else {
                continue; // stale: the partition is gone
            };
            if q.front().map(|e| e.base) != Some(base) {
                continue; // stale: dropped when the partition was reset
            }
            if let Some(e) = q.pop_front() {
                self.used_bytes.set(self.used_bytes.get() - e.len());
                self.live_entries.set(self.live_entries.get() - 1);
            }
            if q.is_empty() {
                parts.remove(&id);
            }
        }
        debug_assert!(
            self.used_bytes.get() <= self.budget_bytes || parts.is_empty(),
            "cache over budget with entries left"
        );
    }

    /// Drops stale order records once they outnumber the live entries, so
    /// partitions that come and go cannot grow `order` without bound.
    fn compact_order(&self) {
        let live = self.live_entries.get();
        let mut order = self.order.borrow_mut();
        if order.len() <= 2 * live + 1024 {
            return;
        }
        let parts = self.parts.borrow();
        // A record is live if its entry exists; after a rewind to the same
        // offset a stale record can name a live entry too, so keep one each.
        let mut seen = std::collections::HashSet::with_capacity(live);
        order.retain(|&(id, base)| {
            parts
                .get(&id)
                .is_some_and(|q| q.binary_search_by_key(&base, |e| e.base).is_ok())
                && seen.insert((id, base))
        });
        debug_assert_eq!(order.len(), live, "order must list each live entry once");
    }
}

/// One partition's entries in the shard's [`BatchCache`].
pub struct PartitionCache {
    cache: Rc<BatchCache>,
    id: u64,
}

impl Drop for PartitionCache {
    fn drop(&mut self) {
        self.cache.drop_entries(self.id);
    }
}

impl PartitionCache {
    pub fn enabled(&self) -> bool {
        self.cache.enabled()
    }

    /// Caches `batches` (contiguous and ascending in offset), then evicts to
    /// the budget.
    pub fn insert(&self, batches: impl IntoIterator<Item = CachedBatch>) {
        if !self.cache.enabled() {
            return;
        }
        let c = &self.cache;
        {
            let mut parts = c.parts.borrow_mut();
            let mut order = c.order.borrow_mut();
            let q = parts.entry(self.id).or_default();
            for CachedBatch {
                base,
                next,
                head,
                body,
            } in batches
            {
                debug_assert!(base < next, "a batch holds at least one offset");
                let e = Entry {
                    base,
                    next,
                    head,
                    body,
                };
                debug_assert!(e.len() > 0, "a cached batch has bytes");
                if q.back().is_some_and(|last| last.next != base) {
                    // Not a continuation (the log was rewound): start over.
                    let gone: usize = q.iter().map(|e| e.len()).sum();
                    c.used_bytes.set(c.used_bytes.get() - gone);
                    c.live_entries.set(c.live_entries.get() - q.len());
                    q.clear();
                }
                c.used_bytes.set(c.used_bytes.get() + e.len());
                c.live_entries.set(c.live_entries.get() + 1);
                order.push_back((self.id, base));
                q.push_back(e);
            }
        }
        c.evict();
        c.compact_order();
    }

    /// The shard cache's (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.cache.hits(), self.cache.misses())
    }

    /// Forgets this partition's entries (the log was truncated or rewound).
    pub fn clear(&self) {
        self.cache.drop_entries(self.id);
    }

    /// Whole batches from the one containing `offset`, none at or past
    /// `high_watermark`, at least one and then up to `max_bytes` in all, as
    /// pieces of the cached buffers (no copy). `None` when `offset` is not
    /// cached.
    pub fn read(
        &self,
        offset: Offset,
        high_watermark: Offset,
        max_bytes: usize,
    ) -> Option<Records> {
        if !self.cache.enabled() || offset >= high_watermark {
            return None;
        }
        let parts = self.cache.parts.borrow();
        let hit = parts.get(&self.id).and_then(|q| {
            let i = q.partition_point(|e| e.next <= offset);
            let first = q.get(i)?;
            if first.base > offset {
                return None; // below the cached range
            }
            let mut out = Records::new();
            for e in q.range(i..) {
                let total = out.len();
                if e.base >= high_watermark || (total > 0 && total + e.len() > max_bytes) {
                    break;
                }
                out.push(e.head.clone());
                out.push(e.body.clone());
                if out.len() >= max_bytes {
                    break;
                }
            }
            Some(out)
        });
        let counter = if hit.is_some() {
            &self.cache.hits
        } else {
            &self.cache.misses
        };
        counter.set(counter.get() + 1);
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of `sizes` bytes (byte value = index), one offset per byte,
    /// starting at offset `base`, each split into a 3-byte head and a body,
    /// all from one buffer (returned too).
    fn group(base: Offset, sizes: &[usize]) -> (Bytes, Vec<CachedBatch>) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let start = buf.len();
            buf.extend(std::iter::repeat_n(i as u8, n));
            ranges.push(start..buf.len());
        }
        let all = Bytes::from(buf);
        let mut off = base;
        let items = ranges
            .into_iter()
            .map(|r| {
                let n = r.len();
                let cut = r.start + n.min(3);
                let b = CachedBatch {
                    base: off,
                    next: off + n as u64,
                    head: all.slice(r.start..cut),
                    body: all.slice(cut..r.end),
                };
                off += n as u64;
                b
            })
            .collect();
        (all, items)
    }

    #[test]
    fn reads_whole_batches_zero_copy() {
        let cache = BatchCache::new(1 << 20);
        let p = cache.register();
        let (g, items) = group(0, &[10, 20, 30]);
        p.insert(items);
        // From the middle of batch 1: batches 1 and 2, pieces of `g`.
        let r = p.read(15, 60, 1000).expect("hit");
        assert_eq!(r.len(), 50);
        assert_eq!(r.to_bytes(), g.slice(10..));
        assert_eq!(r.pieces()[0].as_ptr(), g[10..].as_ptr(), "zero copy");
        assert_eq!(r.pieces().len(), 4, "head and body of each batch");
        // max_bytes: the first batch always, then only whole batches that fit.
        assert_eq!(p.read(0, 60, 5).expect("hit").len(), 10);
        assert_eq!(p.read(0, 60, 35).expect("hit").len(), 30);
        // The high watermark bounds the read.
        assert_eq!(p.read(0, 30, 1000).expect("hit").len(), 30);
        assert!(p.read(60, 60, 1000).is_none());
        assert_eq!(cache.hits(), 4);
    }

    #[test]
    fn spans_inserts_and_misses_below_the_range() {
        let cache = BatchCache::new(1 << 20);
        let p = cache.register();
        let (_, i1) = group(100, &[10]);
        let (_, i2) = group(110, &[10]);
        p.insert(i1);
        p.insert(i2);
        let r = p.read(100, 120, 1000).expect("hit");
        assert_eq!(r.len(), 20);
        assert_eq!(&r.to_bytes()[..], &[0u8; 20][..]);
        assert!(p.read(99, 120, 1000).is_none(), "below the cached range");
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
    }

    #[test]
    fn budget_evicts_oldest_across_partitions_and_drop_frees() {
        let cache = BatchCache::new(100);
        let a = cache.register();
        let b = cache.register();
        a.insert(group(0, &[40, 40]).1);
        b.insert(group(0, &[40]).1);
        // 120 > 100: a's oldest batch went.
        assert_eq!(cache.used_bytes(), 80);
        assert!(a.read(0, 80, 1000).is_none());
        assert_eq!(a.read(40, 80, 1000).expect("hit").len(), 40);
        assert_eq!(b.read(0, 40, 1000).expect("hit").len(), 40);
        drop(a);
        assert_eq!(cache.used_bytes(), 40);
        // A batch larger than the budget is not kept.
        b.insert(group(40, &[500]).1);
        assert_eq!(cache.used_bytes(), 0);
        assert!(b.read(40, 540, 1000).is_none());
    }

    #[test]
    fn rewind_restarts_the_partition_and_order_stays_bounded() {
        let cache = BatchCache::new(1 << 30);
        let p = cache.register();
        for round in 0..5_000u64 {
            // Each round rewinds to offset 0 (e.g. after a failed write).
            p.insert(group(0, &[1, 1]).1);
            assert_eq!(cache.used_bytes(), 2, "round {round}");
        }
        assert!(cache.order.borrow().len() <= 2 * 2 + 1024 + 2);
        let gone = cache.register();
        for _ in 0..3_000 {
            let q = cache.register();
            q.insert(group(0, &[1]).1);
        }
        drop(gone);
        assert_eq!(cache.used_bytes(), 2);
        assert!(cache.order.borrow().len() <= 2 * 2 + 1024 + 2);
    }

    #[test]
    fn disabled_cache_never_answers() {
        let cache = BatchCache::new(0);
        let p = cache.register();
        assert!(!p.enabled());
        p.insert(group(0, &[10]).1);
        assert!(p.read(0, 10, 100).is_none());
        assert_eq!(cache.used_bytes(), 0);
    }
}
