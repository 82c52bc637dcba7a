//! Consumer load: one [`Consumer`] connection tailing its partitions.
//!
//! In e2e mode every record's first 8 bytes are the producer's intended send
//! time (wall clock ns); end-to-end latency is `receive time - that`, taken
//! once per fetch response (all its records arrived together).
//!
//! Invariants: a consumer stops at `end` in consume mode; in e2e mode it
//! stops once every producer has finished and the consumers together have
//! read at least as many records as were acknowledged, or at the drain
//! deadline, whichever comes first. A failed poll is counted and retried
//! after a pause; it never ends the run early.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corelog::client::{ClientConfig, Consumer, ConsumerConfig, SeekTo};

use crate::error::BenchError;
use crate::runner::RunCtx;
use crate::stats::ErrorKind;
use crate::workload::{Mode, StartFrom, Workload};

/// Pause after a failed poll, in ms.
const POLL_ERROR_PAUSE_MS: u64 = 50;
/// Stamps further than this in the future are not send times (foreign
/// data in the topic), in ns.
const MAX_CLOCK_SKEW_NS: u64 = 1_000_000_000;

/// Connects one consumer and assigns it `(topic, partitions)`.
pub async fn connect(
    w: &Workload,
    id: u32,
    assignment: &[(String, Vec<u32>)],
) -> Result<Consumer, BenchError> {
    let config = ConsumerConfig {
        client: ClientConfig {
            bootstrap: w.bootstrap.clone(),
            client_id: format!("corelog-bench-consumer-{id}"),
            request_timeout_ms: w.request_timeout_ms,
            ..ClientConfig::default()
        },
        max_wait_ms: w.fetch_max_wait_ms,
        min_bytes: 1,
        max_partition_bytes: w.fetch_max_partition_bytes,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(config)
        .await
        .map_err(|e| BenchError::client(format!("consumer {id}: connect to {}", w.bootstrap), e))?;
    let start = match w.from {
        StartFrom::Earliest => SeekTo::Earliest,
        StartFrom::Latest => SeekTo::Latest,
    };
    for (topic, partitions) in assignment {
        consumer
            .assign(topic, partitions, start)
            .await
            .map_err(|e| BenchError::client(format!("consumer {id}: assign {topic}"), e))?;
    }
    Ok(consumer)
}

/// Polls until the stop condition (module header).
pub async fn run(mut consumer: Consumer, id: u32, ctx: Rc<RunCtx>) {
    let e2e = ctx.workload.mode == Mode::E2e;
    // Only stamps from this run count (the schedule starts at `start`).
    let min_stamp = ctx.clock.epoch_ns(ctx.start);
    loop {
        let now = Instant::now();
        if ctx.shared.abort.load(Ordering::Relaxed) || now >= ctx.drain_deadline {
            break;
        }
        if now >= ctx.end {
            if !e2e {
                break;
            }
            let shared = &ctx.shared;
            if shared.producers_running.load(Ordering::SeqCst) == 0
                && shared.consumed.load(Ordering::SeqCst) >= shared.acked.load(Ordering::SeqCst)
            {
                break;
            }
        }
        match consumer.poll().await {
            Ok(records) => {
                if records.is_empty() {
                    continue;
                }
                let now_ns = ctx.clock.now_ns();
                let mut bytes = 0u64;
                let mut rec = ctx.recorder.borrow_mut();
                for r in &records {
                    let Some(v) = &r.value else { continue };
                    bytes += v.len() as u64;
                    if e2e && v.len() >= 8 {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&v[..8]);
                        let sent = u64::from_le_bytes(stamp);
                        if sent >= min_stamp && sent <= now_ns.saturating_add(MAX_CLOCK_SKEW_NS) {
                            rec.e2e_us(now_ns.saturating_sub(sent) / 1000);
                        }
                    }
                }
                let n = records.len() as u64;
                rec.consumed(n, bytes);
                drop(rec);
                ctx.shared.consumed.fetch_add(n, Ordering::SeqCst);
            }
            Err(e) => {
                ctx.recorder
                    .borrow_mut()
                    .error(ErrorKind::Consume, || format!("consumer {id}: poll: {e}"));
                corelog::timer::sleep_once(Duration::from_millis(POLL_ERROR_PAUSE_MS)).await;
            }
        }
    }
}
