//! One client connection, generic over its wire protocol ([`Codec`] +
//! [`Handler`]) and its transport ([`Transport`]): a reader loop that frames,
//! decodes and dispatches requests in arrival order, and a writer task that
//! sends responses as they complete (pipelining: FlatBuffers responses carry
//! the correlation id and may overtake each other) or, for a codec that asks
//! for it, in request order.
//!
//! Owns: per-connection backpressure (at most `max_in_flight_per_connection`
//! requests between "frame read" and "response queued"; beyond that the
//! reader stops reading), the reservation of each frame's payload buffer in
//! the shard's [`RequestBudget`] as it grows (while the budget is spent the
//! reader stops reading, and neither timeout runs), framing and decode
//! errors, connection timeouts and connection close.
//!
//! Timeouts (a watchdog raced against the reader loop, then against the
//! writer draining): a connection with no request being handled that has
//! read no byte and written no response for `connection_idle_timeout_ms` is
//! closed, which includes a client that never reads its responses (its
//! writes make no progress); a frame whose first byte arrived must be
//! complete within `frame_read_timeout_ms`. A stalled client only ever
//! blocks its own reader and writer tasks, never the shard (in the shard's
//! request budget it holds only the bytes it actually sent).
//!
//! Invariants: nothing a client sends can panic the shard or affect another
//! connection; a frame above `max_frame_bytes` is refused before its payload
//! is allocated, answered with MessageTooLarge (correlation id 0, naming both
//! sizes), and the connection is closed; a well-framed but undecodable
//! request is answered (InvalidRequest / UnsupportedVersion) and the
//! connection continues. In-flight permits are balanced: every frame read
//! holds one, and its reservation of the shard's request budget, until its
//! response is written (or dropped), so at most
//! `max_in_flight_per_connection` are ever out (asserted) and the shard's
//! request bytes stay within `max_queued_request_bytes` (asserted by the
//! budget). A response is
//! written as the buffers the codec returns (vectored, never joined).
//!
//! Must not know: which protocol it speaks, what a request does, sockets
//! (the transport is a type parameter: tests use an in-memory one).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::sync::{Semaphore, StaticPermit};

use crate::config::Limits;
use crate::io::Clock;
use crate::net::frame_io::{
    read_frame_body, read_frame_len, write_frame_parts, FrameIoError, PayloadMemory,
};
use crate::net::split::{split, ReadHalf, WriteHalf};
use crate::net::Transport;
use crate::protocol::frame::{ByteOrder, FrameError};

use super::budget::{FrameReservation, RequestBudget};
use super::codec::{Codec, Handler};

/// How long a connection being closed for a framing error keeps draining
/// input, so the close is a FIN (the error response arrives) rather than a
/// reset, in ms.
const CLOSE_DRAIN_MS: u64 = 1_000;
/// Size of each read while draining, in bytes: at least the socket's receive
/// buffer, so a drain read is never served around bytes the buffer holds
/// (glommio sends a read this large straight to the socket only when its
/// buffer is empty).
const DRAIN_READ_BYTES: usize = 64 * 1024;
const _: () = assert!(DRAIN_READ_BYTES >= crate::net::SOCKET_RX_BUFFER_BYTES);
/// Most bytes drained on such a close.
const CLOSE_DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a request holds from its frame being read until its response is
/// written: its slot in the connection's window and its bytes in the
/// shard's request budget (none for a frame refused before its payload).
struct Held {
    _slot: StaticPermit,
    _bytes: Option<FrameReservation>,
}

/// What the writer task is asked to send.
enum Outgoing {
    /// Response `seq` (frames are numbered as read), with what its request
    /// holds: released once the response is written, so a client that does
    /// not read its responses stops the broker reading its requests.
    Frame {
        seq: u64,
        parts: Vec<Bytes>,
        permit: Option<Held>,
    },
    /// Send this, then shut the stream's write side and stop.
    FrameThenClose(Vec<Bytes>),
}

/// Hands responses to the connection's writer.
struct Responder<C: Codec> {
    tx: Rc<LocalSender<Outgoing>>,
    codec: Rc<C>,
}

impl<C: Codec> Clone for Responder<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C: Codec> Responder<C> {
    /// Queues response `seq`. A connection that has gone away drops it.
    fn send(&self, seq: u64, resp: &C::Response, permit: Option<Held>) {
        let parts = self.codec.encode(resp);
        let _ = self.tx.try_send(Outgoing::Frame { seq, parts, permit });
    }

