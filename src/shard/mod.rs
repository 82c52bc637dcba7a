//! Shards: one glommio executor per CPU, each owning a set of partitions.
//!
//! Owns: the per-shard state ([`Shard`]: partition table, topic table, mesh
//! endpoints, pending replies), the typed cross-shard mesh ([`mesh`]:
//! [`ShardOp`]), the partition table and its lifecycle ([`ops`]: lookup on
//! the owner, open, close), routing of per-partition items to their owners
//! ([`route`]), topic administration on shard 0 ([`admin`]), producer-id
//! allocation on shard 0 ([`producer_ids`]), one group coordinator per
//! owned `__consumer_offsets` partition ([`ops`]: started when the partition
//! opens, stopped before it closes), the on-disk
//! topic registry ([`registry`]) and process-level startup ([`startup`]:
//! data-dir lock, RLIMIT_MEMLOCK, CPU choice, executor placement).
//!
//! Must not know: what is done to a partition on behalf of a client (that is
//! `service`), any wire protocol, codec or socket.
//!
//! Invariants: a `Shard` lives on exactly one executor thread and is only
//! touched from it (`Rc`, `RefCell`, `Cell`: no locks, no atomics); every
//! partition is owned by exactly one shard (`registry::assign`), which alone
//! opens, reads and writes it; every shard holds the same topic table, and
//! changes to it are made by shard 0 and acknowledged by every shard before
//! the admin request is answered.

pub mod admin;
pub mod link;
pub mod mesh;
pub mod ops;
pub mod producer_ids;
pub mod registry;
pub mod route;
pub mod startup;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::channels::oneshot;
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::io::{Clock, Disk, Io};
use crate::partition::cache::BatchCache;
use crate::partition::Partition;
use crate::protocol::{PartitionId, ShardId, TopicPartition};

pub use mesh::{PartResult, ShardMessage, ShardOp, Started};
pub use registry::TopicMeta;

/// The mesh every shard joins (glommio's, the production path; tests may
/// join a [`link::SimMesh`] instead: [`Shard::boot_on`]).
pub type Mesh = MeshBuilder<ShardMessage, Full>;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard}: cannot join the cross-shard mesh")]
    Mesh { shard: ShardId },
    #[error("{0}")]
    Startup(String),
}

/// One shard's ends of the mesh links, joined ([`link::join_glommio`] or
/// [`link::SimMesh::join`]).
pub struct Links {
    pub senders: link::Senders<ShardMessage>,
    pub receivers: link::Receivers<ShardMessage>,
}

/// One shard's state. Lives on its executor thread only.
pub struct Shard {
    pub id: ShardId,
    /// Number of shards in this broker.
    pub count: usize,
    pub config: Rc<BrokerConfig>,
    /// The disk every partition and the registry do their I/O through,
    /// and the clock they decide by (handed down to each partition).
    disk: Disk,
    clock: Clock,
    /// This shard's ends of the mesh links (real or simulated).
    senders: link::Senders<ShardMessage>,
    receivers: RefCell<Option<link::Receivers<ShardMessage>>>,
    /// Requests sent and not yet answered: id → (peer, requester).
    pending: RefCell<HashMap<u64, (ShardId, oneshot::Sender<mesh::AnyReply>)>>,
    /// Peers whose link has failed or closed (their receiver loop ended).
    links_down: RefCell<Vec<bool>>,
    next_request_id: Cell<u64>,
    /// Recently written batches of every partition this shard owns.
    batch_cache: Rc<BatchCache>,
    /// Partitions this shard owns: topic → partition → open partition.
    partitions: RefCell<HashMap<String, HashMap<PartitionId, Rc<Partition>>>>,
    /// Owned partitions that failed to open at startup, with the reason.
    offline: RefCell<HashMap<TopicPartition, String>>,
    /// Every topic in the broker (the same on every shard).
    topics: RefCell<BTreeMap<String, Rc<TopicMeta>>>,
    /// Shard 0: topic names with a create or delete in progress.
    admin_in_progress: RefCell<HashSet<String>>,
    /// Shard 0: the producer-id allocator.
    producer_ids: producer_ids::ProducerIds,
    /// Group coordinators of the `__consumer_offsets` partitions this
    /// shard owns, by partition.
    coordinators: RefCell<HashMap<PartitionId, Rc<crate::group::Coordinator>>>,
    listen_addr: Cell<Option<SocketAddr>>,
    stop: Semaphore,
    stopping: Cell<bool>,
}

