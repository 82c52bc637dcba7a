//! Fetch with long polling.
//!
//! Owns: the response size cap (request `max_bytes`, capped by
//! `limits.max_fetch_bytes`, whole batches only, at least one batch so a
//! consumer always progresses), and the wait: when fewer than `min_bytes`
//! are available the request waits until any requested partition gets new
//! data (on its owner shard, local or over the mesh) or until `max_wait_ms`
//! (capped by `limits.max_fetch_wait_ms`), then fetches again.
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
/// `budget_bytes`, except that the first non-empty partition keeps at least
/// one batch. Returns the total kept.
fn apply_budget(results: &mut [PartResult<FetchData>], budget_bytes: usize) -> usize {
    let mut used = 0usize;
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
    used
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

    let mut results;
    let mut rounds = 0;
    loop {
        rounds += 1;
        results = shard.fetch_many(items.clone(), budget_bytes).await;
        let total = apply_budget(&mut results, budget_bytes as usize);
        let any_error = results.iter().any(|r| r.is_err());
        if items.is_empty()
            || total >= req.min_bytes as usize
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
            .zip(&results)
            .filter_map(|(it, r)| {
                r.as_ref().ok().map(|d| WaitItem {
                    topic: it.topic.clone(),
                    partition: it.partition,
                    offset: d.high_watermark.max(it.offset),
                })
            })
            .collect();
        shard.wait_any(waits, deadline).await;
    }

    let mut results = results.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| FetchTopicResult {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| partition_result(p.partition, results.next()))
                .collect(),
        })
        .collect();
    Response::ok(
        correlation_id,
        ResponseBody::Fetch(FetchResponse { topics }),
    )
}

fn partition_result(partition: u32, r: Option<PartResult<FetchData>>) -> FetchPartitionResult {
    match r {
        Some(Ok(d)) => FetchPartitionResult {
            partition,
            error: None,
            high_watermark: Some(d.high_watermark),
            log_start_offset: Some(d.log_start_offset),
            log_end_offset: Some(d.log_end_offset),
            records: d.records,
        },
        Some(Err(e)) => error_result(partition, e),
        None => error_result(
            partition,
            WireError::new(crate::protocol::ErrorCode::Internal, "missing result"),
        ),
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
        let used = apply_budget(&mut results, 10);
        assert_eq!(used, a.len());
        assert_eq!(
            results[2].as_ref().map(|d| d.records.len()).ok(),
            Some(a.len())
        );
        assert_eq!(results[3].as_ref().map(|d| d.records.len()).ok(), Some(0));

        let mut results = vec![data(two.clone()), data(a.clone())];
        let used = apply_budget(&mut results, two.len() + a.len());
        assert_eq!(used, two.len() + a.len());
        let mut results = vec![data(two.clone()), data(a.clone())];
        let used = apply_budget(&mut results, two.len() + a.len() - 1);
        assert_eq!(used, two.len());
    }
}