    fn send_then_close(&self, resp: &C::Response) {
        let parts = self.codec.encode(resp);
        let _ = self.tx.try_send(Outgoing::FrameThenClose(parts));
    }
}

/// The per-connection limits (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_frame_bytes: u32,
    pub max_in_flight: u32,
    pub idle: Duration,
    pub frame: Duration,
}

impl ConnLimits {
    pub fn from_config(l: &Limits) -> Self {
        Self {
            max_frame_bytes: l.max_frame_bytes,
            max_in_flight: l.max_in_flight_per_connection,
            idle: Duration::from_millis(l.connection_idle_timeout_ms),
            frame: Duration::from_millis(l.frame_read_timeout_ms),
        }
    }
}

/// What every connection of one listener shares.
pub struct Conn<C, H> {
    pub codec: Rc<C>,
    pub handler: Rc<H>,
    pub limits: ConnLimits,
    /// For logs.
    pub shard: usize,
    /// The clock the idle, frame-read and close-drain deadlines are on.
    pub clock: Clock,
    /// The shard's request-memory budget (shared by all its connections).
    pub budget: Rc<RequestBudget>,
}

impl<C, H> Clone for Conn<C, H> {
    fn clone(&self) -> Self {
        Self {
            codec: self.codec.clone(),
            handler: self.handler.clone(),
            limits: self.limits,
            shard: self.shard,
            clock: self.clock.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Serves one connection until the client closes it, it breaks, or it times
/// out (idle for `connection_idle_timeout_ms`, or a frame started and not
/// finished within `frame_read_timeout_ms`).
pub async fn serve<C, H, S>(conn: Conn<C, H>, stream: S)
where
    C: Codec,
    H: Handler<C::Request, C::Response>,
    S: Transport,
{
    stream.set_nodelay();
    let peer = stream.peer();
    let shard_id = conn.shard;
    tracing::debug!(shard = shard_id, %peer, "connection opened");
    let (reader, writer) = split(stream);
    let (tx, rx) = local_channel::new_unbounded::<Outgoing>();
    let activity = Rc::new(Activity::new(conn.clock.clone()));
    let in_order = conn.codec.responses_in_order();
    let order = conn.codec.byte_order();
    let writer_task =
        glommio::spawn_local(write_loop(writer, rx, activity.clone(), order, in_order));
    let responder = Responder {
        tx: Rc::new(tx),
        codec: conn.codec.clone(),
    };
    let timeouts = Timeouts {
        idle: conn.limits.idle,
        frame: conn.limits.frame,
    };

    let timed_out = futures_lite::future::or(
        async {
            read_loop(&conn, reader, &responder, &activity, &peer).await;
            None
        },
        async { Some(watchdog(&activity, timeouts).await) },
    )
    .await;
    drop(responder);
    let timed_out = match timed_out {
        Some(t) => Some(t),
        // Responses still in flight are written before the stream closes,
        // unless the client stops reading them for the idle timeout.
        None => {
            futures_lite::future::or(
                async {
                    writer_task.await;
                    None
                },
                async { Some(watchdog(&activity, timeouts).await) },
            )
            .await
        }
    };
    // On a timeout the writer task (if still running) was dropped above,
    // which cancels it; the stream closes once both halves are gone.
    match timed_out {
        Some(TimedOut::Idle) => tracing::info!(
            shard = shard_id,
            %peer,
            "closing connection: idle (no request handled, nothing read or written) for connection_idle_timeout_ms ({} ms)",
            timeouts.idle.as_millis()
        ),
        Some(TimedOut::Frame) => tracing::info!(
            shard = shard_id,
            %peer,
            "closing connection: a frame was started but not finished within frame_read_timeout_ms ({} ms)",
            timeouts.frame.as_millis()
        ),
        None => tracing::debug!(shard = shard_id, %peer, "connection closed"),
    }
}

/// The two connection timeouts.
#[derive(Clone, Copy)]
struct Timeouts {
    idle: Duration,
    frame: Duration,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimedOut {
    Idle,
    Frame,
}

/// What the watchdog looks at: progress of one connection.
struct Activity {
    /// Last time a byte was read, a response was written, or a request
    /// finished.
    last: Cell<Instant>,
    /// When the first byte of the frame being read arrived (None between
    /// frames).
    frame_started: Cell<Option<Instant>>,
    /// Requests dispatched whose response is not yet queued (a connection
    /// with requests being handled, e.g. long polls, is not idle).
    busy: Cell<usize>,
    /// The clock all of the above are read from.
    clock: Clock,
}

impl Activity {
    fn new(clock: Clock) -> Self {
        Self {
            last: Cell::new(clock.now()),
            frame_started: Cell::new(None),
            busy: Cell::new(0),
            clock,
        }
    }

    fn touch(&self) {
        self.last.set(self.clock.now());
    }
}

/// Decrements `Activity::busy` (and counts as activity) when a request's
/// response has been queued or its task is dropped.
struct BusyGuard(Rc<Activity>);

impl BusyGuard {
    fn new(activity: &Rc<Activity>) -> Self {
        activity.busy.set(activity.busy.get() + 1);
        Self(activity.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        // Paired with the increment in `BusyGuard::new`.
        let busy = self.0.busy.get();
        assert!(busy > 0, "busy count underflow");
        self.0.busy.set(busy - 1);
        self.0.touch();
    }
}

/// Resolves once the connection has timed out; never otherwise.
async fn watchdog(activity: &Activity, t: Timeouts) -> TimedOut {
    loop {
        let now = activity.clock.now();
        let mut next = now + t.idle;
        if let Some(started) = activity.frame_started.get() {
            let due = started + t.frame;
            if now >= due {
                return TimedOut::Frame;
            }
            next = next.min(due);
        } else if activity.busy.get() == 0 {
            let due = activity.last.get() + t.idle;
            if now >= due {
                return TimedOut::Idle;
            }
            next = next.min(due);
        }
        // At least 1 ms on, so a deadline never spins (on any clock).
        activity
            .clock
            .sleep_until(next.max(now + Duration::from_millis(1)))
            .await;
    }
}

/// A `ReadHalf` that records progress in `Activity`.
struct TrackedRead<'a, S> {
    inner: &'a mut ReadHalf<S>,
    activity: &'a Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedRead<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                let now = self.activity.clock.now();
                self.activity.last.set(now);
                if self.activity.frame_started.get().is_none() {
                    self.activity.frame_started.set(Some(now));
                }
            }
        }
        res
    }
}

/// Reads, decodes and dispatches requests until EOF or a framing error.
async fn read_loop<C, H, S>(
    conn: &Conn<C, H>,
    mut reader: ReadHalf<S>,
    responder: &Responder<C>,
    activity: &Rc<Activity>,
    peer: &str,
) where
    C: Codec,
    H: Handler<C::Request, C::Response>,
    S: Transport,
{
    let shard = conn.shard;
    let max_frame_bytes = conn.limits.max_frame_bytes;
    let max_in_flight = u64::from(conn.limits.max_in_flight);
    let in_flight = Rc::new(Semaphore::new(max_in_flight));
    let order = conn.codec.byte_order();
    let mut seq: u64 = 0;

    loop {
        let slot = match in_flight.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => break,
        };
        // Permits are balanced: never more out than the limit.
        assert!(in_flight.available() < max_in_flight || max_in_flight == 0);
        let mut tracked = TrackedRead {
            inner: &mut reader,
            activity,
        };
        let read = match read_frame_len(&mut tracked, max_frame_bytes, order).await {
            Ok(Some(len)) => {
                let mut memory = BudgetedRead {
                    reservation: conn.budget.begin_frame(),
                    activity,
                };
                read_frame_body(&mut tracked, len, max_frame_bytes, &mut memory)
                    .await
                    .map(|frame| {
                        memory.reservation.finish_read();
                        Some((frame, memory.reservation))
                    })
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        activity.frame_started.set(None);
        let this = seq;
        seq += 1;
        let (frame, permit) = match read {
            Ok(Some((frame, bytes))) => (
                frame,
                Held {
                    _slot: slot,
                    _bytes: Some(bytes),
                },
            ),
            Ok(None) => break,
            Err(FrameIoError::TooLarge(FrameError::TooLarge {
                declared_bytes,
                max_frame_bytes,
            })) => {
                tracing::warn!(
                    shard,
                    %peer,
                    "closing: frame of {declared_bytes} bytes exceeds max_frame_bytes ({max_frame_bytes})"
                );
                if let Some(resp) = conn.codec.frame_too_large(declared_bytes, max_frame_bytes) {
                    responder.send_then_close(&resp);
                    drain(&mut reader, &conn.clock).await;
                }
                break;
            }
            Err(FrameIoError::TooLarge(FrameError::Empty)) => match conn.codec.empty_frame() {
                Some(resp) => {
                    let permit = Held {
                        _slot: slot,
                        _bytes: None,
                    };
                    responder.send(this, &resp, Some(permit));
                    continue;
                }
                None => break,
            },
            Err(e) => {
                tracing::debug!(shard, %peer, "connection ended: {e}");
                break;
            }
        };
        match conn.codec.decode(frame) {
            Ok(req) => dispatch(conn, this, req, permit, responder, activity, peer).await,
            Err(resp) => {
                tracing::debug!(shard, %peer, "undecodable request");
                responder.send(this, &resp, Some(permit));
            }
        }
    }
}

/// A frame's payload reservations in the shard's budget. Waiting for the
/// shard's memory is neither a slow client nor an idle connection: the
/// frame-read timer pauses (and restarts after) and the connection counts
/// as busy meanwhile.
struct BudgetedRead<'a> {
    reservation: FrameReservation,
    activity: &'a Rc<Activity>,
}

impl PayloadMemory for BudgetedRead<'_> {
    async fn reserve(&mut self, bytes: usize) {
        let started = self.activity.frame_started.take();
        {
            let _busy = BusyGuard::new(self.activity);
            self.reservation.grow(bytes as u64).await;
        }
        if started.is_some() {
            self.activity
                .frame_started
                .set(Some(self.activity.clock.now()));
        }
    }
}

