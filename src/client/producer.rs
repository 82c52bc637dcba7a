//! The producer: per-partition accumulators, batching by size and linger,
//! per-record delivery futures; sending, retries and idempotence are in
//! `client::sender`.
//!
//! Invariants:
//! - Records for one partition are appended to its open batch in `send`
//!   order; a sealed batch joins its partition's queue (`client::flight`)
//!   before the next batch of that partition can be sealed, so batches of a
//!   partition leave, and are written, in order.
//! - Every `DeliveryFuture` resolves exactly once: the record's partition and
//!   offset (batch base offset + offset delta), or the error that failed its
//!   batch (a non-retriable broker refusal, the delivery timeout, a fenced
//!   producer; without idempotence also a lost connection or a timeout).
//! - With idempotence (the default) a batch is retried until
//!   `delivery_timeout_ms` and the broker's sequence check writes it at most
//!   once; without it, a request that may have reached the broker is never
//!   resent (at most once per attempt). See docs/delivery.md.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::admin::describe;
use super::connection::ReconnectingConnection;
use super::delivery::Resolver;
pub use super::delivery::{DeliveryFuture, RecordMetadata};
use super::partitioner::partition_for_key;
use super::sender::{init_producer_id, is_connection_error, Sender};
use super::{ClientConfig, ClientError};
use crate::protocol::batch::BatchBuilder;
pub use crate::protocol::compression::Compression;
use crate::protocol::messages::{Acks, ProducerIdentity};
use crate::protocol::{ErrorCode, TopicPartition, WireError};

/// Default produce requests in flight per partition: 5, the most the
/// broker's idempotence window (the last 5 batches per producer and
/// partition, as Kafka) can deduplicate after a lost connection. On the
/// bench disk durable throughput was 237-248 MB/s with 2, 280-285 with 5
/// and 303-314 with 8 (docs/benchmarks.md); 8 needs `idempotence = false`.
/// Below saturation the window is never full, so it does not change latency.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: usize = 5;
/// The most requests in flight per partition with idempotence (the broker
/// remembers the last 5 batches of each producer and partition).
pub const MAX_IN_FLIGHT_WITH_IDEMPOTENCE: usize = 5;
/// Default `delivery_timeout_ms` (Kafka's `delivery.timeout.ms`).
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 120_000;

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
    /// linger: see `client::flight`. At most 5 (and not 0) with idempotence.
    pub max_in_flight_per_partition: usize,
    /// Idempotent produce (default true): the producer takes a producer id
    /// (InitProducerId), numbers its batches per partition, and retries
    /// retriable failures until `delivery_timeout_ms`; the broker writes a
    /// retried batch at most once. False: no producer id, and a request that
    /// may have reached the broker is never resent (at most once per attempt).
    pub idempotence: bool,
    /// How long a batch may take from its first record to its
    /// acknowledgement, retries included, in ms (Kafka's
    /// `delivery.timeout.ms`); past it its records fail with a timeout.
    pub delivery_timeout_ms: u64,
    /// First wait before a retry, in ms; doubled per attempt of a batch.
    pub retry_backoff_ms: u64,
    /// Longest wait before a retry, in ms.
    pub retry_backoff_max_ms: u64,
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
            idempotence: true,
            delivery_timeout_ms: DEFAULT_DELIVERY_TIMEOUT_MS,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            compression: Compression::None,
        }
    }
}

impl ProducerConfig {
    /// Checks the settings that depend on each other.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.batch_bytes == 0 {
            return Err(ClientError::Config("batch_bytes must be > 0".into()));
        }
        if self.delivery_timeout_ms == 0 {
            return Err(ClientError::Config(
                "delivery_timeout_ms must be > 0".into(),
            ));
        }
        if self.retry_backoff_ms > self.retry_backoff_max_ms {
            return Err(ClientError::Config(format!(
                "retry_backoff_ms ({}) must not exceed retry_backoff_max_ms ({})",
                self.retry_backoff_ms, self.retry_backoff_max_ms
            )));
        }
        let window = self.max_in_flight_per_partition;
        if self.idempotence && !(1..=MAX_IN_FLIGHT_WITH_IDEMPOTENCE).contains(&window) {
            return Err(ClientError::Config(format!(
                "max_in_flight_per_partition must be 1..={MAX_IN_FLIGHT_WITH_IDEMPOTENCE} with \
                 idempotence (got {window}); turn idempotence off for a larger window"
            )));
        }
        Ok(())
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ accumulator

