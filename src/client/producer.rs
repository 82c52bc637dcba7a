//! The producer: per-partition accumulators, batching by size and linger,
//! pipelined produce requests, per-record delivery futures.
//!
//! Invariants:
//! - Records for one partition are appended to its open batch in `send`
//!   order; a batch is sealed (and its request enqueued on the one connection,
//!   synchronously) before the next batch of that partition can be sealed, so
//!   batches of a partition reach the broker in order and the broker appends
//!   them in order.
//! - Every `DeliveryFuture` resolves exactly once: the record's partition and
//!   offset (batch base offset + offset delta), or the error that failed its
//!   batch (broker refusal, timeout, connection loss).
//! - No retries: a failed batch is reported, never resent (no duplicates).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::admin::{describe, unexpected};
use super::connection::ReconnectingConnection;
use super::flight::{Flights, Next};
use super::partitioner::partition_for_key;
use super::sync::{oneshot, OneshotReceiver, OneshotSender, WorkCounter};
use super::{ClientConfig, ClientError};
use crate::protocol::batch::BatchBuilder;
pub use crate::protocol::compression::Compression;
use crate::protocol::messages::{
    Acks, ProducePartition, ProduceRequest, ProduceTopic, RequestBody, ResponseBody,
};
use crate::protocol::{ErrorCode, TopicPartition, WireError};

/// Default produce requests in flight per partition. Enough that, with the
/// default 1 MiB batches, the broker's group commit can fill its largest
/// group write (8 MiB, one fdatasync) while the previous group syncs: on the
/// bench disk durable throughput was 237-248 MB/s with 2, 280-285 with 5
/// and 303-314 with 8 (docs/benchmarks.md). Below saturation the window is
/// never full, so it does not change latency.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: usize = 8;

/// Producer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    pub acks: Acks,
    /// How long an open batch waits for more records before it is sent, in ms.
    pub linger_ms: u64,
    /// A batch is sent as soon as it reaches this many bytes.
    pub batch_bytes: usize,
    /// Produce requests in flight per partition (0 = no limit). While a
    /// partition is at this window its batches keep filling past their
    /// linger: see `client::flight`.
    pub max_in_flight_per_partition: usize,
    /// Codec of the records section of every batch (Kafka's
    /// `compression.type`); compressed when the batch is sealed.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            acks: Acks::Leader,
            linger_ms: 5,
            batch_bytes: 1024 * 1024,
            max_in_flight_per_partition: DEFAULT_MAX_IN_FLIGHT_PER_PARTITION,
            compression: Compression::None,
        }
    }
}

/// One record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// Explicit partition; otherwise by key hash, or round robin without a key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Defaults to the current time.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((key.into(), value));
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
}

type Delivery = Result<RecordMetadata, ClientError>;

/// Resolves once the broker acknowledged (or refused) the record.
pub struct DeliveryFuture {
    rx: OneshotReceiver<Delivery>,
}

impl Future for DeliveryFuture {
    type Output = Delivery;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ accumulator

struct Waiter {
    tx: OneshotSender<Delivery>,
    offset_delta: u32,
    timestamp_ms: i64,
}

struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    generation: u64,
}

/// A batch ready to send, with the records' completions.
pub(crate) struct SealedBatch {
    tp: TopicPartition,
    batch: Bytes,
    waiters: Vec<Waiter>,
}

impl SealedBatch {
    fn fail(self, e: &ClientError) {
        for w in self.waiters {
            w.tx.send(Err(clone_err(e)));
        }
    }

    fn complete(self, base_offset: u64) {
        let partition = self.tp.partition;
        for w in self.waiters {
            w.tx.send(Ok(RecordMetadata {
                partition,
                offset: base_offset + u64::from(w.offset_delta),
                timestamp_ms: w.timestamp_ms,
            }));
        }
    }
}

fn clone_err(e: &ClientError) -> ClientError {
    match e {
        ClientError::Io(io) => ClientError::Io(std::io::Error::new(io.kind(), io.to_string())),
        ClientError::Protocol(m) => ClientError::Protocol(m.clone()),
        ClientError::Broker(w) => ClientError::Broker(w.clone()),
        ClientError::Timeout(m) => ClientError::Timeout(m.clone()),
        ClientError::Closed => ClientError::Closed,
        ClientError::Config(m) => ClientError::Config(m.clone()),
        ClientError::Handshake(m) => ClientError::Handshake(m.clone()),
    }
}

/// What `append` did.
pub(crate) struct Appended {
    /// Batches sealed by this append, oldest first (at most two: the full
    /// batch the record did not fit in, and the record's own if it filled it).
    sealed: Vec<SealedBatch>,
    /// Set when the record opened a new batch: arm a linger timer for it.
    opened_generation: Option<u64>,
}

