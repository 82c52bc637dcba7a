//! One pipelined TCP connection to a broker.
//!
//! A writer task drains a queue of encoded frames onto the socket; a reader
//! task decodes responses and completes the pending request with the same
//! correlation id. Requests are framed in the order `start` is called.
//!
//! Every connection starts with a handshake: an ApiVersions request whose
//! answer must be a small, decodable Corelog response to it, within
//! [`HANDSHAKE_TIMEOUT_MS`]; anything else (an HTTP server's reply, silence,
//! a huge length prefix) is [`ClientError::Handshake`], named at once rather
//! than after a request timeout or as a giant frame.
//!
//! Invariants: every pending request completes exactly once: with its
//! response, with `Timeout` (it is then forgotten; a late response is
//! dropped), or with the connection's failure. Once the connection fails,
//! every pending and every later request fails with the same error.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::debug;

use super::sync::{oneshot, OneshotReceiver, OneshotSender};
use super::{ClientConfig, ClientError};
use crate::net::{read_frame, split, write_frame, FrameIoError};
use crate::protocol::codec::{self, DecodeLimits};
use crate::protocol::frame::{check_length, LENGTH_PREFIX_BYTES};
use crate::protocol::messages::{
    ApiVersionsRequest, Request, RequestBody, ResponseBody, PROTOCOL_VERSION,
};
use crate::protocol::{CorrelationId, WireError};

type Reply = Result<ResponseBody, ClientError>;

/// Longest the handshake waits for the broker's answer, in ms (capped by
/// `request_timeout_ms`).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Largest handshake answer accepted, in bytes (an ApiVersions response is a
/// few hundred; "HTTP" read as a length is 1.3 GB).
pub const HANDSHAKE_MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Correlation id of the handshake; requests start after it.
const HANDSHAKE_CORRELATION_ID: CorrelationId = 1;

/// Why the connection is gone, kept to fail later requests the same way.
#[derive(Debug, Clone)]
enum Failure {
    Closed,
    Io(std::io::ErrorKind, String),
    Protocol(String),
    Broker(WireError),
}

impl Failure {
    fn to_error(&self) -> ClientError {
        match self {
            Failure::Closed => ClientError::Closed,
            Failure::Io(kind, m) => ClientError::Io(std::io::Error::new(*kind, m.clone())),
            Failure::Protocol(m) => ClientError::Protocol(m.clone()),
            Failure::Broker(e) => ClientError::Broker(e.clone()),
        }
    }
}

struct Shared {
    client_id: String,
    request_timeout_ms: u64,
    next_id: Cell<CorrelationId>,
    pending: RefCell<HashMap<CorrelationId, OneshotSender<Reply>>>,
    failed: RefCell<Option<Failure>>,
    tx: RefCell<Option<LocalSender<Bytes>>>,
}

impl Shared {
    /// Marks the connection failed and fails every pending request.
    fn fail(&self, why: Failure) {
        {
            let mut f = self.failed.borrow_mut();
            if f.is_none() {
                *f = Some(why);
            }
        }
        self.tx.borrow_mut().take();
        let why = self.failed.borrow().clone().unwrap_or(Failure::Closed);
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, tx) in pending {
            tx.send(Err(why.to_error()));
        }
    }
}

/// One TCP connection with pipelined requests. Dropping it closes the socket
/// and fails whatever is still pending with `Closed`.
pub struct Connection {
    shared: Rc<Shared>,
    reader: JoinHandle<()>,
}

