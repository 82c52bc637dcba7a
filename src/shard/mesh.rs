//! The cross-shard mesh: what shards say to each other and how a request
//! finds its answer.
//!
//! Owns: [`ShardMessage`] (the one type carried by the full channel mesh),
//! request ids and the per-shard pending map (id → local oneshot), and the
//! receiver loops (one per peer).
//!
//! Invariants: every message is `Send` plain data (owned Strings, `Bytes`);
//! a receiver loop never awaits a send: requests run in spawned tasks (so a
//! long poll never blocks the channel), except a produce's appends, which run
//! synchronously in the loop so that appends from one peer happen in the
//! order that peer sent them; replies are matched by id and a reply whose
//! requester has gone away is dropped.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::channels::oneshot;

use crate::partition::{AppendResult, FetchData};
use crate::protocol::messages::{Acks, ConfigEntry, OffsetSpec};
use crate::protocol::{ErrorCode, Offset, PartitionId, ShardId, WireError};

use super::registry::TopicMeta;
use super::Shard;

/// A per-partition outcome.
pub type PartResult<T> = Result<T, WireError>;

/// Everything that travels between shards.
#[derive(Debug)]
pub enum ShardMessage {
    /// Startup: shard 0's resolved listen address, sent once to every peer.
    ListenAddr(SocketAddr),
    Request {
        id: u64,
        body: ShardRequest,
    },
    Reply {
        id: u64,
        body: ShardReply,
    },
    /// Shutdown: stop accepting, close partitions, exit.
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: PartitionId,
    pub batch: Bytes,
}

#[derive(Debug, Clone)]
pub struct FetchItem {
    pub topic: String,
    pub partition: PartitionId,
    pub offset: Offset,
    pub max_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct WaitItem {
    pub topic: String,
    pub partition: PartitionId,
    /// Wake once the high watermark moves past this offset.
    pub offset: Offset,
}

#[derive(Debug, Clone)]
pub struct OffsetItem {
    pub topic: String,
    pub partition: PartitionId,
    pub spec: OffsetSpec,
}

#[derive(Debug, Clone)]
pub struct InfoItem {
    pub topic: String,
    pub partition: PartitionId,
}

/// `(log_start_offset, log_end_offset, high_watermark)` of one partition.
pub type PartitionOffsets = (Offset, Offset, Offset);

/// A request one shard asks of another (or of itself, without the mesh).
#[derive(Debug)]
pub enum ShardRequest {
    /// Append on the owner; the reply comes once durable (or at once for acks=none).
    Produce {
        acks: Acks,
        items: Vec<ProduceItem>,
    },
    /// Fetch; the owner caps the sum of its records at `budget_bytes`
    /// (at least one batch is always returned if any is available).
    Fetch {
        items: Vec<FetchItem>,
        budget_bytes: u32,
    },
    /// Resolves when any of the partitions has data past its offset, or at the deadline.
    WaitForData {
        items: Vec<WaitItem>,
        deadline: Instant,
    },
    ListOffsets {
        items: Vec<OffsetItem>,
    },
    PartitionInfo {
        items: Vec<InfoItem>,
    },
    /// To shard 0 (the metadata owner).
    CreateTopic {
        name: String,
        partitions: i32,
        configs: Vec<ConfigEntry>,
    },
    /// To shard 0 (the metadata owner).
    DeleteTopic {
        name: String,
    },
    /// To the owner: advance a partition's log start (delete-records).
    DeleteRecords {
        topic: String,
        partition: PartitionId,
        before: Offset,
    },
    /// To shard 0 (the metadata owner): change a live topic's settings.
    AlterTopicConfig {
        name: String,
        configs: Vec<ConfigEntry>,
    },
    /// From shard 0 to an owner: open (creating) these partitions of a new topic.
    OpenPartitions {
        meta: TopicMeta,
        partitions: Vec<PartitionId>,
    },
    /// From shard 0 to every shard: the topic exists or changed (table
    /// change; owners apply `meta.config` to their live partitions).
    UpsertTopic {
        meta: TopicMeta,
    },
    /// From shard 0 to every shard: forget the topic, close owned partitions.
    RemoveTopic {
        name: String,
    },
}

#[derive(Debug)]
pub enum ShardReply {
    Produce(Vec<PartResult<AppendResult>>),
    Fetch(Vec<PartResult<FetchData>>),
    Waited,
    ListOffsets(Vec<PartResult<(Offset, i64)>>),
    PartitionInfo(Vec<PartResult<PartitionOffsets>>),
    /// The partition's log start after a delete-records.
    LogStart(PartResult<Offset>),
    /// Outcome of an admin or table operation.
    Done(Result<(), WireError>),
}

/// Error for a reply of the wrong kind or a vanished peer.
pub fn internal(what: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Internal, what)
}

/// An answer on its way back from a peer.
pub struct PendingReply {
    rx: Option<oneshot::Receiver<ShardReply>>,
    ready: Option<ShardReply>,
    peer: ShardId,
}

