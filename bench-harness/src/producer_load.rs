//! Producer load: one [`Producer`] connection sending on a schedule.
//!
//! Open loop (a rate is set): send `i` has an intended time fixed in
//! advance (each message advances the schedule by `size / rate`); the sender
//! sleeps until it, and publish latency is `ack time - intended time`, so a
//! stall in the broker (or in this generator) shows up as latency of every
//! send it delayed instead of being hidden (no coordinated omission). Closed
//! loop (no rate): sends as fast as `max_in_flight` unacknowledged records
//! allow, latency measured from the `send` call.
//!
//! Invariants:
//! - At most `max_in_flight` records of one producer are sent and not yet
//!   acknowledged (a local semaphore); a send that waits for a permit keeps
//!   its intended time, so the wait counts as latency.
//! - The first 8 bytes of every value are the intended send time (wall clock,
//!   ns since the Unix epoch, little endian): consumers read it for e2e.
//! - Records go to an explicit partition (round robin without keys,
//!   `partition_for_key` with keys); each partition has one acker task that
//!   awaits its records' delivery futures in send order (batches of one
//!   partition are acknowledged in order).
//! - Every send scheduled before `end` is made, unless the sender is still
//!   behind more than `BEHIND_GRACE` after `end`: then the sends still due
//!   are counted (`unsent_scheduled`), not silently dropped.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use corelog::client::{
    partition_for_key, ClientConfig, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::error::BenchError;
use crate::runner::{RunCtx, TopicSpec};
use crate::stats::{ErrorKind, Recorder};
use crate::workload::{KeyDist, MessageSize, ValueKind, Workload};

/// Sends due before the end are still made this long after it; later,
/// the rest of the schedule is counted as unsent.
const BEHIND_GRACE: Duration = Duration::from_millis(200);
/// Pause after a refused send, so a dead broker does not spin the CPU, in ms.
const SEND_ERROR_PAUSE_MS: u64 = 10;