/// Per-partition open batches. Pure logic, no I/O (unit tested).
pub(crate) struct Accumulator {
    batch_bytes: usize,
    compression: Compression,
    open: HashMap<TopicPartition, OpenBatch>,
    next_generation: u64,
}

impl Accumulator {
    pub(crate) fn new(batch_bytes: usize) -> Self {
        Self {
            batch_bytes: batch_bytes.max(1),
            compression: Compression::None,
            open: HashMap::new(),
            next_generation: 1,
        }
    }

    /// Seals batches with their records compressed by `codec`.
    pub(crate) fn with_compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    fn append(
        &mut self,
        tp: TopicPartition,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        tx: OneshotSender<Delivery>,
    ) -> Appended {
        let mut sealed = Vec::new();
        // Seal the open batch first if this record would push it past the limit.
        let full = self.open.get(&tp).is_some_and(|b| {
            !b.builder.is_empty()
                && b.builder.size_bytes()
                    + b.builder
                        .record_size_bytes(timestamp_ms, key, value, headers)
                    > self.batch_bytes
        });
        if full {
            sealed.extend(self.seal(&tp));
        }
        let mut opened_generation = None;
        let batch_bytes = self.batch_bytes;
        let open = self.open.entry(tp.clone()).or_insert_with(|| {
            let generation = self.next_generation;
            self.next_generation += 1;
            opened_generation = Some(generation);
            OpenBatch {
                builder: BatchBuilder::with_capacity(batch_bytes.min(64 * 1024)),
                waiters: Vec::new(),
                generation,
            }
        });
        let offset_delta = open.builder.push(timestamp_ms, key, value, headers);
        open.waiters.push(Waiter {
            tx,
            offset_delta,
            timestamp_ms,
        });
        if open.builder.size_bytes() >= self.batch_bytes {
            sealed.extend(self.seal(&tp));
            opened_generation = None;
        }
        Appended {
            sealed,
            opened_generation,
        }
    }

    /// Seals the open batch of `tp`, if any.
    fn seal(&mut self, tp: &TopicPartition) -> Option<SealedBatch> {
        let open = self.open.remove(tp)?;
        if open.builder.is_empty() {
            return None;
        }
        Some(SealedBatch {
            tp: tp.clone(),
            batch: open.builder.finish_compressed(self.compression),
            waiters: open.waiters,
        })
    }

    /// Seals `tp`'s open batch only if it is still the one opened as `generation`.
    fn seal_generation(&mut self, tp: &TopicPartition, generation: u64) -> Option<SealedBatch> {
        match self.open.get(tp) {
            Some(b) if b.generation == generation => self.seal(tp),
            _ => None,
        }
    }

    fn seal_all(&mut self) -> Vec<SealedBatch> {
        let mut tps: Vec<TopicPartition> = self.open.keys().cloned().collect();
        tps.sort();
        tps.iter().filter_map(|tp| self.seal(tp)).collect()
    }
}

// ------------------------------------------------------------------ producer

struct Inner {
    config: ProducerConfig,
    conn: ReconnectingConnection,
    partition_counts: RefCell<HashMap<String, u32>>,
    accumulator: RefCell<Accumulator>,
    flights: RefCell<Flights<SealedBatch>>,
    round_robin: Cell<u32>,
    in_flight: WorkCounter,
    /// The first batch failure since the last `flush` (what it reports).
    first_failure: RefCell<Option<ClientError>>,
}

/// Batching, pipelining producer over one connection.
pub struct Producer {
    inner: Rc<Inner>,
}

impl Producer {
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ClientError> {
        if config.batch_bytes == 0 {
            return Err(ClientError::Config("batch_bytes must be > 0".into()));
        }
        let conn = ReconnectingConnection::connect(&config.client).await?;
        Ok(Producer {
            inner: Rc::new(Inner {
                accumulator: RefCell::new(
                    Accumulator::new(config.batch_bytes).with_compression(config.compression),
                ),
                flights: RefCell::new(Flights::new(config.max_in_flight_per_partition)),
                config,
                conn,
                partition_counts: RefCell::new(HashMap::new()),
                round_robin: Cell::new(0),
                in_flight: WorkCounter::default(),
                first_failure: RefCell::new(None),
            }),
        })
    }