struct OpenBatch {
    builder: BatchBuilder,
    /// The records' shared outcome (their futures hold it).
    resolver: Resolver,
    generation: u64,
    opened: Instant,
}

/// A batch sealed for sending, with the records' completions. Its header
/// (producer id, epoch, base sequence) and CRC are written once, when it
/// first leaves (`finish`); every resend carries the same bytes.
pub(crate) struct SealedBatch {
    pub(crate) tp: TopicPartition,
    /// Until the first send: the records, header not yet written.
    builder: Option<BatchBuilder>,
    /// From the first send: the batch on the wire.
    bytes: Bytes,
    /// Codec of its records section, applied when the header is written.
    compression: Compression,
    record_count: u32,
    resolver: Resolver,
    /// When its first record was appended (the delivery timeout counts from here).
    pub(crate) opened: Instant,
    /// Requests sent for it so far.
    pub(crate) attempts: u32,
    /// Identity it was numbered with (None: not idempotent or not sent yet).
    pub(crate) identity: Option<ProducerIdentity>,
    /// Why its last attempt failed (reported if the delivery timeout expires).
    pub(crate) last_error: Option<String>,
}

impl SealedBatch {
    pub(crate) fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Whether its bytes are fixed (it left at least once).
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.builder.is_none()
    }

    /// Writes the header once: with `producer` = (identity, base sequence)
    /// for idempotent produce, else without a producer id.
    pub(crate) fn finish(&mut self, producer: Option<(ProducerIdentity, i32)>) {
        let Some(mut builder) = self.builder.take() else {
            panic!("a batch is finished once");
        };
        if let Some((id, base_sequence)) = producer {
            builder.set_producer(id.producer_id, id.producer_epoch, base_sequence);
            self.identity = Some(id);
        }
        self.bytes = builder.finish_compressed(self.compression);
    }

    /// The bytes on the wire (after `finish`).
    pub(crate) fn bytes(&self) -> &Bytes {
        assert!(self.builder.is_none(), "bytes of an unfinished batch");
        &self.bytes
    }

    pub(crate) fn fail(self, e: &ClientError) {
        self.resolver.resolve(Err(clone_err(e)));
    }

    pub(crate) fn complete(self, base_offset: u64) {
        self.resolver.resolve(Ok(base_offset));
    }
}

pub(crate) fn clone_err(e: &ClientError) -> ClientError {
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
    pub(crate) sealed: Vec<SealedBatch>,
    /// Set when the record opened a new batch: arm a linger timer for it.
    pub(crate) opened_generation: Option<u64>,
    /// The record's future.
    pub(crate) delivery: DeliveryFuture,
}

/// Most capacity an open batch is given up front, in bytes (a larger
/// `batch_bytes` grows past it as records arrive).
const MAX_INITIAL_BATCH_CAPACITY_BYTES: usize = 16 * 1024 * 1024;

/// Per-partition open batches. Pure logic, no I/O (unit tested).
pub(crate) struct Accumulator {
    batch_bytes: usize,
    compression: Compression,
    /// Looked up per record, so hashed with ahash rather than SipHash.
    open: ahash::AHashMap<TopicPartition, OpenBatch>,
    next_generation: u64,
}

impl Accumulator {
    pub(crate) fn new(batch_bytes: usize) -> Self {
        Self {
            batch_bytes: batch_bytes.max(1),
            compression: Compression::None,
            open: ahash::AHashMap::new(),
            next_generation: 1,
        }
    }