impl Shard {
    /// Joins the mesh and opens the partitions this shard owns (recovery).
    /// The receiver loops are not started yet: see [`Shard::start_receivers`].
    pub async fn boot(
        id: ShardId,
        count: usize,
        config: BrokerConfig,
        mesh: Mesh,
        topics: Vec<TopicMeta>,
    ) -> Result<Rc<Shard>, ShardError> {
        let (senders, receivers) = link::join_glommio(mesh, id)
            .await
            .map_err(ShardError::Startup)?;
        let links = Links { senders, receivers };
        Self::boot_on(Disk::Real, Clock::Real, id, count, config, links, topics).await
    }

    /// [`Shard::boot`] on `disk` with `clock`, over mesh ends already
    /// joined (a simulated disk, clock or mesh in tests).
    pub async fn boot_on(
        disk: Disk,
        clock: Clock,
        id: ShardId,
        count: usize,
        config: BrokerConfig,
        links: Links,
        topics: Vec<TopicMeta>,
    ) -> Result<Rc<Shard>, ShardError> {
        let Links { senders, receivers } = links;
        let shard = Rc::new(Shard {
            batch_cache: BatchCache::new(
                usize::try_from(config.shard.batch_cache_bytes).unwrap_or(usize::MAX),
            ),
            id,
            count,
            config: Rc::new(config),
            disk,
            clock,
            senders,
            receivers: RefCell::new(Some(receivers)),
            pending: RefCell::new(HashMap::new()),
            links_down: RefCell::new(vec![false; count]),
            next_request_id: Cell::new(1),
            partitions: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashMap::new()),
            topics: RefCell::new(
                topics
                    .iter()
                    .map(|m| (m.name.clone(), Rc::new(m.clone())))
                    .collect(),
            ),
            admin_in_progress: RefCell::new(HashSet::new()),
            producer_ids: producer_ids::ProducerIds::default(),
            coordinators: RefCell::new(HashMap::new()),
            listen_addr: Cell::new(None),
            stop: Semaphore::new(0),
            stopping: Cell::new(false),
        });
        let started = std::time::Instant::now();
        shard.open_owned(&topics).await;
        let open: usize = shard.partitions.borrow().values().map(|m| m.len()).sum();
        let offline = shard.offline.borrow().len();
        // One line per shard (partitions log their own only when recovery
        // found something: storage::scan::RecoveryStats::log).
        tracing::info!(
            shard = id,
            partitions = open,
            offline,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened partitions"
        );
        Ok(shard)
    }

    /// The disk this shard's storage and registry work go through.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The clock this shard decides by (deadlines, segment age, retention).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The I/O handle for one partition: the shard's disk and clock, and a
    /// fault injector of the partition's own.
    pub fn partition_io(&self) -> Io {
        Io::new(self.disk.clone(), self.clock.clone())
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr.get()
    }

    pub fn set_listen_addr(&self, addr: SocketAddr) {
        self.listen_addr.set(Some(addr));
    }

    /// Asks this shard to stop (idempotent).
    pub fn request_stop(&self) {
        if !self.stopping.replace(true) {
            self.stop.signal(1);
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves once [`Shard::request_stop`] has been called.
    pub async fn stopped(&self) {
        let _ = self.stop.acquire(1).await;
        // Let any other waiter through too.
        self.stop.signal(1);
    }

    /// Shard 0: waits for SIGINT/SIGTERM, then stops every shard.
    /// The signals must already be blocked on every thread ([`startup::block_signals`]).
    pub fn watch_signals(self: &Rc<Self>) {
        let me = self.clone();
        glommio::spawn_local(async move {
            let signals = match glommio::signal::Signals::new(&[libc::SIGINT, libc::SIGTERM]) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGINT/SIGTERM: {e}");
                    return;
                }
            };
            let stop = async {
                me.stopped().await;
                None
            };
            let got = futures_lite::future::or(async { signals.recv().await.ok() }, stop).await;
            if let Some(sig) = got {
                tracing::info!("signal {sig} received: shutting down");
                me.broadcast_shutdown().await;
                me.request_stop();
            }
        })
        .detach();
    }
}