    /// Partition count of `topic` (cached after the first metadata lookup).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = self.inner.partition_counts.borrow().get(topic) {
            return Ok(*n);
        }
        let info = describe(&*self.inner.conn.get().await?, topic).await?;
        let n = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        if n == 0 {
            return Err(ClientError::Broker(WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{topic}' has no partitions"),
            )));
        }
        self.inner
            .partition_counts
            .borrow_mut()
            .insert(topic.to_string(), n);
        Ok(n)
    }

    /// Adds a record to its partition's batch. Returns once the record is
    /// queued; the future resolves when the broker answers for its batch.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        // A connection the broker closed (idle timeout, restart) is replaced
        // here; batches it carried have already failed and are not resent.
        self.inner.conn.get().await?;
        let count = self.partition_count(&record.topic).await?;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p >= count => {
                return Err(ClientError::Broker(WireError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "partition {p} of topic '{}' does not exist (it has {count})",
                        record.topic
                    ),
                )))
            }
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                let n = self.inner.round_robin.get();
                self.inner.round_robin.set(n.wrapping_add(1));
                n % count
            }
        };
        let tp = TopicPartition::new(record.topic, partition);
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
            .collect();
        let (tx, rx) = oneshot();
        let appended = self.inner.accumulator.borrow_mut().append(
            tp.clone(),
            timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
            tx,
        );
        for batch in appended.sealed {
            Inner::dispatch(&self.inner, batch);
        }
        if let Some(generation) = appended.opened_generation {
            let inner = self.inner.clone();
            let linger = Duration::from_millis(self.inner.config.linger_ms);
            // glommio polls a spawned task once right away: with linger 0
            // a zero sleep would be ready at once and seal every record
            // alone. Yield first, so records sent in the same run of the
            // caller share the batch.
            glommio::spawn_local(async move {
                if linger.is_zero() {
                    futures_lite::future::yield_now().await;
                } else {
                    crate::timer::sleep(linger).await;
                }
                // At a full window the batch keeps filling; the response
                // that frees a slot seals it.
                if inner.flights.borrow_mut().linger_expired(&tp, generation) {
                    Inner::seal_and_dispatch(&inner, &tp, generation);
                }
            })
            .detach();
        }
        Ok(DeliveryFuture { rx })
    }

    /// Sends every open batch now and waits until every request in flight
    /// has been answered. Fails with the first batch failure since the last
    /// flush (each record's future has its own outcome); a connection the
    /// broker closed after everything was acknowledged is not a failure.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let sealed = self.inner.accumulator.borrow_mut().seal_all();
        for batch in sealed {
            Inner::dispatch(&self.inner, batch);
        }
        self.inner.in_flight.idle().await;
        match self.inner.first_failure.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes, then closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.flush().await
    }

    /// Batches sent and not yet answered.
    pub fn in_flight_batches(&self) -> usize {
        self.inner.in_flight.count()
    }
}

impl Inner {
    /// Seals `tp`'s open batch if it is still `generation`, and dispatches it.
    fn seal_and_dispatch(inner: &Rc<Inner>, tp: &TopicPartition, generation: u64) {
        let sealed = inner
            .accumulator
            .borrow_mut()
            .seal_generation(tp, generation);
        if let Some(batch) = sealed {
            Inner::dispatch(inner, batch);
        }
    }

    /// Sends `batch` now if its partition's window has room, else queues it
    /// behind the partition's requests in flight (fixing its wire order).
    fn dispatch(inner: &Rc<Inner>, batch: SealedBatch) {
        inner.in_flight.begin();
        let tp = batch.tp.clone();
        let ready = inner.flights.borrow_mut().offer(&tp, batch);
        if let Some(batch) = ready {
            Inner::send(inner, batch);
        }
    }

    /// Enqueues the produce request for `batch` (its window slot is taken)
    /// and completes its records when the answer arrives; then hands the
    /// slot on.
    fn send(inner: &Rc<Inner>, batch: SealedBatch) {
        let tp = batch.tp.clone();
        let body = RequestBody::Produce(ProduceRequest {
            acks: inner.config.acks,
            timeout_ms: u32::try_from(inner.config.client.request_timeout_ms).unwrap_or(u32::MAX),
            topics: vec![ProduceTopic {
                name: batch.tp.topic.clone(),
                partitions: vec![ProducePartition {
                    partition: batch.tp.partition,
                    batch: batch.batch.clone(),
                }],
            }],
        });
        match inner.conn.current().start(body) {
            Ok(fut) => {
                let inner = inner.clone();
                glommio::spawn_local(async move {
                    let outcome = match fut.await {
                        Ok(resp) => complete(batch, resp),
                        Err(e) => Err((batch, e)),
                    };
                    if let Err((batch, e)) = outcome {
                        inner.fail(batch, e);
                    }
                    Inner::finished(&inner, &tp);
                })
                .detach();
            }
            Err(e) => {
                inner.fail(batch, e);
                Inner::finished(inner, &tp);
            }
        }
    }