impl Connection {
    /// Connects to `config.bootstrap` (within `request_timeout_ms`).
    pub async fn connect(config: &ClientConfig) -> Result<Connection, ClientError> {
        if config.request_timeout_ms == 0 {
            return Err(ClientError::Config("request_timeout_ms must be > 0".into()));
        }
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let stream = TcpStream::connect_timeout(config.bootstrap.as_str(), timeout)
            .await
            .map_err(|e| {
                let cause = match e {
                    glommio::GlommioError::IoError(io) => io.to_string(),
                    other => other.to_string(),
                };
                ClientError::Io(std::io::Error::other(format!(
                    "cannot connect to {}: {cause}",
                    config.bootstrap
                )))
            })?;
        stream.set_nodelay(true).map_err(std::io::Error::other)?;
        let (mut reader, mut writer) = split(crate::net::buffered(stream));
        handshake(config, &mut reader, &mut writer).await?;
        let (tx, rx) = local_channel::new_unbounded::<Bytes>();
        let shared = Rc::new(Shared {
            client_id: config.client_id.clone(),
            request_timeout_ms: config.request_timeout_ms,
            next_id: Cell::new(HANDSHAKE_CORRELATION_ID + 1),
            pending: RefCell::new(HashMap::new()),
            failed: RefCell::new(None),
            tx: RefCell::new(Some(tx)),
        });

        let w_shared = Rc::downgrade(&shared);
        glommio::spawn_local(async move {
            while let Some(frame) = rx.recv().await {
                if let Err(e) = write_frame(&mut writer, &frame).await {
                    if let Some(s) = w_shared.upgrade() {
                        s.fail(Failure::Io(e.kind(), format!("write failed: {e}")));
                    }
                    return;
                }
            }
            // Queue closed: the connection was dropped or failed.
            let _ = writer.close().await;
        })
        .detach();

        let r_shared = shared.clone();
        let max_frame_bytes = config.max_frame_bytes;
        let reader = glommio::spawn_local(async move {
            let limits = DecodeLimits::default();
            loop {
                let frame = match read_frame(&mut reader, max_frame_bytes).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return r_shared.fail(Failure::Closed),
                    Err(FrameIoError::Io(e)) => {
                        return r_shared.fail(Failure::Io(e.kind(), format!("read failed: {e}")))
                    }
                    Err(e) => return r_shared.fail(Failure::Protocol(e.to_string())),
                };
                if !dispatch(&r_shared, &frame, &limits) {
                    return;
                }
            }
        })
        .detach();
        Ok(Connection { shared, reader })
    }

    /// Enqueues a request now (fixing its place on the wire) and returns a
    /// future for the response body. Broker request-level errors become
    /// `ClientError::Broker`.
    pub fn start(&self, body: RequestBody) -> Result<ResponseFuture, ClientError> {
        self.start_with_timeout(body, self.shared.request_timeout_ms)
    }

    /// As [`Connection::start`], with its own timeout (e.g. a long poll's
    /// `max_wait_ms` on top of the request timeout).
    pub fn start_with_timeout(
        &self,
        body: RequestBody,
        timeout_ms: u64,
    ) -> Result<ResponseFuture, ClientError> {
        if let Some(f) = self.shared.failed.borrow().as_ref() {
            return Err(f.to_error());
        }
        let id = self.shared.next_id.get();
        self.shared.next_id.set(id.wrapping_add(1).max(1));
        let frame = codec::encode_request(&Request {
            correlation_id: id,
            api_version: PROTOCOL_VERSION,
            client_id: Some(self.shared.client_id.clone()),
            body,
        });
        let (reply_tx, reply_rx) = oneshot();
        self.shared.pending.borrow_mut().insert(id, reply_tx);
        let sent = match self.shared.tx.borrow().as_ref() {
            Some(tx) => tx.try_send(frame).is_ok(),
            None => false,
        };
        if !sent {
            self.shared.pending.borrow_mut().remove(&id);
            let f = self
                .shared
                .failed
                .borrow()
                .clone()
                .unwrap_or(Failure::Closed);
            return Err(f.to_error());
        }
        Ok(ResponseFuture {
            id,
            shared: Rc::downgrade(&self.shared),
            reply: reply_rx,
            timer: Box::pin(crate::timer::sleep(Duration::from_millis(timeout_ms))),
            timeout_ms,
        })
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        self.start(body)?.await
    }

    /// Requests still waiting for a response.
    pub fn pending_requests(&self) -> usize {
        self.shared.pending.borrow().len()
    }

    /// Whether the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.failed.borrow().is_some()
    }
}

/// Sends ApiVersions and checks that the answer is a Corelog response to it
/// (see the module header).
async fn handshake<R, W>(
    config: &ClientConfig,
    reader: &mut R,
    writer: &mut W,
) -> Result<(), ClientError>
where
    R: futures_lite::AsyncRead + Unpin,
    W: futures_lite::AsyncWrite + Unpin,
{
    let timeout_ms = HANDSHAKE_TIMEOUT_MS.min(config.request_timeout_ms);
    let not_corelog = |detail: String| {
        ClientError::Handshake(format!(
            "{} did not answer the Corelog handshake ({detail})",
            config.bootstrap
        ))
    };
    let frame = codec::encode_request(&Request {
        correlation_id: HANDSHAKE_CORRELATION_ID,
        api_version: PROTOCOL_VERSION,
        client_id: Some(config.client_id.clone()),
        body: RequestBody::ApiVersions(ApiVersionsRequest::default()),
    });
    let exchange = async {
        write_frame(writer, &frame)
            .await
            .map_err(|e| format!("sending it failed: {e}"))?;
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        futures_lite::AsyncReadExt::read_exact(reader, &mut prefix)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "it closed the connection".to_string(),
                _ => format!("reading the answer failed: {e}"),
            })?;
        let Ok(len) = check_length(prefix, HANDSHAKE_MAX_FRAME_BYTES) else {
            let text: String = prefix
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            return Err(format!(
                "its answer starts with {prefix:02x?} (\"{text}\"), not a Corelog frame"
            ));
        };
        let mut payload = vec![0u8; len];
        futures_lite::AsyncReadExt::read_exact(reader, &mut payload)
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        let resp = codec::decode_response(&Bytes::from(payload), &DecodeLimits::default())
            .map_err(|e| format!("its answer does not decode: {}", e.error.message))?;
        if resp.correlation_id != HANDSHAKE_CORRELATION_ID {
            return Err(format!(
                "its answer has correlation id {}, not {HANDSHAKE_CORRELATION_ID}",
                resp.correlation_id
            ));
        }
        // An error answer (e.g. an unsupported version) still comes from a
        // Corelog broker: the requests that follow report what it says.
        match resp.body {
            None | Some(ResponseBody::ApiVersions(_)) => Ok(()),
            Some(other) => Err(format!("it answered ApiVersions with {other:?}")),
        }
    };
    let timeout = async {
        crate::timer::sleep_once(Duration::from_millis(timeout_ms)).await;
        Err(format!("no answer within {timeout_ms} ms"))
    };
    futures_lite::future::or(exchange, timeout)
        .await
        .map_err(not_corelog)
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.cancel();
        self.shared.fail(Failure::Closed);
    }
}

