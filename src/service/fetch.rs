//! Fetch with long polling and the response byte budget.
//!
//! Owns: the budget (request `max_bytes` capped by `limits.max_fetch_bytes`,
//! whole batches only, at least one batch so a consumer always progresses:
//! [`apply_budget`], the one place it is enforced), and the wait: when fewer
//! than `min_bytes` are available the request waits until any requested
//! partition gets new data (on its owner shard, local or over the mesh) or
//! until `max_wait` (capped by `limits.max_fetch_wait_ms`), then fetches only
//! what is new (from the offset after the last batch gathered) and adds it.
//!
//! Invariants: a fetch returns as soon as data arrives, not at its deadline;
//! it never waits past the deadline; a partition error ends the wait at once
//! (the client needs to hear about it); the wait loop is bounded in rounds;
//! the records returned add up to at most the budget (asserted) unless the
//! first batch alone is larger; record bytes are kept as the chunks the
//! partition returned (no copy, no join).
//!
//! Must not know: any wire protocol (the request is [`FetchRequest`]).

use std::rc::Rc;
use std::time::Instant;

use crate::partition::FetchData;
use crate::protocol::records::Records;
use crate::protocol::{ErrorCode, WireError};
use crate::shard::{PartResult, Shard};

use super::owner::{FetchOp, WaitItem, WaitOp};
use super::types::{FetchItem, FetchRequest, Fetched};

/// Most fetch-then-wait rounds one request makes.
const MAX_ROUNDS: usize = 10_000;

/// Trims the results in request order so their records add up to at most
/// `budget_bytes - already_used`, except that when nothing was used yet the
/// first non-empty partition keeps at least one batch. Returns the bytes
/// kept.
fn apply_budget(
    results: &mut [PartResult<FetchData>],
    budget_bytes: usize,
    already_used: usize,
) -> usize {
    let mut used = already_used;
    for d in results.iter_mut().flatten() {
        if d.records.is_empty() {
            continue;
        }
        let room = budget_bytes.saturating_sub(used);
        let mut kept = d.records.whole_batches_within(room);
        let first_exception = kept.is_empty() && used == 0;
        if first_exception {
            kept = d.records.first_batch();
        }
        // The budget holds, but for one whole first batch.
        assert!(kept.len() <= room || first_exception);
        used += kept.len();
        d.records = kept;
    }
    used - already_used
}

/// What one partition has gathered so far.
struct Gathered {
    records: Records,
    next_offset: u64,
    /// The latest offsets (records left empty) or the error.
    last: Option<PartResult<FetchData>>,
}

/// Fetches every item (results in item order), waiting for `min_bytes`
/// as the module header says.
pub async fn fetch(shard: &Rc<Shard>, req: FetchRequest) -> Vec<PartResult<Fetched>> {
    let limits = &shard.config.limits;
    let budget_bytes = req.max_bytes.min(limits.max_fetch_bytes);
    let max_wait_ms = u64::try_from(req.max_wait.as_millis())
        .unwrap_or(u64::MAX)
        .min(u64::from(limits.max_fetch_wait_ms));
    let clock = shard.clock().clone();
    let deadline = clock.now() + std::time::Duration::from_millis(max_wait_ms);

    let items: Vec<FetchItem> = req
        .items
        .into_iter()
        .map(|it| FetchItem {
            max_bytes: it.max_bytes.min(budget_bytes),
            ..it
        })
        .collect();
    let mut gathered: Vec<Gathered> = items
        .iter()
        .map(|it| Gathered {
            records: Records::new(),
            next_offset: it.offset,
            last: None,
        })
        .collect();

    // Each round fetches only what is new since the previous one (from the
    // offset after the last batch gathered), so waiting for min_bytes never
    // re-reads data.
    let mut total = 0usize;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut index = Vec::new();
        let mut round_items = Vec::new();
        for (i, (it, g)) in items.iter().zip(&gathered).enumerate() {
            let room = (it.max_bytes as usize).saturating_sub(g.records.len());
            if rounds > 1 && room == 0 {
                continue;
            }
            index.push(i);
            round_items.push(FetchItem {
                offset: g.next_offset,
                max_bytes: u32::try_from(room).unwrap_or(u32::MAX),
                ..it.clone()
            });
        }
        let remaining =
            u32::try_from((budget_bytes as usize).saturating_sub(total)).unwrap_or(u32::MAX);
        let mut results = shard
            .scatter(
                round_items,
                |it| (it.topic.as_str(), it.partition),
                |items| FetchOp {
                    items,
                    read_bytes: remaining,
                },
            )
            .await;
        assert_eq!(results.len(), index.len());
        total += apply_budget(&mut results, budget_bytes as usize, total);
        let mut any_error = false;
        for (i, r) in index.into_iter().zip(results) {
            let g = &mut gathered[i];
            match r {
                Ok(mut d) => {
                    if !d.records.is_empty() {
                        g.next_offset = d.records.next_offset().unwrap_or(g.next_offset);
                        g.records.append(std::mem::take(&mut d.records));
                    }
                    g.last = Some(Ok(d));
                }
                Err(e) => {
                    any_error = true;
                    g.last = Some(Err(e));
                }
            }
        }
        if items.is_empty()
            || total >= req.min_bytes as usize
            || total >= budget_bytes as usize
            || any_error
            || rounds >= MAX_ROUNDS
            || clock.now() >= deadline
            || shard.is_stopping()
        {
            break;
        }
        // Wait for any partition to move past what we just saw.
        let waits: Vec<WaitItem> = items
            .iter()
            .zip(&gathered)
            .filter_map(|(it, g)| match &g.last {
                Some(Ok(d)) => Some(WaitItem {
                    topic: it.topic.clone(),
                    partition: it.partition,
                    offset: d.high_watermark.max(g.next_offset),
                }),
                _ => None,
            })
            .collect();
        wait_any(shard, waits, deadline).await;
    }

    gathered.into_iter().map(Gathered::into_result).collect()
}