    /// A request of `tp` is done: pass its slot to the next batch.
    fn finished(inner: &Rc<Inner>, tp: &TopicPartition) {
        inner.in_flight.end();
        let next = inner.flights.borrow_mut().finished(tp);
        match next {
            Next::Send(batch) => Inner::send(inner, batch),
            Next::SealDue(generation) => Inner::seal_and_dispatch(inner, tp, generation),
            Next::Nothing => {}
        }
    }

    /// Fails `batch`'s records with `e` and remembers `e` for `flush`.
    fn fail(&self, batch: SealedBatch, e: ClientError) {
        batch.fail(&e);
        let mut first = self.first_failure.borrow_mut();
        if first.is_none() {
            *first = Some(e);
        }
    }
}

/// Completes `batch` from its produce response, or hands it back with the
/// error to fail it with.
fn complete(batch: SealedBatch, resp: ResponseBody) -> Result<(), (SealedBatch, ClientError)> {
    let ResponseBody::Produce(resp) = resp else {
        let e = unexpected("Produce", &resp);
        return Err((batch, e));
    };
    let result = resp
        .topics
        .into_iter()
        .filter(|t| t.name == batch.tp.topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition == batch.tp.partition);
    match result {
        Some(p) => match p.result {
            Ok(base) => {
                batch.complete(base);
                Ok(())
            }
            Err(e) => Err((batch, ClientError::Broker(e))),
        },
        None => {
            let e =
                ClientError::Protocol(format!("produce response has no result for {}", batch.tp));
            Err((batch, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{records, validate};

    fn append(acc: &mut Accumulator, p: u32, v: &[u8]) -> (Appended, OneshotReceiver<Delivery>) {
        let (tx, rx) = oneshot();
        let a = acc.append(TopicPartition::new("t", p), 1000, None, Some(v), &[], tx);
        (a, rx)
    }

    #[test]
    fn seals_by_size_and_keeps_order() {
        let mut acc = Accumulator::new(200);
        let mut sealed = Vec::new();
        let mut opened = 0;
        for i in 0..50u32 {
            let (a, _rx) = append(&mut acc, i % 2, format!("value-{i:03}").as_bytes());
            opened += a.opened_generation.is_some() as u32;
            sealed.extend(a.sealed);
        }
        sealed.extend(acc.seal_all());
        assert!(opened >= 2);
        // Every record is in exactly one batch, in send order per partition.
        for p in 0..2u32 {
            let values: Vec<String> = sealed
                .iter()
                .filter(|b| b.tp.partition == p)
                .flat_map(|b| {
                    validate(&b.batch).expect("valid");
                    assert!(b.batch.len() <= 200, "batch of {}", b.batch.len());
                    records(&b.batch)
                        .expect("records")
                        .map(|r| {
                            String::from_utf8_lossy(r.expect("rec").value.expect("v")).into_owned()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let expected: Vec<String> = (0..50u32)
                .filter(|i| i % 2 == p)
                .map(|i| format!("value-{i:03}"))
                .collect();
            assert_eq!(values, expected);
        }
        assert!(sealed.len() > 2, "small batch_bytes must split batches");
    }

    #[test]
    fn oversized_record_goes_alone_and_linger_generation_matches() {
        let mut acc = Accumulator::new(100);
        let (a, _r1) = append(&mut acc, 0, b"small");
        let g = a.opened_generation.expect("opened");
        assert!(a.sealed.is_empty());
        let (a, _r2) = append(&mut acc, 0, &[7u8; 500]);
        // The small batch is sealed first, then the big record fills its own.
        assert_eq!(a.sealed.len(), 2);
        assert_eq!(records(&a.sealed[0].batch).expect("r").count(), 1);
        assert_eq!(records(&a.sealed[1].batch).expect("r").count(), 1);
        // A stale linger timer finds nothing to seal.
        assert!(acc
            .seal_generation(&TopicPartition::new("t", 0), g)
            .is_none());
        let (a, _r3) = append(&mut acc, 0, b"x");
        let g2 = a.opened_generation.expect("opened");
        assert_ne!(g, g2);
        assert!(acc
            .seal_generation(&TopicPartition::new("t", 0), g2)
            .is_some());
    }

    #[test]
    fn completion_offsets() {
        futures_lite::future::block_on(async {
            let mut acc = Accumulator::new(1 << 20);
            let (_, r1) = append(&mut acc, 3, b"a");
            let (_, r2) = append(&mut acc, 3, b"b");
            let mut sealed = acc.seal_all();
            assert_eq!(sealed.len(), 1);
            sealed.remove(0).complete(40);
            let m1 = r1.await.expect("sent").expect("ok");
            let m2 = r2.await.expect("sent").expect("ok");
            assert_eq!((m1.partition, m1.offset, m1.timestamp_ms), (3, 40, 1000));
            assert_eq!(m2.offset, 41);
        });
    }
}