    /// Seals batches with their records compressed by `codec`.
    pub(crate) fn with_compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    pub(crate) fn append(
        &mut self,
        tp: &TopicPartition,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Appended {
        let mut sealed = Vec::new();
        // Seal the open batch first if this record would push it past the limit.
        let full = self.open.get(tp).is_some_and(|b| {
            !b.builder.is_empty()
                && b.builder.size_bytes()
                    + b.builder
                        .record_size_bytes(timestamp_ms, key, value, headers)
                    > self.batch_bytes
        });
        if full {
            sealed.extend(self.seal(tp));
        }
        let mut opened_generation = None;
        if !self.open.contains_key(tp) {
            // The key is cloned once per batch, not per record.
            let generation = self.next_generation;
            self.next_generation += 1;
            opened_generation = Some(generation);
            let batch = OpenBatch {
                // The whole batch's capacity at once (up to a bound): growing
                // by doubling copied every batch about once more (measured
                // in the producer's profile); untouched capacity is address
                // space, not memory, until records fill it.
                builder: BatchBuilder::with_capacity(
                    self.batch_bytes.min(MAX_INITIAL_BATCH_CAPACITY_BYTES),
                ),
                resolver: Resolver::new(),
                generation,
                opened: Instant::now(),
            };
            self.open.insert(tp.clone(), batch);
        }
        let Some(open) = self.open.get_mut(tp) else {
            unreachable!("the open batch was just found or inserted");
        };
        let offset_delta = open.builder.push(timestamp_ms, key, value, headers);
        let delivery = open
            .resolver
            .future(tp.partition, offset_delta, timestamp_ms);
        if open.builder.size_bytes() >= self.batch_bytes {
            sealed.extend(self.seal(tp));
            opened_generation = None;
        }
        Appended {
            sealed,
            opened_generation,
            delivery,
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
            record_count: open.builder.record_count(),
            builder: Some(open.builder),
            bytes: Bytes::new(),
            compression: self.compression,
            resolver: open.resolver,
            opened: open.opened,
            attempts: 0,
            identity: None,
            last_error: None,
        })
    }

    /// Seals `tp`'s open batch only if it is still the one opened as `generation`.
    pub(crate) fn seal_generation(
        &mut self,
        tp: &TopicPartition,
        generation: u64,
    ) -> Option<SealedBatch> {
        match self.open.get(tp) {
            Some(b) if b.generation == generation => self.seal(tp),
            _ => None,
        }
    }

    pub(crate) fn seal_all(&mut self) -> Vec<SealedBatch> {
        let mut tps: Vec<TopicPartition> = self.open.keys().cloned().collect();
        tps.sort();
        tps.iter().filter_map(|tp| self.seal(tp)).collect()
    }
}

// ------------------------------------------------------------------ producer

/// InitProducerId on a connection that was just made: a lost connection or
/// a timeout is retried with backoff within `delivery_timeout_ms`; a refusal
/// is returned at once.
async fn first_producer_id(
    config: &ProducerConfig,
    conn: &ReconnectingConnection,
) -> Result<ProducerIdentity, ClientError> {
    let deadline = Instant::now() + Duration::from_millis(config.delivery_timeout_ms);
    let mut backoff_ms = config.retry_backoff_ms;
    loop {
        let got = match conn.get().await {
            Ok(c) => init_producer_id(&c, &config.client.bootstrap).await,
            Err(e) => Err(e),
        };
        match got {
            Err(
                e @ (ClientError::Io(_)
                | ClientError::Closed
                | ClientError::Timeout(_)
                | ClientError::Handshake(_)),
            ) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "InitProducerId failed; retrying");
                crate::timer::sleep_once(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).clamp(1, config.retry_backoff_max_ms.max(1));
            }
            other => return other,
        }
    }
}

/// Batching, pipelining producer over one connection; idempotent and
/// retrying by default (see `client::sender`).
pub struct Producer {
    inner: Rc<Sender>,
}

