//! Sending a producer's sealed batches: the produce requests, their
//! answers, retries with backoff, reconnects, and the idempotent producer's
//! identity (InitProducerId) and sequence numbers.
//!
//! Owns: the per-partition queues (`client::flight`), the producer identity,
//! the retry classification of every failure, and the reconnect/renew tasks.
//! Must not know: how records are batched (`producer`), the wire encoding.
//!
//! Invariants:
//! - A batch's header (producer id, epoch, base sequence) and CRC are written
//!   once, when it first leaves, with the next sequence numbers of its
//!   partition; every resend carries the same bytes (never rebuilt).
//! - With idempotence, a failed request whose batch may still be written is
//!   resent (in order, see `flight`) until `delivery_timeout_ms`; the broker
//!   answers a duplicate with its first offsets. A batch that fails for good
//!   after its sequence was used leaves a gap: the batches of its partition
//!   sent after it fail too, and the partition continues under a new
//!   producer id (InitProducerId), from sequence 0, once nothing is out.
//! - Without idempotence only a request that never left (the connection was
//!   already closed) is sent again; anything else fails its batch.
//! - Every batch is resolved exactly once (completed or failed), and
//!   `in_flight` counts the batches not yet resolved.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::admin::unexpected;
use super::connection::{Connection, ReconnectingConnection};
use super::flight::{Flights, Returned, SeqSpace};
use super::producer::{clone_err, Accumulator, ProducerConfig, SealedBatch};
use super::sync::WorkCounter;
use super::ClientError;
use crate::protocol::messages::{
    InitProducerIdRequest, ProducePartition, ProduceRequest, ProduceTopic, ProducerIdentity,
    RequestBody, ResponseBody,
};
use crate::protocol::{ErrorCode, TopicPartition, WireError};

/// What to do with a batch whose request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    /// Fails the batch (and, after a used sequence, the ones sent after it).
    Fail,
    /// Our epoch is fenced: fail everything, refuse new sends.
    Fenced,
}

/// Asks the broker for a new producer id.
pub(crate) async fn init_producer_id(
    conn: &Connection,
    bootstrap: &str,
) -> Result<ProducerIdentity, ClientError> {
    let body = RequestBody::InitProducerId(InitProducerIdRequest { current: None });
    match conn.request(body).await {
        Ok(ResponseBody::InitProducerId(r)) => Ok(r.identity),
        Ok(other) => Err(unexpected("InitProducerId", &other)),
        Err(ClientError::Broker(e)) if e.code == ErrorCode::UnsupportedVersion => {
            Err(ClientError::Config(format!(
                "the broker at {bootstrap} does not support idempotent produce ({}); \
                 turn idempotence off (--no-idempotence) to produce without it",
                e.message
            )))
        }
        Err(e) => Err(e),
    }
}

pub(crate) struct Sender {
    pub(crate) config: ProducerConfig,
    pub(crate) conn: ReconnectingConnection,
    /// Looked up per record (ahash, not SipHash).
    pub(crate) partition_counts: RefCell<ahash::AHashMap<String, u32>>,
    pub(crate) accumulator: RefCell<Accumulator>,
    pub(crate) round_robin: Cell<u32>,
    /// Batches sealed and not yet resolved.
    pub(crate) in_flight: WorkCounter,
    flights: RefCell<Flights<SealedBatch>>,
    /// The first batch failure since the last `flush` (what it reports).
    first_failure: RefCell<Option<ClientError>>,
    /// The identity new sequence spaces use (None without idempotence).
    identity: Cell<Option<ProducerIdentity>>,
    /// A task is asking for a new identity.
    renewing: Cell<bool>,
    /// A task is reconnecting.
    reconnecting: Cell<bool>,
    /// Partitions with a backoff wake-up armed.
    wake_armed: RefCell<HashSet<TopicPartition>>,
    /// Set once the broker fenced this producer's epoch.
    fenced: RefCell<Option<WireError>>,
    /// Produce requests the broker acknowledged (one per batch).
    pub(crate) acked_requests: Cell<u64>,
}

