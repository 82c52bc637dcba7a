//! One client connection: a reader loop that frames, decodes and dispatches
//! requests in arrival order, and a writer task that sends responses as they
//! complete (pipelining: responses carry the correlation id and may overtake
//! each other).
//!
//! Owns: per-connection backpressure (at most `max_in_flight_per_connection`
//! requests between "frame read" and "response queued"; beyond that the
//! reader stops reading), framing and decode errors, connection timeouts and
//! connection close.
//!
//! Timeouts (a watchdog raced against the reader loop, then against the
//! writer draining): a connection with no request being handled that has
//! read no byte and written no response for `connection_idle_timeout_ms` is
//! closed, which includes a client that never reads its responses (its
//! writes make no progress); a frame whose first byte arrived must be
//! complete within `frame_read_timeout_ms`. A stalled client only ever
//! blocks its own reader and writer tasks, never the shard.
//!
//! Invariants: nothing a client sends can panic the shard or affect another
//! connection; a frame above `max_frame_bytes` is refused before its payload
//! is allocated, answered with MessageTooLarge (correlation id 0, naming both
//! sizes), and the connection is closed; a well-framed but undecodable
//! request is answered (InvalidRequest / UnsupportedVersion) and the
//! connection continues.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use crate::net::frame_io::{read_frame, write_frame, FrameIoError};
use crate::net::split::{split, ReadHalf, WriteHalf};
use crate::protocol::codec::{self, DecodeLimits};
use crate::protocol::frame::FrameError;
use crate::protocol::messages::{Request, Response};
use crate::protocol::ErrorCode;
use crate::shard::Shard;

use super::handlers;

/// How long a connection being closed for a framing error keeps draining
/// input, so the close is a FIN (the error response arrives) rather than a
/// reset, in ms.
const CLOSE_DRAIN_MS: u64 = 1_000;
/// Most bytes drained on such a close.
const CLOSE_DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What the writer task is asked to send.
pub enum Outgoing {
    /// A response, with the in-flight permit of its request: the permit is
    /// released once the response is written, so a client that does not read
    /// its responses stops the broker reading its requests.
    Frame(Vec<u8>, Option<StaticPermit>),
    /// Send this, then shut the socket's write side and stop.
    FrameThenClose(Vec<u8>),
}

/// Hands responses to the connection's writer.
#[derive(Clone)]
pub struct Responder {
    tx: Rc<LocalSender<Outgoing>>,
}

impl Responder {
    /// Queues a response. A connection that has gone away drops it.
    pub fn send(&self, resp: &Response, permit: Option<StaticPermit>) {
        let bytes = codec::encode_response(resp);
        let _ = self.tx.try_send(Outgoing::Frame(bytes, permit));
    }

    fn send_then_close(&self, resp: &Response) {
        let bytes = codec::encode_response(resp);
        let _ = self.tx.try_send(Outgoing::FrameThenClose(bytes));
    }
}

pub fn decode_limits(shard: &Shard) -> DecodeLimits {
    DecodeLimits::for_requests(&shard.config.limits)
}

/// Serves one connection until the client closes it, it breaks, or it times
/// out (idle for `connection_idle_timeout_ms`, or a frame started and not
/// finished within `frame_read_timeout_ms`).
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    tracing::debug!(shard = shard.id, %peer, "connection opened");
    let (reader, writer) = split(stream);
    let (tx, rx) = local_channel::new_unbounded::<Outgoing>();
    let activity = Rc::new(Activity::new());
    let writer_task = glommio::spawn_local(write_loop(writer, rx, activity.clone()));
    let responder = Responder { tx: Rc::new(tx) };
    let timeouts = Timeouts {
        idle: Duration::from_millis(shard.config.limits.connection_idle_timeout_ms),
        frame: Duration::from_millis(shard.config.limits.frame_read_timeout_ms),
    };

    let timed_out = futures_lite::future::or(
        async {
            read_loop(&shard, reader, &responder, &activity, &peer).await;
            None
        },
        async { Some(watchdog(&activity, timeouts).await) },
    )
    .await;
    drop(responder);
    let timed_out = match timed_out {
        Some(t) => Some(t),
        // Responses still in flight are written before the socket closes,
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
    // which cancels it; the socket closes once both halves are gone.
    match timed_out {
        Some(TimedOut::Idle) => tracing::info!(
            shard = shard.id,
            %peer,
            "closing connection: idle (no request handled, nothing read or written) for connection_idle_timeout_ms ({} ms)",
            timeouts.idle.as_millis()
        ),
        Some(TimedOut::Frame) => tracing::info!(
            shard = shard.id,
            %peer,
            "closing connection: a frame was started but not finished within frame_read_timeout_ms ({} ms)",
            timeouts.frame.as_millis()
        ),
        None => tracing::debug!(shard = shard.id, %peer, "connection closed"),
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
}

impl Activity {
    fn new() -> Self {
        Self {
            last: Cell::new(Instant::now()),
            frame_started: Cell::new(None),
            busy: Cell::new(0),
        }
    }

    fn touch(&self) {
        self.last.set(Instant::now());
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
        self.0.busy.set(self.0.busy.get().saturating_sub(1));
        self.0.touch();
    }
}

/// Resolves once the connection has timed out; never otherwise.
async fn watchdog(activity: &Activity, t: Timeouts) -> TimedOut {
    loop {
        let now = Instant::now();
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
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        crate::timer::sleep(wait).await;
    }
}

/// A `ReadHalf` that records progress in `Activity`.
struct TrackedRead<'a> {
    inner: &'a mut ReadHalf,
    activity: &'a Activity,
}

