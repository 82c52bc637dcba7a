//! The cross-shard mesh: typed operations one shard runs on another.
//!
//! Owns: the [`ShardOp`] trait (a request type and its reply type), the one
//! message type carried between shards ([`ShardMessage`]), request ids and
//! the per-shard pending map (id → peer, local oneshot), the receiver loops
//! (one per peer), and [`Shard::start_on`] / [`Shard::call`] /
//! [`Shard::call_all`]. The links themselves are behind [`super::link`]
//! (glommio's channel mesh, or a simulated one in tests); nothing here
//! depends on which.
//!
//! Adding an operation is: a type, `impl ShardOp for it` (its owner-side
//! handler), and a caller. Nothing here changes, and no caller matches a
//! reply at run time: `call::<O>` returns `O::Reply`.
//!
//! Invariants: every message is `Send` plain data (owned Strings, `Bytes`);
//! the synchronous part of an op ([`ShardOp::start`], up to its first await)
//! runs in the receiver loop, so ops from one peer start in the order that
//! peer sent them (a produce's appends keep connection order); the rest runs
//! in a spawned task, so a long poll never blocks the channel; a receiver
//! loop never awaits a send; replies are matched by id, and a reply whose
//! requester has gone away is dropped. When a link fails (its receiver loop
//! ends), every request still waiting on that peer fails with Internal and
//! later ones fail at once: a lost peer is an error, never a hang. The reply of an op is always of the
//! type the op declares: the one downcast below is asserted, never matched.
//!
//! Must not know: what an operation does (partitions, protocols, codecs).

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use glommio::channels::oneshot;

use crate::protocol::{ErrorCode, ShardId, WireError};

use super::ops::LocalBoxFuture;
use super::Shard;

/// A per-partition outcome.
pub type PartResult<T> = Result<T, WireError>;

/// An operation one shard asks of another (or of itself, without the mesh).
pub trait ShardOp: Send + Sync + 'static {
    /// What the op answers. Travels back over the mesh, so `Send` (and
    /// `Sync`, as glommio's mesh requires of its messages).
    type Reply: Send + Sync + 'static;

    /// Runs the op on `shard`. Everything before the returned future is first
    /// polled runs synchronously in arrival order (e.g. a produce's appends);
    /// the future completes the op.
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply>;
}

/// A boxed [`ShardOp`] whose reply is erased for transport (implemented for
/// every `ShardOp`; nothing else implements it).
#[doc(hidden)]
pub trait ErasedOp: Send + Sync {
    fn start_erased(self: Box<Self>, shard: &Rc<Shard>) -> LocalBoxFuture<'static, AnyReply>;
    fn name(&self) -> &'static str;
}

/// A reply in transit; always the `ShardOp::Reply` of its request.
pub type AnyReply = Box<dyn Any + Send + Sync>;

impl<O: ShardOp> ErasedOp for O {
    fn start_erased(self: Box<Self>, shard: &Rc<Shard>) -> LocalBoxFuture<'static, AnyReply> {
        let fut = (*self).start(shard);
        Box::pin(async move { Box::new(fut.await) as AnyReply })
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<O>()
    }
}

/// Everything that travels between shards.
pub enum ShardMessage {
    /// Startup: shard 0's resolved listener addresses (one per configured
    /// listener, in order), sent once to every peer.
    ListenAddrs(Vec<SocketAddr>),
    /// An op to run; its reply goes back as `Reply` with the same id.
    Request { id: u64, op: Box<dyn ErasedOp> },
    /// The reply to request `id`, of that request's `ShardOp::Reply` type.
    Reply { id: u64, body: AnyReply },
    /// Shutdown: stop accepting, close partitions, exit.
    Shutdown,
}

impl fmt::Debug for ShardMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardMessage::ListenAddrs(a) => write!(f, "ListenAddrs({a:?})"),
            ShardMessage::Request { id, .. } => write!(f, "Request #{id}"),
            ShardMessage::Reply { id, .. } => write!(f, "Reply #{id}"),
            ShardMessage::Shutdown => write!(f, "Shutdown"),
        }
    }
}

/// Error for a vanished peer (or another shard-level failure).
pub fn internal(what: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Internal, what)
}

/// An op whose synchronous part has run here, or that has been handed to
/// its peer (in order); [`Started::wait`] gives its reply.
pub enum Started<R> {
    Local(LocalBoxFuture<'static, R>),
    Remote {
        rx: oneshot::Receiver<AnyReply>,
        peer: ShardId,
    },
    Failed(WireError),
}

impl<R: Send + Sync + 'static> Started<R> {
    /// The reply, or Internal if the peer is unreachable or went away.
    pub async fn wait(self) -> Result<R, WireError> {
        match self {
            Started::Local(f) => Ok(f.await),
            Started::Failed(e) => Err(e),
            Started::Remote { rx, peer } => {
                let body = rx.await.map_err(|_| {
                    internal(format!("shard {peer} did not answer (its link failed)"))
                })?;
                match body.downcast::<R>() {
                    Ok(r) => Ok(*r),
                    // The pending map pairs each id with the op that made it.
                    Err(_) => panic!(
                        "mesh invariant: reply from shard {peer} is not a {}",
                        std::any::type_name::<R>()
                    ),
                }
            }
        }
    }
}