impl Sender {
    pub(crate) fn new(
        config: ProducerConfig,
        conn: ReconnectingConnection,
        identity: Option<ProducerIdentity>,
    ) -> Rc<Sender> {
        assert_eq!(identity.is_some(), config.idempotence);
        Rc::new(Sender {
            accumulator: RefCell::new(
                Accumulator::new(config.batch_bytes).with_compression(config.compression),
            ),
            flights: RefCell::new(Flights::new(config.max_in_flight_per_partition)),
            config,
            conn,
            partition_counts: RefCell::new(ahash::AHashMap::new()),
            round_robin: Cell::new(0),
            in_flight: WorkCounter::default(),
            first_failure: RefCell::new(None),
            identity: Cell::new(identity),
            renewing: Cell::new(false),
            reconnecting: Cell::new(false),
            wake_armed: RefCell::new(HashSet::new()),
            fenced: RefCell::new(None),
            acked_requests: Cell::new(0),
        })
    }

    pub(crate) fn identity(&self) -> Option<ProducerIdentity> {
        self.identity.get()
    }

    /// The error new sends fail with once the producer is fenced.
    pub(crate) fn fenced(&self) -> Option<ClientError> {
        self.fenced.borrow().clone().map(ClientError::Broker)
    }

    pub(crate) fn take_first_failure(&self) -> Option<ClientError> {
        self.first_failure.borrow_mut().take()
    }

    /// A sealed batch joins its partition's queue and leaves when it may.
    pub(crate) fn dispatch(this: &Rc<Sender>, batch: SealedBatch) {
        this.in_flight.begin();
        if let Some(e) = this.fenced() {
            this.resolve_failed(batch, &e);
            return;
        }
        let tp = batch.tp.clone();
        this.flights.borrow_mut().push(&tp, batch);
        Sender::pump(this, &tp);
    }

    /// The linger of `tp`'s open batch `generation` expired.
    pub(crate) fn linger_expired(this: &Rc<Sender>, tp: &TopicPartition, generation: u64) {
        if this.flights.borrow_mut().linger_expired(tp, generation) {
            Sender::seal_and_dispatch(this, tp, generation);
        }
    }

    /// Seals `tp`'s open batch if it is still `generation`, and dispatches it.
    fn seal_and_dispatch(this: &Rc<Sender>, tp: &TopicPartition, generation: u64) {
        let sealed = this
            .accumulator
            .borrow_mut()
            .seal_generation(tp, generation);
        if let Some(batch) = sealed {
            Sender::dispatch(this, batch);
        }
    }

    /// Sends every batch of `tp` that may leave now; seals the open batch if
    /// its linger expired at a full window and there is room again; arms a
    /// wake-up for a backoff.
    fn pump(this: &Rc<Sender>, tp: &TopicPartition) {
        loop {
            this.expire(tp);
            let sent = Sender::send_next(this, tp);
            if sent {
                continue;
            }
            let due = this.flights.borrow_mut().take_due(tp);
            match due {
                Some(g) => Sender::seal_and_dispatch(this, tp, g),
                None => break,
            }
        }
        let wake_at = {
            let fl = this.flights.borrow();
            fl.not_before(tp).filter(|_| fl.has_unsent(tp))
        };
        if let Some(at) = wake_at {
            if this.wake_armed.borrow_mut().insert(tp.clone()) {
                let (this, tp) = (this.clone(), tp.clone());
                glommio::spawn_local(async move {
                    crate::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                    this.wake_armed.borrow_mut().remove(&tp);
                    Sender::pump(&this, &tp);
                })
                .detach();
            }
        }
    }