/// Hands a request to its handler. The handler's ordered part (a produce's
/// appends and forwards) runs here, before the next frame is read, so
/// requests on one connection append in arrival order; the rest completes
/// in a spawned task.
async fn dispatch<C, H>(
    conn: &Conn<C, H>,
    seq: u64,
    req: C::Request,
    permit: Held,
    responder: &Responder<C>,
    activity: &Rc<Activity>,
    peer: &str,
) where
    C: Codec,
    H: Handler<C::Request, C::Response>,
{
    let busy = BusyGuard::new(activity);
    let pending = conn.handler.start(req, peer).await;
    let responder = responder.clone();
    glommio::spawn_local(async move {
        let resp = pending.await;
        responder.send(seq, &resp, Some(permit));
        drop(busy);
    })
    .detach();
}

async fn write_loop<S: AsyncWrite + Unpin>(
    mut writer: WriteHalf<S>,
    rx: local_channel::LocalReceiver<Outgoing>,
    activity: Rc<Activity>,
    order: ByteOrder,
    in_order: bool,
) {
    // In-order codecs: responses that completed before an earlier one.
    let mut waiting: BTreeMap<u64, (Vec<Bytes>, Option<Held>)> = BTreeMap::new();
    let mut next_seq: u64 = 0;
    'recv: while let Some(msg) = rx.recv().await {
        let (seq, parts, permit, close) = match msg {
            Outgoing::Frame { seq, parts, permit } => (seq, parts, permit, false),
            Outgoing::FrameThenClose(parts) => (u64::MAX, parts, None, true),
        };
        let mut ready = vec![(parts, permit)];
        if in_order && !close {
            let previous = waiting.insert(seq, ready.pop().unwrap_or_default());
            assert!(previous.is_none(), "response {seq} queued twice");
            while let Some(r) = waiting.remove(&next_seq) {
                ready.push(r);
                next_seq += 1;
            }
        }
        for (parts, permit) in ready {
            let written = write_frame_parts(&mut writer, order, &parts).await;
            drop(permit);
            if let Err(e) = written {
                tracing::debug!("write failed: {e}");
                break 'recv;
            }
            activity.touch();
        }
        if close {
            let _ = writer.flush().await;
            let _ = writer.close().await;
            break;
        }
    }
    let _ = writer.flush().await;
}

/// Reads and discards input for a short while (bounded in time and bytes).
async fn drain<S: AsyncRead + Unpin>(reader: &mut ReadHalf<S>, clock: &Clock) {
    let deadline = clock.now() + Duration::from_millis(CLOSE_DRAIN_MS);
    let mut buf = vec![0u8; DRAIN_READ_BYTES];
    let mut drained = 0usize;
    while drained < CLOSE_DRAIN_MAX_BYTES {
        let now = clock.now();
        if now >= deadline {
            break;
        }
        let read = futures_lite::future::or(async { Some(reader.read(&mut buf).await) }, async {
            clock.sleep_once_until(deadline).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests;