impl PendingReply {
    pub fn ready(reply: ShardReply, peer: ShardId) -> Self {
        Self {
            rx: None,
            ready: Some(reply),
            peer,
        }
    }

    /// The reply, or an Internal error if the peer went away.
    pub async fn wait(mut self) -> Result<ShardReply, WireError> {
        if let Some(r) = self.ready.take() {
            return Ok(r);
        }
        match self.rx.take() {
            Some(rx) => rx
                .await
                .map_err(|_| internal(format!("shard {} did not answer", self.peer))),
            None => Err(internal("reply already taken")),
        }
    }
}

impl Shard {
    /// Sends `body` to `peer` over the mesh and returns the reply to await.
    /// The send itself is awaited (FIFO per peer pair: requests sent in
    /// order arrive in order); the reply is not.
    pub async fn send_request(&self, peer: ShardId, body: ShardRequest) -> PendingReply {
        let id = self.next_request_id.get();
        self.next_request_id.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::oneshot();
        self.pending.borrow_mut().insert(id, tx);
        let msg = ShardMessage::Request { id, body };
        if self.senders.send_to(peer, msg).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return PendingReply::ready(
                ShardReply::Done(Err(internal(format!("shard {peer} is unreachable")))),
                peer,
            );
        }
        PendingReply {
            rx: Some(rx),
            ready: None,
            peer,
        }
    }

    /// Runs `body` on `shard`: directly when it is this shard, else over the mesh.
    pub async fn call(self: &Rc<Self>, shard: ShardId, body: ShardRequest) -> ShardReply {
        if shard == self.id {
            return self.clone().execute(body).await;
        }
        match self.send_request(shard, body).await.wait().await {
            Ok(r) => r,
            Err(e) => ShardReply::Done(Err(e)),
        }
    }

    /// Runs `body` on every shard concurrently and returns the first error.
    pub async fn call_all(
        self: &Rc<Self>,
        make: impl Fn() -> ShardRequest,
    ) -> Result<(), WireError> {
        let mut tasks = Vec::with_capacity(self.count);
        for s in 0..self.count {
            let me = self.clone();
            let body = make();
            tasks.push(glommio::spawn_local(async move { me.call(s, body).await }));
        }
        let mut first_err = None;
        for t in tasks {
            match t.await {
                ShardReply::Done(Ok(())) => {}
                ShardReply::Done(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                other => {
                    first_err.get_or_insert(internal(format!("unexpected reply {other:?}")));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends a reply to `peer` (from a spawned task; never from a receiver loop).
    async fn reply(&self, peer: ShardId, id: u64, body: ShardReply) {
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
                while let Ok(Some(msg)) = receivers.recv_from(peer).await {
                    me.on_message(peer, msg);
                }
                tracing::debug!(shard = me.id, peer, "mesh receiver stopped");
            })
            .detach();
        }
    }

    /// Startup only: waits for shard 0's listen address (the first message on
    /// the 0 → self channel).
    pub async fn recv_listen_addr(&self) -> Option<SocketAddr> {
        let receivers = self.receivers.borrow_mut().take()?;
        let got = loop {
            match receivers.recv_from(0).await {
                Ok(Some(ShardMessage::ListenAddr(a))) => break Some(a),
                Ok(Some(other)) => {
                    tracing::warn!(
                        shard = self.id,
                        "unexpected message before startup: {other:?}"
                    )
                }
                Ok(None) | Err(_) => break None,
            }
        };
        *self.receivers.borrow_mut() = Some(receivers);
        got
    }

    /// Startup only (shard 0): tells every peer the resolved listen address.
    pub async fn send_listen_addr(&self, addr: SocketAddr) {
        for peer in 0..self.count {
            if peer != self.id
                && self
                    .senders
                    .send_to(peer, ShardMessage::ListenAddr(addr))
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

    fn on_message(self: &Rc<Self>, peer: ShardId, msg: ShardMessage) {
        match msg {
            ShardMessage::Reply { id, body } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    // The requester may have stopped waiting (a finished long poll).
                    let _ = tx.send(body);
                }
            }
            ShardMessage::Request {
                id,
                body: ShardRequest::Produce { acks, items },
            } => {
                // Appends happen here, synchronously, in arrival order.
                let started = self.produce_start(&items);
                let me = self.clone();
                glommio::spawn_local(async move {
                    let results = Self::produce_finish(started, acks).await;
                    me.reply(peer, id, ShardReply::Produce(results)).await;
                })
                .detach();
            }
            ShardMessage::Request { id, body } => {
                let me = self.clone();
                glommio::spawn_local(async move {
                    let reply = me.clone().execute(body).await;
                    me.reply(peer, id, reply).await;
                })
                .detach();
            }
            ShardMessage::Shutdown => self.request_stop(),
            ShardMessage::ListenAddr(_) => {
                tracing::warn!(shard = self.id, peer, "late listen address ignored")
            }
        }
    }
}
