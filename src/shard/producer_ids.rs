//! Producer-id allocation for idempotent producers, owned by shard 0
//! (docs/decisions/0011-producer-ids.md).
//!
//! Owns: the producer-id block file `<data_dir>/producer-id-block` (the
//! first id not yet reserved, decimal + newline, written with
//! `storage::checkpoint::write_atomic` through the shard's disk), the block
//! in use, the latest epoch handed out per id since this broker started,
//! and the [`InitProducerIdOp`] every shard sends here.
//!
//! Ids are handed out from blocks of [`PRODUCER_ID_BLOCK_SIZE`]: a block is
//! reserved durably (the file moved past it and fsynced) before its first
//! id is handed out, so after a restart (or a crash) allocation starts
//! after the last reserved block and no id is ever handed out twice (ids
//! left in the old block are skipped). A cluster replaces [`ProducerIds::
//! reserve_block`]'s file with a request to the controller for the next
//! block; nothing else changes.
//!
//! Epochs: a new id starts at epoch 0; a bump (`current` given) answers the
//! same id with epoch + 1. A bump whose epoch is not the latest this broker
//! handed out for the id is refused with InvalidProducerEpoch (two
//! instances bumping from the same epoch: the second is the zombie); ids
//! this broker never reserved get UnknownProducerId. The latest epochs are
//! kept in memory only: after a restart any bump of a reserved id is
//! accepted (partitions still fence epochs older than the ones they saw).
//! An epoch at `i16::MAX` cannot grow: the bump answers a new id at epoch 0
//! (Kafka's behaviour on epoch exhaustion).
//!
//! Invariants: every id handed out is below the durable reserved end;
//! `next <= reserved_end`; reservations happen one at a time.
//!
//! Must not know: partitions, sequences, any wire protocol.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::sync::Semaphore;

use super::mesh::ShardOp;
use super::ops::LocalBoxFuture;
use super::Shard;
use crate::protocol::messages::ProducerIdentity;
use crate::protocol::{ErrorCode, ShardId, WireError};
use crate::storage::checkpoint;

/// The shard that allocates producer ids.
pub const PRODUCER_ID_OWNER: ShardId = 0;
/// Ids reserved per durable write of the block file.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// The block file in the data directory.
pub const PRODUCER_ID_BLOCK_FILE: &str = "producer-id-block";
/// Latest epochs remembered before idle ids are pruned (per broker).
const EPOCHS_PRUNE_AT: usize = 100_000;

/// To shard 0: a new producer id (`current: None`) or `current`'s epoch bumped.
#[derive(Debug)]
pub struct InitProducerIdOp {
    pub current: Option<ProducerIdentity>,
}

impl ShardOp for InitProducerIdOp {
    type Reply = Result<ProducerIdentity, WireError>;
    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let s = shard.clone();
        Box::pin(async move { s.init_producer_id(self.current).await })
    }
}

/// Shard 0's allocator state.
pub struct ProducerIds {
    /// Next id to hand out (`None` until the block file was read).
    next: Cell<Option<i64>>,
    /// End (exclusive) of the durably reserved ids.
    reserved_end: Cell<i64>,
    /// Latest epoch handed out per id, and when (wall ms).
    epochs: RefCell<HashMap<i64, (i16, i64)>>,
    prune_at: Cell<usize>,
    /// One allocation at a time (a reservation awaits the disk).
    gate: Semaphore,
}

impl Default for ProducerIds {
    fn default() -> Self {
        ProducerIds {
            next: Cell::new(None),
            reserved_end: Cell::new(0),
            epochs: RefCell::new(HashMap::new()),
            prune_at: Cell::new(EPOCHS_PRUNE_AT),
            gate: Semaphore::new(1),
        }
    }
}

fn storage_error(e: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorCode::StorageError,
        format!("producer-id block file: {e}"),
    )
}

impl Shard {
    /// InitProducerId on the owner shard (see the module header).
    pub async fn init_producer_id(
        &self,
        current: Option<ProducerIdentity>,
    ) -> Result<ProducerIdentity, WireError> {
        assert_eq!(self.id, PRODUCER_ID_OWNER, "producer ids come from shard 0");
        let ids = &self.producer_ids;
        let Ok(_permit) = ids.gate.acquire_permit(1).await else {
            return Err(WireError::new(ErrorCode::StorageError, "shutting down"));
        };
        self.load_producer_ids().await?;
        let now = self.clock.wall_ms();
        let bumped = match current {
            None => None,
            Some(cur) => self.bump(cur)?,
        };
        let identity = match bumped {
            Some(identity) => identity,
            None => ProducerIdentity {
                producer_id: self.next_producer_id().await?,
                producer_epoch: 0,
            },
        };
        ids.epochs
            .borrow_mut()
            .insert(identity.producer_id, (identity.producer_epoch, now));
        self.prune_epochs(now);
        Ok(identity)
    }