impl Producer {
    /// Connects and, with idempotence, takes a producer id (InitProducerId).
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let conn = ReconnectingConnection::connect(&config.client).await?;
        let identity = if config.idempotence {
            Some(first_producer_id(&config, &conn).await?)
        } else {
            None
        };
        Ok(Producer {
            inner: Sender::new(config, conn, identity),
        })
    }

    /// The producer id and epoch its batches carry (None without idempotence).
    pub fn identity(&self) -> Option<ProducerIdentity> {
        self.inner.identity()
    }

    /// Partition count of `topic` (cached after the first metadata lookup).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = self.inner.partition_counts.borrow().get(topic) {
            return Ok(*n);
        }
        // A lost connection is replaced and the lookup asked again, with the
        // retry backoff, until `delivery_timeout_ms` (Kafka's producer waits
        // for metadata the same way); broker answers are final.
        let deadline =
            Instant::now() + Duration::from_millis(self.inner.config.delivery_timeout_ms);
        let mut attempts = 0u32;
        let info = loop {
            let attempt = match self.inner.conn.get().await {
                Ok(conn) => describe(&conn, topic).await,
                Err(e) => Err(e),
            };
            attempts += 1;
            // At least 1 ms, so a zero backoff setting cannot spin.
            let wait = self.inner.backoff(attempts).max(Duration::from_millis(1));
            match attempt {
                Err(e) if is_connection_error(&e) && Instant::now() + wait < deadline => {
                    crate::timer::sleep(wait).await;
                }
                other => break other?,
            }
        };
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
    /// queued; the future resolves when the broker answers for its batch
    /// (after retries, with idempotence).
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        if let Some(e) = self.inner.fenced() {
            return Err(e);
        }
        // No connection is needed here: a closed one is replaced when the
        // batch is sent (only an unknown topic's metadata needs one now).
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
        let appended = self.inner.accumulator.borrow_mut().append(
            &tp,
            timestamp_ms,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        for batch in appended.sealed {
            Sender::dispatch(&self.inner, batch);
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
                Sender::linger_expired(&inner, &tp, generation);
            })
            .detach();
        }
        Ok(appended.delivery)
    }

    /// Produce requests acknowledged by the broker so far (one per batch;
    /// retries count once), for load generators that report CPU per request.
    pub fn acked_requests(&self) -> u64 {
        self.inner.acked_requests.get()
    }

    /// Sends every open batch now and waits until every batch is resolved
    /// (acknowledged, or failed after its retries). Fails with the first
    /// batch failure since the last flush (each record's future has its own
    /// outcome); a connection the broker closed after everything was
    /// acknowledged is not a failure.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let sealed = self.inner.accumulator.borrow_mut().seal_all();
        for batch in sealed {
            Sender::dispatch(&self.inner, batch);
        }
        self.inner.in_flight.idle().await;
        match self.inner.take_first_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes, then closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.flush().await
    }

    /// Batches sealed and not yet resolved (in flight, waiting for the
    /// window, or waiting for a retry).
    pub fn in_flight_batches(&self) -> usize {
        self.inner.in_flight.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{records, validate};

    #[test]
    fn a_huge_batch_bytes_setting_does_not_reserve_it_up_front() {
        // usize::MAX would overflow an up-front allocation (a panic on a
        // setting); the batch starts bounded and grows with its records.
        let mut acc = Accumulator::new(usize::MAX);
        let (a, _rx) = append(&mut acc, 0, b"v");
        assert!(a.sealed.is_empty() && a.opened_generation.is_some());
        let open = acc.open.values().next().expect("an open batch");
        assert!(open.builder.capacity_bytes() <= MAX_INITIAL_BATCH_CAPACITY_BYTES);
    }

    fn append(acc: &mut Accumulator, p: u32, v: &[u8]) -> (Appended, DeliveryFuture) {
        let mut a = acc.append(&TopicPartition::new("t", p), 1000, None, Some(v), &[]);
        let rx = std::mem::replace(&mut a.delivery, Resolver::new().future(0, 0, 0));
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
        for b in &mut sealed {
            b.finish(None);
        }
        assert!(opened >= 2);
        // Every record is in exactly one batch, in send order per partition.
        for p in 0..2u32 {
            let values: Vec<String> = sealed
                .iter()
                .filter(|b| b.tp.partition == p)
                .flat_map(|b| {
                    validate(b.bytes()).expect("valid");
                    assert!(b.bytes().len() <= 200, "batch of {}", b.bytes().len());
                    records(b.bytes())
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
        let (mut a, _r2) = append(&mut acc, 0, &[7u8; 500]);
        for b in &mut a.sealed {
            b.finish(None);
        }
        // The small batch is sealed first, then the big record fills its own.
        assert_eq!(a.sealed.len(), 2);
        assert_eq!(records(a.sealed[0].bytes()).expect("r").count(), 1);
        assert_eq!(records(a.sealed[1].bytes()).expect("r").count(), 1);
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
    fn finish_writes_the_producer_fields_once_under_the_crc() {
        let mut acc = Accumulator::new(1 << 20);
        let (_, _r) = append(&mut acc, 0, b"a");
        let (_, _r2) = append(&mut acc, 0, b"b");
        let mut b = acc.seal_all().remove(0);
        assert!(!b.is_finished());
        let id = ProducerIdentity {
            producer_id: 77,
            producer_epoch: 3,
        };
        b.finish(Some((id, 40)));
        let h = validate(b.bytes()).expect("valid, CRC included");
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (77, 3, 40)
        );
        assert_eq!(b.identity, Some(id));
        assert_eq!(b.record_count(), 2);
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
            let m1 = r1.await.expect("ok");
            let m2 = r2.await.expect("ok");
            assert_eq!((m1.partition, m1.offset, m1.timestamp_ms), (3, 40, 1000));
            assert_eq!(m2.offset, 41);
        });
    }
}