impl Gathered {
    fn into_result(self) -> PartResult<Fetched> {
        match self.last {
            Some(Ok(d)) => Ok(Fetched {
                records: self.records,
                high_watermark: d.high_watermark,
                log_start_offset: d.log_start_offset,
                log_end_offset: d.log_end_offset,
            }),
            Some(Err(e)) => Err(e),
            None => Err(WireError::new(ErrorCode::Internal, "missing result")),
        }
    }
}

/// Resolves as soon as any item's partition has data past its offset
/// (wherever it lives), or at `deadline`. Each owner gets one [`WaitOp`]; a
/// wait that is no longer needed simply answers later and its reply is
/// dropped.
pub async fn wait_any(shard: &Rc<Shard>, items: Vec<WaitItem>, deadline: Instant) {
    use crate::shard::ops::{first_of, LocalBoxFuture};
    let (groups, _unknown) = shard.group_by_owner(items, |it| (it.topic.as_str(), it.partition));
    let mut futs: Vec<LocalBoxFuture<'static, ()>> = Vec::new();
    for (s, group) in groups.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let items: Vec<WaitItem> = group.into_iter().map(|(_, it)| it).collect();
        let started = shard.start_on(s, WaitOp { items, deadline }).await;
        futs.push(Box::pin(async move {
            let _ = started.wait().await;
        }));
    }
    if futs.is_empty() {
        return;
    }
    // Never past the deadline, even if a peer is slow to answer.
    futs.push(Box::pin(shard.clock().sleep_until(deadline)));
    first_of(futs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchBuilder;
    use bytes::Bytes;

    fn batch(value: &[u8]) -> Bytes {
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(value), &[]);
        b.finish()
    }

    fn data(records: Bytes) -> PartResult<FetchData> {
        Ok(FetchData {
            records: records.into(),
            high_watermark: 10,
            log_start_offset: 0,
            log_end_offset: 10,
        })
    }

    #[test]
    fn trim_keeps_whole_batches() {
        let a = batch(b"aaaa");
        let b = batch(b"bbbbbbbb");
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let all = Records::from(Bytes::from(all));
        let within = |n| all.whole_batches_within(n).len();
        assert_eq!(within(all.len()), all.len());
        assert_eq!(within(all.len() - 1), a.len());
        assert_eq!(within(a.len()), a.len());
        assert_eq!(within(a.len() - 1), 0);
    }

    #[test]
    fn budget_keeps_first_batch_and_whole_batches() {
        let a = batch(&[b'a'; 100]);
        let two: Bytes = [a.to_vec(), a.to_vec()].concat().into();
        let mut results = vec![
            Err(WireError::new(
                crate::protocol::ErrorCode::UnknownTopicOrPartition,
                "x",
            )),
            data(Bytes::new()),
            data(two.clone()),
            data(a.clone()),
        ];
        // budget smaller than one batch: the first non-empty keeps one batch
        let used = apply_budget(&mut results, 10, 0);
        assert_eq!(used, a.len());
        assert_eq!(
            results[2].as_ref().map(|d| d.records.len()).ok(),
            Some(a.len())
        );
        assert_eq!(results[3].as_ref().map(|d| d.records.len()).ok(), Some(0));

        let mut results = vec![data(two.clone()), data(a.clone())];
        let used = apply_budget(&mut results, two.len() + a.len(), 0);
        assert_eq!(used, two.len() + a.len());
        let mut results = vec![data(two.clone()), data(a.clone())];
        let used = apply_budget(&mut results, two.len() + a.len() - 1, 0);
        assert_eq!(used, two.len());
        // with bytes already used, no first-batch exception
        let mut results = vec![data(a.clone())];
        assert_eq!(apply_budget(&mut results, a.len() + 5, 10), 0);
        assert_eq!(Records::from(a.clone()).next_offset(), Some(1));
        assert_eq!(Records::new().next_offset(), None);
    }
}
