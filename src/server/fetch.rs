//! Fetch with long polling.
//!
//! Owns: the response size cap (request `max_bytes`, capped by
//! `limits.max_fetch_bytes`, whole batches only, at least one batch so a
//! consumer always progresses), and the wait: when fewer than `min_bytes`
//! are available the request waits until any requested partition gets new
//! data (on its owner shard, local or over the mesh) or until `max_wait_ms`
//! (capped by `limits.max_fetch_wait_ms`), then fetches only what is new
//! (from the offset after the last batch gathered) and adds it.
//!
//! Invariants: a fetch returns as soon as data arrives, not at its deadline;
//! it never waits past the deadline; a partition error ends the wait at once
//! (the client needs to hear about it); the wait loop is bounded in rounds.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::partition::FetchData;
use crate::protocol::batch;
use crate::protocol::messages::*;
use crate::protocol::{CorrelationId, WireError};
use crate::shard::mesh::{FetchItem, PartResult, WaitItem};
use crate::shard::ops::trim_to_batches;
use crate::shard::Shard;

/// Most fetch-then-wait rounds one request makes.
const MAX_ROUNDS: usize = 10_000;

/// The first whole batch of `records` (or nothing if none is complete).
fn first_batch(records: &Bytes) -> Bytes {
    match batch::batches(records).next() {
        Some(Ok((_, b))) => records.slice_ref(b),
        _ => Bytes::new(),
    }
}

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
        let mut kept = trim_to_batches(&d.records, room);
        if kept.is_empty() && used == 0 {
            kept = first_batch(&d.records);
        }
        used += kept.len();
        d.records = kept;
    }
    used - already_used
}

/// The offset after the last whole batch in `records`.
fn next_offset_after(records: &Bytes) -> Option<u64> {
    batch::batches(records)
        .filter_map(Result::ok)
        .last()
        .map(|(h, _)| h.next_offset())
}

/// What one partition has gathered so far.
struct Gathered {
    chunks: Vec<Bytes>,
    bytes: usize,
    next_offset: u64,
    /// The latest offsets (records left empty) or the error.
    last: Option<PartResult<FetchData>>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    correlation_id: CorrelationId,
    req: FetchRequest,
) -> Response {
    let limits = &shard.config.limits;
    let budget_bytes = match req.max_bytes {
        0 => limits.max_fetch_bytes,
        n => n.min(limits.max_fetch_bytes),
    };
    let max_wait_ms = req.max_wait_ms.min(limits.max_fetch_wait_ms);
    let deadline = Instant::now() + Duration::from_millis(max_wait_ms as u64);

    let items: Vec<FetchItem> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| FetchItem {
                topic: t.name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: match p.max_bytes {
                    0 => budget_bytes,
                    n => n.min(budget_bytes),
                },
            })
        })
        .collect();
    let mut gathered: Vec<Gathered> = items
        .iter()
        .map(|it| Gathered {
            chunks: Vec::new(),
            bytes: 0,
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
            let room = (it.max_bytes as usize).saturating_sub(g.bytes);
            if rounds > 1 && room == 0 {
                continue;
            }
            index.push(i);
            round_items.push(FetchItem {
                offset: g.next_offset,
                max_bytes: room.min(u32::MAX as usize) as u32,
                ..it.clone()
            });
        }
        let remaining = (budget_bytes as usize).saturating_sub(total);
        let mut results = shard
            .fetch_many(round_items, remaining.min(u32::MAX as usize) as u32)
            .await;
        total += apply_budget(&mut results, budget_bytes as usize, total);
        let mut any_error = false;
        for (i, r) in index.into_iter().zip(results) {
            let g = &mut gathered[i];
            match r {
                Ok(mut d) => {
                    if !d.records.is_empty() {
                        g.next_offset = next_offset_after(&d.records).unwrap_or(g.next_offset);
                        g.bytes += d.records.len();
                        g.chunks.push(std::mem::take(&mut d.records));
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
            || Instant::now() >= deadline
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
        shard.wait_any(waits, deadline).await;
    }

    let mut gathered = gathered.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| FetchTopicResult {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| partition_result(p.partition, gathered.next()))
                .collect(),
        })
        .collect();
    Response::ok(
        correlation_id,
        ResponseBody::Fetch(FetchResponse { topics }),
    )
}

/// The records of all chunks as one buffer (no copy for a single chunk).
fn join_chunks(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    }
}

fn partition_result(partition: u32, g: Option<Gathered>) -> FetchPartitionResult {
    let missing = || WireError::new(crate::protocol::ErrorCode::Internal, "missing result");
    let Some(g) = g else {
        return error_result(partition, missing());
    };
    match g.last {
        Some(Ok(d)) => FetchPartitionResult {
            partition,
            error: None,
            high_watermark: Some(d.high_watermark),
            log_start_offset: Some(d.log_start_offset),
            log_end_offset: Some(d.log_end_offset),
            records: join_chunks(g.chunks),
        },
        Some(Err(e)) => error_result(partition, e),
        None => error_result(partition, missing()),
    }
}

fn error_result(partition: u32, e: WireError) -> FetchPartitionResult {
    FetchPartitionResult {
        partition,
        error: Some(e),
        high_watermark: None,
        log_start_offset: None,
        log_end_offset: None,
        records: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchBuilder;

    fn batch(value: &[u8]) -> Bytes {
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(value), &[]);
        b.finish()
    }

    fn data(records: Bytes) -> PartResult<FetchData> {
        Ok(FetchData {
            records,
            high_watermark: 10,
            log_start_offset: 0,
            log_end_offset: 10,
        })
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
        assert_eq!(next_offset_after(&a), Some(1));
        assert_eq!(next_offset_after(&Bytes::new()), None);
    }
}