/// Connects one producer and learns the partition counts (so the first
/// measured send does not pay for metadata).
pub async fn connect(w: &Workload, id: u32, topics: &[TopicSpec]) -> Result<Producer, BenchError> {
    let config = ProducerConfig {
        client: ClientConfig {
            bootstrap: w.bootstrap.clone(),
            client_id: format!("corelog-bench-producer-{id}"),
            request_timeout_ms: w.request_timeout_ms,
            ..ClientConfig::default()
        },
        acks: w.acks.to_client(),
        linger_ms: w.linger_ms,
        batch_bytes: w.batch_bytes,
        max_in_flight_per_partition: w.partition_in_flight,
        compression: w.compression,
        // Idempotent (the client's default) when the window allows it.
        idempotence: (1..=corelog::client::MAX_IN_FLIGHT_WITH_IDEMPOTENCE)
            .contains(&w.partition_in_flight),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(config)
        .await
        .map_err(|e| BenchError::client(format!("producer {id}: connect to {}", w.bootstrap), e))?;
    for t in topics {
        producer
            .partition_count(&t.name)
            .await
            .map_err(|e| BenchError::client(format!("producer {id}: describe {}", t.name), e))?;
    }
    Ok(producer)
}

/// A sent record waiting for its acknowledgement.
struct Pending {
    intended: Instant,
    /// When the record was handed to the producer (after any wait for the
    /// schedule or a permit).
    sent: Instant,
    bytes: usize,
    fut: DeliveryFuture,
}

/// Runs one producer until `ctx.end`, then waits for every acknowledgement.
pub async fn run(producer: Producer, id: u32, topics: Rc<Vec<TopicSpec>>, ctx: Rc<RunCtx>) {
    let w = &ctx.workload;
    let sem = Rc::new(Semaphore::new(w.max_in_flight));
    // One acker per (topic, partition); `first[t]` is topic t's first index.
    let mut first = Vec::with_capacity(topics.len());
    let mut senders: Vec<LocalSender<Pending>> = Vec::new();
    let mut ackers = Vec::new();
    for t in topics.iter() {
        first.push(senders.len());
        for _ in 0..t.partitions {
            let (tx, rx) = local_channel::new_unbounded();
            senders.push(tx);
            ackers.push(glommio::spawn_local(acker(
                rx,
                sem.clone(),
                ctx.recorder.clone(),
            )));
        }
    }
    let producer = Rc::new(producer);
    let counting = Rc::new(Cell::new(true));
    let counter = glommio::spawn_local(count_requests(
        producer.clone(),
        ctx.recorder.clone(),
        counting.clone(),
    ));
    let mut rng = SmallRng::seed_from_u64(0x5eed_0000 ^ u64::from(id) ^ ctx.clock.now_ns());
    let mut payload = vec![0u8; w.message_bytes.max_bytes()];
    rng.fill_bytes(&mut payload);
    let rate = w.rate_bytes_per_s_per_producer();
    let mut next = ctx.start;
    let mut round_robin = id as usize;
    loop {
        let size = pick_size(w.message_bytes, &mut rng);
        let intended = match rate {
            Some(r) => {
                let t = next;
                next += Duration::from_secs_f64(size as f64 / r);
                if t >= ctx.end {
                    break;
                }
                let now = Instant::now();
                if now >= ctx.end + BEHIND_GRACE {
                    // Far behind schedule when the run ended: count what
                    // was due and never sent.
                    let due = ctx.end.saturating_duration_since(t).as_secs_f64() * r
                        / w.message_bytes.mean_bytes();
                    ctx.recorder.borrow_mut().unsent(1 + due as u64);
                    break;
                }
                if t > now {
                    corelog::timer::sleep_once_until(t).await;
                }
                Some(t)
            }
            None if Instant::now() >= ctx.end => break,
            None => None,
        };
        // A wait for a permit keeps the intended time: it is latency.
        if !matches!(sem.try_acquire(1), Ok(true)) && sem.acquire(1).await.is_err() {
            break; // the semaphore is never closed; defensive
        }
        let sent = Instant::now();
        let intended = intended.unwrap_or(sent);
        let (topic_idx, partition, key) = route(w, &topics, &mut round_robin, &mut rng);
        let mut value = BytesMut::with_capacity(size);
        value.put_u64_le(ctx.clock.epoch_ns(intended));
        match w.values {
            ValueKind::Same => value.put_slice(&payload[..size - 8]),
            ValueKind::Random => {
                rng.fill_bytes(&mut payload[..size - 8]);
                value.put_slice(&payload[..size - 8]);
            }
            ValueKind::Json => put_json_like(&mut value, size - 8, &mut rng),
        }
        let record = ProducerRecord {
            topic: topics[topic_idx].name.clone(),
            partition: Some(partition),
            key,
            value: Some(value.freeze()),
            timestamp_ms: None,
            headers: Vec::new(),
        };
        match producer.send(record).await {
            Ok(fut) => {
                let idx = first[topic_idx] + partition as usize;
                let pending = Pending {
                    intended,
                    sent,
                    bytes: size,
                    fut,
                };
                if senders[idx].try_send(pending).is_err() {
                    sem.signal(1);
                }
            }
            Err(e) => {
                sem.signal(1);
                ctx.recorder
                    .borrow_mut()
                    .error(ErrorKind::Send, || format!("producer {id}: send: {e}"));
                corelog::timer::sleep_once(Duration::from_millis(SEND_ERROR_PAUSE_MS)).await;
            }
        }
        if ctx.shared.abort.load(Ordering::Relaxed) {
            break;
        }
    }
    // Send what is still lingering, then wait for every acknowledgement
    // (each bounded by the request timeout).
    let _ = producer.flush().await;
    drop(senders);
    let mut acked = 0u64;
    for a in ackers {
        acked += a.await;
    }
    counting.set(false);
    counter.await;
    ctx.shared.acked.fetch_add(acked, Ordering::SeqCst);
    ctx.shared.producers_running.fetch_sub(1, Ordering::SeqCst);
}

/// How often the acknowledged-request count is moved into the recorder, in
/// ms (so requests land in about the second they were acknowledged).
const REQUEST_COUNT_INTERVAL_MS: u64 = 50;

/// Moves the producer's acknowledged-request count into the recorder until
/// `counting` is cleared, then once more.
async fn count_requests(
    producer: Rc<Producer>,
    recorder: Rc<RefCell<Recorder>>,
    counting: Rc<Cell<bool>>,
) {
    let mut last = producer.acked_requests();
    loop {
        let more = counting.get();
        if more {
            corelog::timer::sleep_once(Duration::from_millis(REQUEST_COUNT_INTERVAL_MS)).await;
        }
        let now = producer.acked_requests();
        recorder.borrow_mut().requests(now - last);
        last = now;
        if !more {
            return;
        }
    }
}

/// Awaits one partition's deliveries in send order; returns how many succeeded.
async fn acker(
    rx: LocalReceiver<Pending>,
    sem: Rc<Semaphore>,
    recorder: Rc<RefCell<Recorder>>,
) -> u64 {
    let mut ok = 0u64;
    while let Some(p) = rx.recv().await {
        let result = p.fut.await;
        let now = Instant::now();
        match result {
            Ok(_) => {
                ok += 1;
                recorder.borrow_mut().publish(
                    now.saturating_duration_since(p.intended),
                    now.saturating_duration_since(p.sent),
                    p.bytes,
                );
            }
            Err(e) => recorder
                .borrow_mut()
                .error(ErrorKind::Delivery, || format!("delivery: {e}")),
        }
        sem.signal(1);
    }
    ok
}

fn pick_size(size: MessageSize, rng: &mut SmallRng) -> usize {
    match size {
        MessageSize::Fixed(n) => n,
        MessageSize::Range { min, max } => rng.gen_range(min..=max),
    }
}

/// Chooses topic, partition and key of the next record.
fn route(
    w: &Workload,
    topics: &[TopicSpec],
    round_robin: &mut usize,
    rng: &mut SmallRng,
) -> (usize, u32, Option<Bytes>) {
    let key_id = match w.keys {
        KeyDist::None | KeyDist::Pinned => None,
        KeyDist::Uniform => Some(rng.gen_range(0..w.key_space)),
        KeyDist::Zipf => {
            let u: f64 = rng.gen();
            let k = (w.key_space as f64).powf(u).floor() as u64;
            Some(k.saturating_sub(1).min(w.key_space - 1))
        }
    };
    match key_id {
        None => {
            // Round robin over every (topic, partition).
            let total: usize = topics.iter().map(|t| t.partitions as usize).sum();
            let mut i = *round_robin % total.max(1);
            // Pinned: `round_robin` stays the producer's id.
            if w.keys != KeyDist::Pinned {
                *round_robin = round_robin.wrapping_add(1);
            }
            for (ti, t) in topics.iter().enumerate() {
                if i < t.partitions as usize {
                    return (ti, i as u32, None);
                }
                i -= t.partitions as usize;
            }
            (0, 0, None)
        }
        Some(k) => {
            let ti = *round_robin % topics.len().max(1);
            *round_robin = round_robin.wrapping_add(1);
            let key = Bytes::copy_from_slice(&k.to_be_bytes());
            let p = partition_for_key(&key, topics[ti].partitions.max(1));
            (ti, p, Some(key))
        }
    }
}

/// Appends exactly `n` bytes of JSON-like text: objects with repeating field
/// names and varying numbers and ids, as event payloads look.
fn put_json_like(out: &mut BytesMut, n: usize, rng: &mut SmallRng) {
    const EVENTS: [&str; 4] = ["page_view", "click", "add_to_cart", "checkout"];
    let start = out.len();
    while out.len() - start < n {
        let obj = format!(
            "{{\"user_id\":{},\"session\":\"s-{:08x}\",\"event\":\"{}\",\"price\":{}.{:02},\"ok\":true}},",
            rng.gen_range(0..100_000u32),
            rng.gen::<u32>(),
            EVENTS[rng.gen_range(0..EVENTS.len())],
            rng.gen_range(0..500u32),
            rng.gen_range(0..100u32),
        );
        let left = n - (out.len() - start);
        out.put_slice(&obj.as_bytes()[..obj.len().min(left)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::LoadArgs;
    use crate::workload::Mode;

    fn workload(keys: KeyDist) -> Workload {
        let args = LoadArgs {
            keys: Some(keys),
            key_space: Some(100),
            ..LoadArgs::default()
        };
        Workload::resolve(Mode::Produce, &args).expect("valid")
    }

    #[test]
    fn routes_round_robin_and_by_key() {
        let topics = vec![
            TopicSpec {
                name: "a".into(),
                partitions: 2,
            },
            TopicSpec {
                name: "b".into(),
                partitions: 3,
            },
        ];
        let mut rng = SmallRng::seed_from_u64(1);
        let mut rr = 0;
        let w = workload(KeyDist::None);
        let seen: Vec<(usize, u32)> = (0..5)
            .map(|_| {
                let (t, p, k) = route(&w, &topics, &mut rr, &mut rng);
                assert!(k.is_none());
                (t, p)
            })
            .collect();
        assert_eq!(seen, vec![(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
        // Pinned: producer 3 always writes partition 3 of 5 (topic b, 1).
        let w = workload(KeyDist::Pinned);
        let mut id = 3;
        for _ in 0..4 {
            let (t, p, k) = route(&w, &topics, &mut id, &mut rng);
            assert_eq!((t, p, k.is_none()), (1, 1, true));
        }
        for dist in [KeyDist::Uniform, KeyDist::Zipf] {
            let w = workload(dist);
            let mut hot = 0;
            for _ in 0..1000 {
                let (t, p, k) = route(&w, &topics, &mut rr, &mut rng);
                let k = k.expect("keyed");
                assert_eq!(p, partition_for_key(&k, topics[t].partitions));
                let id = u64::from_be_bytes(k[..].try_into().expect("8 bytes"));
                assert!(id < 100);
                hot += u32::from(id < 10);
            }
            if dist == KeyDist::Zipf {
                assert!(hot > 300, "zipf-ish keys are skewed to small ids ({hot})");
            }
        }
    }
}