impl AsyncRead for TrackedRead<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                let now = Instant::now();
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
async fn read_loop(
    shard: &Rc<Shard>,
    mut reader: ReadHalf,
    responder: &Responder,
    activity: &Rc<Activity>,
    peer: &str,
) {
    let limits = &shard.config.limits;
    let max_frame_bytes = limits.max_frame_bytes;
    let decode = decode_limits(shard);
    let in_flight = Rc::new(Semaphore::new(limits.max_in_flight_per_connection as u64));

    loop {
        let permit = match in_flight.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let read = read_frame(
            &mut TrackedRead {
                inner: &mut reader,
                activity,
            },
            max_frame_bytes,
        )
        .await;
        activity.frame_started.set(None);
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameIoError::TooLarge(FrameError::TooLarge {
                declared_bytes,
                max_frame_bytes,
            })) => {
                tracing::warn!(
                    shard = shard.id,
                    %peer,
                    "closing: frame of {declared_bytes} bytes exceeds max_frame_bytes ({max_frame_bytes})"
                );
                responder.send_then_close(&Response::error(
                    0,
                    ErrorCode::MessageTooLarge,
                    format!(
                        "request frame of {declared_bytes} bytes exceeds max_frame_bytes ({max_frame_bytes}); closing the connection"
                    ),
                ));
                drain(&mut reader).await;
                break;
            }
            Err(FrameIoError::TooLarge(FrameError::Empty)) => {
                // Four zero bytes: still in sync with the framing.
                responder.send(
                    &Response::error(0, ErrorCode::InvalidRequest, "empty frame (length 0)"),
                    Some(permit),
                );
                continue;
            }
            Err(e) => {
                tracing::debug!(shard = shard.id, %peer, "connection ended: {e}");
                break;
            }
        };
        match codec::decode_request(&frame, &decode) {
            Ok(req) => dispatch(shard, req, permit, responder, activity).await,
            Err(e) => {
                tracing::debug!(shard = shard.id, %peer, "undecodable request: {e}");
                responder.send(
                    &Response {
                        correlation_id: e.correlation_id,
                        error: Some(e.error),
                        body: None,
                    },
                    Some(permit),
                );
            }
        }
    }
}

/// Hands a request to its handler. Produce appends (and forwards) here,
/// before the next frame is read, so requests on one connection append in
/// arrival order; everything else completes in a spawned task.
async fn dispatch(
    shard: &Rc<Shard>,
    req: Request,
    permit: StaticPermit,
    responder: &Responder,
    activity: &Rc<Activity>,
) {
    let busy = BusyGuard::new(activity);
    let Request {
        correlation_id,
        body,
        ..
    } = req;
    let pending = handlers::start(shard, correlation_id, body).await;
    let responder = responder.clone();
    glommio::spawn_local(async move {
        let resp = pending.finish().await;
        responder.send(&resp, Some(permit));
        drop(busy);
    })
    .detach();
}

async fn write_loop(
    mut writer: WriteHalf,
    rx: local_channel::LocalReceiver<Outgoing>,
    activity: Rc<Activity>,
) {
    while let Some(msg) = rx.recv().await {
        let (bytes, close, permit) = match msg {
            Outgoing::Frame(b, permit) => (b, false, permit),
            Outgoing::FrameThenClose(b) => (b, true, None),
        };
        let written = write_frame(&mut writer, &bytes).await;
        drop(permit);
        if let Err(e) = written {
            tracing::debug!("write failed: {e}");
            break;
        }
        activity.touch();
        if close {
            let _ = writer.flush().await;
            let _ = writer.close().await;
            break;
        }
    }
    let _ = writer.flush().await;
}

/// Reads and discards input for a short while (bounded in time and bytes).
async fn drain(reader: &mut ReadHalf) {
    let deadline = Instant::now() + Duration::from_millis(CLOSE_DRAIN_MS);
    let mut buf = vec![0u8; 64 * 1024];
    let mut drained = 0usize;
    while drained < CLOSE_DRAIN_MAX_BYTES {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let read = futures_lite::future::or(async { Some(reader.read(&mut buf).await) }, async {
            crate::timer::sleep_once_until(deadline).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}