impl Shard {
    /// Starts `op` on `shard`: here, its synchronous part runs now; on a
    /// peer, the send is awaited (FIFO per peer pair: ops sent in order start
    /// in order), the reply is not.
    pub async fn start_on<O: ShardOp>(self: &Rc<Self>, shard: ShardId, op: O) -> Started<O::Reply> {
        if shard == self.id {
            return Started::Local(op.start(self));
        }
        assert!(shard < self.count, "op for shard {shard} of {}", self.count);
        if self.links_down.borrow()[shard] {
            return Started::Failed(internal(format!("link to shard {shard} is down")));
        }
        let id = self.next_request_id.get();
        self.next_request_id.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::oneshot();
        let previous = self.pending.borrow_mut().insert(id, (shard, tx));
        assert!(previous.is_none(), "request id {id} reused while pending");
        let msg = ShardMessage::Request {
            id,
            op: Box::new(op),
        };
        if self.senders.send_to(shard, msg).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Started::Failed(internal(format!("shard {shard} is unreachable")));
        }
        Started::Remote { rx, peer: shard }
    }

    /// Runs `op` on `shard` and returns its reply (Internal if the peer is
    /// unreachable).
    pub async fn call<O: ShardOp>(
        self: &Rc<Self>,
        shard: ShardId,
        op: O,
    ) -> Result<O::Reply, WireError> {
        self.start_on(shard, op).await.wait().await
    }

    /// Runs `make()` on every shard concurrently and returns the first error.
    pub async fn call_all<O>(self: &Rc<Self>, make: impl Fn() -> O) -> Result<(), WireError>
    where
        O: ShardOp<Reply = Result<(), WireError>>,
    {
        let mut started = Vec::with_capacity(self.count);
        for s in 0..self.count {
            started.push(self.start_on(s, make()).await);
        }
        let mut first_err = None;
        for st in started {
            if let Err(e) = st.wait().await.and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends a reply to `peer` (from a spawned task; never from a receiver loop).
    async fn reply(&self, peer: ShardId, id: u64, body: AnyReply) {
        if self
            .senders
            .send_to(peer, ShardMessage::Reply { id, body })
            .await
            .is_err()
        {
            tracing::debug!(shard = self.id, peer, "reply dropped: peer gone");
        }
    }

    /// Starts one receiver loop per peer. Call once, after the startup handshake.
    pub fn start_receivers(self: &Rc<Self>) {
        let Some(receivers) = self.receivers.borrow_mut().take() else {
            return;
        };
        let receivers = Rc::new(receivers);
        for peer in 0..self.count {
            if peer == self.id {
                continue;
            }
            let me = self.clone();
            let receivers = receivers.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = receivers.recv_from(peer).await {
                    me.on_message(peer, msg);
                }
                tracing::debug!(shard = me.id, peer, "mesh receiver stopped");
                me.link_down(peer);
            })
            .detach();
        }
    }

    /// Startup only: waits for shard 0's listener addresses (the first
    /// message on the 0 → self channel).
    pub async fn recv_listen_addrs(&self) -> Option<Vec<SocketAddr>> {
        let receivers = self.receivers.borrow_mut().take()?;
        let got = loop {
            match receivers.recv_from(0).await {
                Some(ShardMessage::ListenAddrs(a)) => break Some(a),
                Some(other) => {
                    tracing::warn!(
                        shard = self.id,
                        "unexpected message before startup: {other:?}"
                    )
                }
                None => break None,
            }
        };
        *self.receivers.borrow_mut() = Some(receivers);
        got
    }

    /// Startup only (shard 0): tells every peer the resolved listener addresses.
    pub async fn send_listen_addrs(&self, addrs: &[SocketAddr]) {
        for peer in 0..self.count {
            if peer != self.id
                && self
                    .senders
                    .send_to(peer, ShardMessage::ListenAddrs(addrs.to_vec()))
                    .await
                    .is_err()
            {
                tracing::warn!("cannot tell shard {peer} the listen address");
            }
        }
    }

    /// Tells every peer to shut down (shard 0, on a signal).
    pub async fn broadcast_shutdown(&self) {
        for peer in 0..self.count {
            if peer != self.id {
                let _ = self.senders.send_to(peer, ShardMessage::Shutdown).await;
            }
        }
    }

    /// The link to `peer` failed or closed: no reply will come from it.
    /// Requests waiting on it fail now (their oneshots are dropped), and
    /// later ones fail at once.
    fn link_down(&self, peer: ShardId) {
        self.links_down.borrow_mut()[peer] = true;
        let mut failed = 0usize;
        self.pending.borrow_mut().retain(|_, (to, _)| {
            let keep = *to != peer;
            failed += usize::from(!keep);
            keep
        });
        if failed > 0 && !self.is_stopping() {
            tracing::warn!(shard = self.id, peer, failed, "link down: requests failed");
        }
    }

    fn on_message(self: &Rc<Self>, peer: ShardId, msg: ShardMessage) {
        debug_assert!(peer != self.id && peer < self.count);
        match msg {
            ShardMessage::Reply { id, body } => {
                let entry = self.pending.borrow_mut().remove(&id);
                if let Some((to, tx)) = entry {
                    assert_eq!(to, peer, "reply #{id} came from another shard");
                    // The requester may have stopped waiting (a finished long poll).
                    let _ = tx.send(body);
                }
            }
            ShardMessage::Request { id, op } => {
                tracing::trace!(shard = self.id, peer, op = op.name(), "op");
                // The synchronous part runs here, in arrival order.
                let fut = op.start_erased(self);
                let me = self.clone();
                glommio::spawn_local(async move {
                    let body = fut.await;
                    me.reply(peer, id, body).await;
                })
                .detach();
            }
            ShardMessage::Shutdown => self.request_stop(),
            ShardMessage::ListenAddrs(_) => {
                tracing::warn!(shard = self.id, peer, "late listen address ignored")
            }
        }
    }
}