    /// `cur` with its epoch bumped, or `None` when a new id is due (epoch
    /// exhausted).
    fn bump(&self, cur: ProducerIdentity) -> Result<Option<ProducerIdentity>, WireError> {
        let ids = &self.producer_ids;
        if cur.producer_id < 0 || cur.producer_epoch < 0 {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "init_producer_id: current producer {} epoch {} (both must be >= 0)",
                    cur.producer_id, cur.producer_epoch
                ),
            ));
        }
        if cur.producer_id >= ids.reserved_end.get() {
            return Err(WireError::new(
                ErrorCode::UnknownProducerId,
                format!(
                    "producer id {} was never handed out by this broker",
                    cur.producer_id
                ),
            ));
        }
        if let Some((latest, _)) = ids.epochs.borrow().get(&cur.producer_id) {
            if *latest != cur.producer_epoch {
                return Err(WireError::new(
                    ErrorCode::InvalidProducerEpoch,
                    format!(
                        "producer {} epoch {} is not the latest ({latest}): fenced",
                        cur.producer_id, cur.producer_epoch
                    ),
                ));
            }
        }
        if cur.producer_epoch == i16::MAX {
            return Ok(None);
        }
        Ok(Some(ProducerIdentity {
            producer_id: cur.producer_id,
            producer_epoch: cur.producer_epoch + 1,
        }))
    }

    /// Reads the block file once: allocation resumes after the last
    /// reserved block.
    async fn load_producer_ids(&self) -> Result<(), WireError> {
        let ids = &self.producer_ids;
        if ids.next.get().is_some() {
            return Ok(());
        }
        let dir = &self.config.data_dir;
        let read = checkpoint::read(&self.disk, dir, PRODUCER_ID_BLOCK_FILE)
            .await
            .map_err(storage_error)?;
        let end = match read {
            None => 0,
            Some(b) => match checkpoint::parse_offset(&b).and_then(|e| i64::try_from(e).ok()) {
                Some(end) => end,
                None => {
                    // Which ids were handed out is unknown: refuse rather
                    // than risk handing one out twice.
                    return Err(storage_error(format!(
                        "{} is unreadable; refusing to hand out producer ids (docs/idempotence.md)",
                        dir.join(PRODUCER_ID_BLOCK_FILE).display()
                    )));
                }
            },
        };
        ids.reserved_end.set(end);
        ids.next.set(Some(end));
        Ok(())
    }

    /// The next id, reserving a new block first when the current one is used up.
    async fn next_producer_id(&self) -> Result<i64, WireError> {
        let ids = &self.producer_ids;
        let Some(next) = ids.next.get() else {
            unreachable!("producer ids are loaded before allocation");
        };
        if next >= ids.reserved_end.get() {
            self.reserve_block(next).await?;
        }
        assert!(
            next < ids.reserved_end.get(),
            "an id is handed out only once reserved"
        );
        ids.next.set(Some(next + 1));
        Ok(next)
    }

    /// Reserves `[start, start + PRODUCER_ID_BLOCK_SIZE)` durably (a cluster:
    /// asks the controller for a block instead).
    async fn reserve_block(&self, start: i64) -> Result<(), WireError> {
        let end = start
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or_else(|| storage_error("producer ids exhausted"))?;
        checkpoint::write_atomic(
            &self.disk,
            &self.config.data_dir,
            PRODUCER_ID_BLOCK_FILE,
            &checkpoint::encode_offset(end as u64),
        )
        .await
        .map_err(storage_error)?;
        self.producer_ids.reserved_end.set(end);
        tracing::debug!(start, end, "reserved a producer-id block");
        Ok(())
    }

    /// Forgets the latest epochs of ids idle past `producer_id_expiration_ms`
    /// once many are remembered (amortized: at most every doubling).
    fn prune_epochs(&self, now: i64) {
        let ids = &self.producer_ids;
        let mut epochs = ids.epochs.borrow_mut();
        if epochs.len() < ids.prune_at.get() {
            return;
        }
        let idle = self
            .config
            .limits
            .producer_id_expiration_ms
            .min(i64::MAX as u64) as i64;
        epochs.retain(|_, (_, seen)| now.saturating_sub(*seen) < idle);
        ids.prune_at.set((epochs.len() * 2).max(EPOCHS_PRUNE_AT));
    }
}