    /// Puts the next batch of `tp` on the wire, if one may leave now.
    /// Returns whether it did something (sent, or failed at once).
    fn send_next(this: &Rc<Sender>, tp: &TopicPartition) -> bool {
        let conn = this.conn.current();
        let mut fl = this.flights.borrow_mut();
        let Some((id, batch, sent_before)) = fl.next_send(tp, Instant::now()) else {
            return false;
        };
        let count = batch.record_count();
        if conn.is_closed() {
            drop(fl);
            Sender::reconnect(this);
            return false;
        }
        if !sent_before {
            let producer = match this.identity.get() {
                None => None,
                Some(current) => {
                    let in_flight = fl.in_flight(tp);
                    let seq = fl.seq_mut(tp);
                    if seq.identity != Some(current) {
                        // A new identity only with nothing out: no request
                        // numbered in the old space can land after it.
                        if in_flight > 0 {
                            return false;
                        }
                        *seq = SeqSpace {
                            identity: Some(current),
                            next: 0,
                            burnt: false,
                        };
                    } else if seq.burnt {
                        drop(fl);
                        Sender::renew_identity(this);
                        return false;
                    }
                    Some((current, seq.take(count)))
                }
            };
            fl.batch_mut(tp, id).finish(producer);
        }
        let batch = fl.batch_mut(tp, id);
        batch.attempts += 1;
        let bytes = batch.bytes().clone();
        fl.mark_sent(tp, id);
        drop(fl);
        let body = RequestBody::Produce(ProduceRequest {
            acks: this.config.acks,
            timeout_ms: u32::try_from(this.config.client.request_timeout_ms).unwrap_or(u32::MAX),
            topics: vec![ProduceTopic {
                name: tp.topic.clone(),
                partitions: vec![ProducePartition {
                    partition: tp.partition,
                    batch: bytes,
                }],
            }],
        });
        match conn.start(body) {
            Ok(fut) => {
                let (this, tp) = (this.clone(), tp.clone());
                glommio::spawn_local(async move {
                    let outcome = match fut.await {
                        Ok(resp) => produced(&tp, resp),
                        Err(e) => Err(e),
                    };
                    Sender::returned(&this, &tp, id, outcome, false);
                    Sender::pump(&this, &tp);
                })
                .detach();
            }
            // It never left: sending it again cannot duplicate it.
            Err(e) => Sender::returned(this, tp, id, Err(e), true),
        }
        true
    }

    /// The request for batch `id` of `tp` came back with `outcome`.
    fn returned(
        this: &Rc<Sender>,
        tp: &TopicPartition,
        id: u64,
        outcome: Result<u64, ClientError>,
        never_left: bool,
    ) {
        let mut fl = this.flights.borrow_mut();
        let Some(ret) = fl.returned(tp, id) else {
            // Already failed behind an earlier batch of the partition.
            debug!(%tp, ok = outcome.is_ok(), "answer for a batch already resolved");
            return;
        };
        let e = match outcome {
            Ok(base) => {
                let batch = fl.remove(tp, id).expect("returned batch is queued");
                drop(fl);
                this.acked_requests.set(this.acked_requests.get() + 1);
                batch.complete(base);
                this.in_flight.end();
                return;
            }
            Err(e) => e,
        };
        let batch = fl.batch_mut(tp, id);
        let numbered_with = batch.identity;
        let action = this.classify(&e, ret, never_left, numbered_with);
        match action {
            Action::Retry => {
                let now = Instant::now();
                let deadline =
                    batch.opened + Duration::from_millis(this.config.delivery_timeout_ms);
                batch.last_error = Some(e.to_string());
                if now >= deadline {
                    let e = this.delivery_timeout(batch);
                    drop(fl);
                    this.fail(tp, id, &e);
                    return;
                }
                let backoff = if never_left {
                    Duration::ZERO
                } else {
                    this.backoff(batch.attempts)
                };
                debug!(%tp, attempts = batch.attempts, error = %e, ?backoff, "produce failed; retrying");
                fl.retry(tp, ret.same_round, (now + backoff).min(deadline));
            }
            Action::Fail => {
                drop(fl);
                this.fail(tp, id, &e);
            }
            Action::Fenced => {
                drop(fl);
                warn!(%tp, error = %e, "producer fenced: failing every pending send");
                this.fence(&e);
            }
        }
    }

