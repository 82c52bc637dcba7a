//! [`SimMesh`]: the cross-shard links simulated in one process, for tests.
//!
//! Owns: one local channel per ordered pair of shards, all on one executor
//! thread (every simulated shard runs there), and the faults a test drives:
//! seeded delays (each delivery waits 0..=`max_delay_turns` executor turns,
//! so replies from different peers arrive in a different order than they
//! were sent), held links (deliveries from `a` to `b` wait until released)
//! and failed links (both directions close; what was in flight is lost).
//!
//! Invariants: delivery stays FIFO per ordered pair, whatever the delays
//! (one receiver per pair waits out each message's delay before taking the
//! next); a failed link never delivers again and ends `recv_from` on both
//! of its ends; the same seed and the same program give the same delays.
//!
//! Must not know: what a message contains.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::io::sim::Rng;
use crate::protocol::ShardId;

use super::{Receivers, Senders};

/// The simulated mesh of `peers` shards; clone it to keep a handle for
/// driving faults while the shards hold their ends.
pub struct SimMesh<T> {
    net: Rc<Net<T>>,
}

impl<T> Clone for SimMesh<T> {
    fn clone(&self) -> Self {
        SimMesh {
            net: self.net.clone(),
        }
    }
}

/// One shard's end of a [`SimMesh`] (sending and receiving).
pub struct End<T> {
    net: Rc<Net<T>>,
    me: ShardId,
}

struct Net<T> {
    peers: usize,
    /// `links[from * peers + to]`.
    links: Vec<RefCell<Link<T>>>,
    rng: RefCell<Rng>,
    max_delay_turns: Cell<u64>,
}

struct Link<T> {
    /// `None` once the link failed.
    tx: Option<LocalSender<T>>,
    rx: Rc<LocalReceiver<T>>,
    /// Messages sent while the link is held, in send order.
    held: Option<VecDeque<T>>,
    failed: bool,
}

impl<T: Send + 'static> SimMesh<T> {
    /// A mesh of `peers` shards, no delays, every link up; `seed` drives
    /// the delays set by [`SimMesh::set_max_delay_turns`].
    pub fn new(peers: usize, seed: u64) -> SimMesh<T> {
        let links = (0..peers * peers)
            .map(|_| {
                let (tx, rx) = local_channel::new_unbounded();
                RefCell::new(Link {
                    tx: Some(tx),
                    rx: Rc::new(rx),
                    held: None,
                    failed: false,
                })
            })
            .collect();
        SimMesh {
            net: Rc::new(Net {
                peers,
                links,
                rng: RefCell::new(Rng(seed)),
                max_delay_turns: Cell::new(0),
            }),
        }
    }

    /// Each delivery from now on waits a seeded 0..=`turns` executor turns.
    pub fn set_max_delay_turns(&self, turns: u64) {
        self.net.max_delay_turns.set(turns);
    }

    /// Shard `id`'s ends of the mesh.
    pub fn join(&self, id: ShardId) -> (Senders<T>, Receivers<T>) {
        assert!(id < self.net.peers, "shard {id} of {}", self.net.peers);
        let end = || End {
            net: self.net.clone(),
            me: id,
        };
        (Senders::Sim(end()), Receivers::Sim(end()))
    }

    /// Deliveries from `from` to `to` wait (in order) until [`SimMesh::release`].
    pub fn hold(&self, from: ShardId, to: ShardId) {
        self.net
            .link(from, to)
            .borrow_mut()
            .held
            .get_or_insert_with(VecDeque::new);
    }

    /// Delivers, in order, what a [`SimMesh::hold`] kept back, and stops holding.
    pub fn release(&self, from: ShardId, to: ShardId) {
        let mut link = self.net.link(from, to).borrow_mut();
        let held = link.held.take().unwrap_or_default();
        for msg in held {
            link.push(msg);
        }
    }

    /// Fails the link between `a` and `b`, both directions: messages in
    /// flight are lost, sends fail, and both ends' `recv_from` end.
    pub fn fail_link(&self, a: ShardId, b: ShardId) {
        for (from, to) in [(a, b), (b, a)] {
            let mut link = self.net.link(from, to).borrow_mut();
            link.failed = true;
            link.held = None;
            // Dropping the only sender ends the receiver once it is empty;
            // what it still holds is dropped on arrival (`failed`).
            link.tx = None;
        }
    }
}

impl<T> Net<T> {
    fn link(&self, from: ShardId, to: ShardId) -> &RefCell<Link<T>> {
        assert!(from < self.peers && to < self.peers && from != to);
        &self.links[from * self.peers + to]
    }
}

impl<T> Link<T> {
    fn push(&mut self, msg: T) {
        let tx = self.tx.as_ref();
        // An unbounded local channel accepts while its receiver lives, and
        // the receiver lives as long as the link.
        let sent = tx.map(|tx| tx.try_send(msg).is_ok());
        debug_assert!(sent != Some(false), "sim link refused a message");
    }
}

impl<T> End<T> {
    pub(super) fn send_to(&self, peer: ShardId, msg: T) -> Result<(), T> {
        let mut link = self.net.link(self.me, peer).borrow_mut();
        if link.failed {
            return Err(msg);
        }
        match link.held.as_mut() {
            Some(held) => held.push_back(msg),
            None => link.push(msg),
        }
        Ok(())
    }

    pub(super) async fn recv_from(&self, peer: ShardId) -> Option<T> {
        let link = self.net.link(peer, self.me);
        let rx = link.borrow().rx.clone();
        let msg = rx.recv().await?;
        let turns = {
            let max = self.net.max_delay_turns.get();
            if max == 0 {
                0
            } else {
                self.net.rng.borrow_mut().below(max + 1)
            }
        };
        for _ in 0..turns {
            futures_lite::future::yield_now().await;
        }
        if link.borrow().failed {
            return None;
        }
        Some(msg)
    }
}
