//! The transport under the cross-shard mesh: one shard's end of the links
//! to every peer ([`Senders`] / [`Receivers`]), real or simulated.
//!
//! Owns: the narrow interface the typed mesh ([`super::mesh`]) sends and
//! receives through (`send_to(peer, msg)`, `recv_from(peer)`), its glommio
//! implementation (the production path: `channel_mesh::Full`, one bounded
//! SPSC channel per ordered pair of shards) and [`SimMesh`], an in-process
//! simulation for tests (every shard on one executor; seeded delays that
//! reorder deliveries across peers, held links, failed links).
//!
//! Invariants, both implementations: delivery is FIFO per ordered pair
//! (what `a` sends to `b` arrives in send order, or not at all); a link
//! either delivers or fails as a whole, and a failed link ends
//! `recv_from` (`None`) on both of its ends, which is how the mesh learns
//! to fail the requests still waiting on that peer; a send on a failed link
//! is [`LinkDown`]. No locks or atomics: enum dispatch
//! over `!Send` endpoints owned by one shard's thread.
//!
//! Must not know: what a message contains (generic over `T`), shards'
//! state, operations.

pub mod sim;

use glommio::channels::channel_mesh::{self, Full, MeshBuilder};

use crate::protocol::ShardId;

pub use sim::SimMesh;

/// A send on a link that is closed or failed.
#[derive(Debug, thiserror::Error)]
#[error("the link to shard {0} is down")]
pub struct LinkDown(pub ShardId);

/// One shard's sending ends, to every peer.
pub enum Senders<T: Send + 'static> {
    Glommio(channel_mesh::Senders<T>),
    Sim(sim::End<T>),
}

/// One shard's receiving ends, from every peer.
pub enum Receivers<T: Send + 'static> {
    Glommio(channel_mesh::Receivers<T>),
    Sim(sim::End<T>),
}

/// Joins the glommio mesh as shard `id` (the production path). Mesh peer
/// ids follow executor creation order, which must be shard order: routing
/// relies on the two being equal.
pub async fn join_glommio<T: Send + 'static>(
    mesh: MeshBuilder<T, Full>,
    id: ShardId,
) -> Result<(Senders<T>, Receivers<T>), String> {
    let (tx, rx) = mesh
        .join()
        .await
        .map_err(|_| format!("shard {id}: cannot join the cross-shard mesh"))?;
    if tx.peer_id() != id {
        return Err(format!(
            "shard {id} joined the mesh as peer {}",
            tx.peer_id()
        ));
    }
    Ok((Senders::Glommio(tx), Receivers::Glommio(rx)))
}

impl<T: Send + 'static> Senders<T> {
    /// Sends `msg` to `peer` (waits while the link is full).
    pub async fn send_to(&self, peer: ShardId, msg: T) -> Result<(), LinkDown> {
        match self {
            Senders::Glommio(s) => s.send_to(peer, msg).await.map_err(|_| LinkDown(peer)),
            Senders::Sim(s) => s.send_to(peer, msg).map_err(|_| LinkDown(peer)),
        }
    }
}

impl<T: Send + 'static> Receivers<T> {
    /// The next message from `peer`; `None` once the link is closed or
    /// failed.
    pub async fn recv_from(&self, peer: ShardId) -> Option<T> {
        match self {
            Receivers::Glommio(r) => r.recv_from(peer).await.ok().flatten(),
            Receivers::Sim(r) => r.recv_from(peer).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