    /// Whether (and how) a failed request is retried.
    fn classify(
        &self,
        e: &ClientError,
        ret: Returned,
        never_left: bool,
        numbered_with: Option<ProducerIdentity>,
    ) -> Action {
        if never_left {
            return Action::Retry;
        }
        if !self.config.idempotence {
            return Action::Fail;
        }
        match e {
            // The connection errors of `is_connection_error`.
            ClientError::Io(_)
            | ClientError::Closed
            | ClientError::Timeout(_)
            | ClientError::Handshake(_) => Action::Retry,
            ClientError::Protocol(_) | ClientError::Config(_) => Action::Fail,
            ClientError::Broker(w) => match w.code {
                ErrorCode::NotLeader
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::RequestTimedOut
                | ErrorCode::StorageFull => Action::Retry,
                // Refused because an earlier batch of the partition is not
                // written (yet): it is being retried, this one follows it.
                // For the oldest batch of its round it is a real gap.
                ErrorCode::OutOfOrderSequence if !ret.oldest || !ret.same_round => Action::Retry,
                ErrorCode::InvalidProducerEpoch
                    if numbered_with.is_some() && numbered_with == self.identity.get() =>
                {
                    Action::Fenced
                }
                _ => Action::Fail,
            },
        }
    }

    /// Exponential backoff before attempt `attempts + 1`.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let base = self.config.retry_backoff_ms;
        let shift = attempts.saturating_sub(1).min(20);
        let ms = base
            .saturating_mul(1u64 << shift)
            .min(self.config.retry_backoff_max_ms);
        Duration::from_millis(ms)
    }

    fn delivery_timeout(&self, batch: &SealedBatch) -> ClientError {
        ClientError::Timeout(format!(
            "delivery timeout: a batch of {} records for {} was not acknowledged within \
             delivery_timeout_ms = {} ({} attempts; last error: {})",
            batch.record_count(),
            batch.tp,
            self.config.delivery_timeout_ms,
            batch.attempts,
            batch.last_error.as_deref().unwrap_or("none"),
        ))
    }

    /// Fails the oldest batches of `tp` that are not on the wire and whose
    /// delivery timeout expired.
    fn expire(&self, tp: &TopicPartition) {
        let timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        loop {
            let expired = {
                let fl = self.flights.borrow();
                match fl.oldest_idle(tp) {
                    Some((id, b)) if b.opened + timeout <= Instant::now() => {
                        Some((id, self.delivery_timeout(b)))
                    }
                    _ => None,
                }
            };
            match expired {
                Some((id, e)) => self.fail(tp, id, &e),
                None => return,
            }
        }
    }

    /// Fails batch `id` of `tp` for good with `e`; if its sequence was used,
    /// also the batches of `tp` sent after it (the broker refuses them after
    /// the gap), and the partition waits for a new identity.
    fn fail(&self, tp: &TopicPartition, id: u64, e: &ClientError) {
        let gone = {
            let mut fl = self.flights.borrow_mut();
            let gap = fl.batch_mut(tp, id).identity.is_some();
            fl.fail(tp, id, gap)
        };
        let followers = gone.len().saturating_sub(1);
        if followers > 0 {
            warn!(%tp, followers, error = %e, "a numbered batch failed: the ones sent after it fail too");
        }
        for batch in gone {
            self.resolve_failed(batch, e);
        }
    }

    /// Fails every pending batch: the broker fenced our epoch.
    fn fence(&self, e: &ClientError) {
        if let ClientError::Broker(w) = e {
            self.fenced.borrow_mut().get_or_insert_with(|| w.clone());
        }
        let all = self.flights.borrow_mut().drain_all();
        for batch in all {
            self.resolve_failed(batch, e);
        }
        let open = self.accumulator.borrow_mut().seal_all();
        for batch in open {
            self.in_flight.begin();
            self.resolve_failed(batch, e);
        }
    }

    /// Fails `batch`'s records with `e`, remembers `e` for `flush`.
    fn resolve_failed(&self, batch: SealedBatch, e: &ClientError) {
        batch.fail(e);
        {
            let mut first = self.first_failure.borrow_mut();
            if first.is_none() {
                *first = Some(clone_err(e));
            }
        }
        self.in_flight.end();
    }

    /// Replaces a closed connection (one task at a time), then sends again.
    fn reconnect(this: &Rc<Sender>) {
        if this.reconnecting.replace(true) {
            return;
        }
        let this = this.clone();
        glommio::spawn_local(async move {
            let mut attempts = 0u32;
            loop {
                match this.conn.get().await {
                    Ok(_) => break,
                    Err(e) => {
                        attempts += 1;
                        debug!(error = %e, attempts, "reconnect failed");
                        if !this.wait_after_failure(&e, attempts).await {
                            break;
                        }
                    }
                }
            }
            this.reconnecting.set(false);
            Sender::pump_all(&this);
        })
        .detach();
    }

    /// Asks for a new producer id (one task at a time), then sends again.
    fn renew_identity(this: &Rc<Sender>) {
        if this.renewing.replace(true) {
            return;
        }
        let this = this.clone();
        glommio::spawn_local(async move {
            let mut attempts = 0u32;
            loop {
                let got = match this.conn.get().await {
                    Ok(conn) => init_producer_id(&conn, &this.config.client.bootstrap).await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(id) => {
                        debug!(?id, "new producer id");
                        this.identity.set(Some(id));
                        break;
                    }
                    Err(e) => {
                        attempts += 1;
                        warn!(error = %e, attempts, "InitProducerId failed");
                        if !this.wait_after_failure(&e, attempts).await {
                            break;
                        }
                    }
                }
            }
            this.renewing.set(false);
            Sender::pump_all(&this);
        })
        .detach();
    }

    /// After a failed reconnect or InitProducerId: records `e`, waits the
    /// backoff, expires batches past their delivery timeout; false once no
    /// partition has anything left to send (stop trying).
    async fn wait_after_failure(&self, e: &ClientError, attempts: u32) -> bool {
        self.note_error(e);
        crate::timer::sleep(self.backoff(attempts)).await;
        let busy = self.flights.borrow().busy_partitions();
        for tp in &busy {
            self.expire(tp);
        }
        !self.flights.borrow().busy_partitions().is_empty()
    }

    /// Records `e` as the last error of every batch waiting to be sent.
    fn note_error(&self, e: &ClientError) {
        let busy = self.flights.borrow().busy_partitions();
        let mut fl = self.flights.borrow_mut();
        for tp in &busy {
            if let Some((id, _)) = fl.oldest_idle(tp) {
                fl.batch_mut(tp, id).last_error = Some(e.to_string());
            }
        }
    }

    fn pump_all(this: &Rc<Sender>) {
        let busy = this.flights.borrow().busy_partitions();
        for tp in &busy {
            Sender::pump(this, tp);
        }
    }
}

/// The base offset for `tp` from a produce response.
fn produced(tp: &TopicPartition, resp: ResponseBody) -> Result<u64, ClientError> {
    let ResponseBody::Produce(resp) = resp else {
        return Err(unexpected("Produce", &resp));
    };
    let result = resp
        .topics
        .into_iter()
        .filter(|t| t.name == tp.topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition == tp.partition);
    match result {
        Some(p) => p.result.map_err(ClientError::Broker),
        None => Err(ClientError::Protocol(format!(
            "produce response has no result for {tp}"
        ))),
    }
}

/// A failure of the connection rather than an answer from the broker: the
/// request may be asked again on a new connection.
pub(crate) fn is_connection_error(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_)
            | ClientError::Closed
            | ClientError::Timeout(_)
            | ClientError::Handshake(_)
    )
}