/// Routes one response frame. Returns false when the connection must stop.
fn dispatch(shared: &Shared, frame: &Bytes, limits: &DecodeLimits) -> bool {
    match codec::decode_response(frame, limits) {
        Ok(resp) => {
            let waiter = shared.pending.borrow_mut().remove(&resp.correlation_id);
            match (waiter, resp.error) {
                (Some(w), Some(e)) => w.send(Err(ClientError::Broker(e))),
                (Some(w), None) => match resp.body {
                    Some(b) => w.send(Ok(b)),
                    None => w.send(Err(ClientError::Protocol(
                        "response has neither a body nor an error".into(),
                    ))),
                },
                // Correlation id 0 with an error: a connection-level refusal
                // (e.g. an oversized frame); the broker closes next.
                (None, Some(e)) if resp.correlation_id == 0 => {
                    shared.fail(Failure::Broker(e));
                    return false;
                }
                (None, _) => debug!(
                    correlation_id = resp.correlation_id,
                    "response for a request no longer pending (timed out?)"
                ),
            }
            true
        }
        Err(e) => {
            let waiter = shared.pending.borrow_mut().remove(&e.correlation_id);
            match waiter {
                Some(w) => {
                    w.send(Err(ClientError::Protocol(format!(
                        "undecodable response: {}",
                        e.error.message
                    ))));
                    true
                }
                None => {
                    shared.fail(Failure::Protocol(format!(
                        "undecodable response: {}",
                        e.error.message
                    )));
                    false
                }
            }
        }
    }
}

/// The response to one request; fails with `Timeout` after
/// `request_timeout_ms`.
pub struct ResponseFuture {
    id: CorrelationId,
    shared: std::rc::Weak<Shared>,
    reply: OneshotReceiver<Reply>,
    timer: Pin<Box<dyn Future<Output = ()>>>,
    timeout_ms: u64,
}

impl Future for ResponseFuture {
    type Output = Result<ResponseBody, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = Pin::new(&mut self.reply).poll(cx) {
            return Poll::Ready(r.unwrap_or(Err(ClientError::Closed)));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            if let Some(s) = self.shared.upgrade() {
                s.pending.borrow_mut().remove(&self.id);
            }
            return Poll::Ready(Err(ClientError::Timeout(format!(
                "no response within {} ms",
                self.timeout_ms
            ))));
        }
        Poll::Pending
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            s.pending.borrow_mut().remove(&self.id);
        }
    }
}

/// A connection that is replaced by a fresh one when it has closed (the
/// broker cut it after `connection_idle_timeout_ms`, or it restarted).
///
/// Invariant: a replacement happens only once the old connection has failed,
/// and a failed connection has already failed every request it carried, so a
/// reconnect never resends, duplicates or reorders anything.
pub struct ReconnectingConnection {
    config: ClientConfig,
    current: RefCell<Rc<Connection>>,
}

impl ReconnectingConnection {
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let conn = Connection::connect(config).await?;
        Ok(Self {
            config: config.clone(),
            current: RefCell::new(Rc::new(conn)),
        })
    }

    /// The connection as it is now, closed or not (for callers that must not
    /// wait, e.g. to fix the wire order of a request).
    pub fn current(&self) -> Rc<Connection> {
        self.current.borrow().clone()
    }

    /// A live connection: the current one, or a new one if it has closed.
    pub async fn get(&self) -> Result<Rc<Connection>, ClientError> {
        let conn = self.current();
        if !conn.is_closed() {
            return Ok(conn);
        }
        debug!(bootstrap = %self.config.bootstrap, "connection closed; reconnecting");
        let fresh = Rc::new(Connection::connect(&self.config).await?);
        // Another task may have reconnected while this one waited: keep
        // theirs (ours carries no request yet, so dropping it loses nothing).
        let now = self.current();
        if !now.is_closed() {
            return Ok(now);
        }
        *self.current.borrow_mut() = fresh.clone();
        Ok(fresh)
    }
}
