//! Owner side of the partition service: the one place that calls the
//! `Partition` API on behalf of a client. Each operation is a [`ShardOp`]
//! that runs on the shard owning its partitions (here or sent over the mesh).
//!
//! Invariants: every op looks its partitions up with [`Shard::partition`],
//! which only finds partitions this shard owns; one result per item, in item
//! order; a produce's appends are synchronous in [`ShardOp::start`], so
//! appends happen in the order ops start (connection order); batches are
//! passed to the partition as received (it validates and stamps them: no
//! byte is copied or stamped here).
//!
//! Must not know: any wire protocol; where the request came from.

use std::rc::Rc;
use std::time::Instant;

use crate::partition::{AppendTicket, FetchData, Partition};
use crate::protocol::messages::Acks;
use crate::protocol::records::Records;
use crate::shard::ops::{first_of, LocalBoxFuture};
use crate::shard::{PartResult, Shard, ShardOp};

use super::types::{FetchItem, ListedOffset, OffsetQuery, PartitionOffsets, ProduceItem, Produced};

/// Append on the owner; answers once durable (or at once for acks=none).
pub struct ProduceOp {
    pub acks: Acks,
    pub items: Vec<ProduceItem>,
}

impl ShardOp for ProduceOp {
    type Reply = Vec<PartResult<Produced>>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        // Appends now, synchronously, in item order.
        let started: Vec<PartResult<AppendTicket>> = self
            .items
            .into_iter()
            .map(|it| {
                let p = shard.partition(&it.topic, it.partition)?;
                p.append(it.batch).map_err(|e| e.to_wire())
            })
            .collect();
        let acks = self.acks;
        Box::pin(async move {
            let mut out = Vec::with_capacity(started.len());
            for s in started {
                out.push(match s {
                    Err(e) => Err(e),
                    Ok(ticket) if acks == Acks::None => Ok(produced(ticket.result())),
                    Ok(ticket) if acks == Acks::All => ticket
                        .wait_all()
                        .await
                        .map(produced)
                        .map_err(|e| e.to_wire()),
                    Ok(ticket) => ticket.wait().await.map(produced).map_err(|e| e.to_wire()),
                });
            }
            out
        })
    }
}

fn produced(a: crate::partition::AppendResult) -> Produced {
    Produced {
        base_offset: a.base_offset,
        last_offset: a.last_offset,
        log_start_offset: a.log_start_offset,
    }
}

/// Reads each item from its partition, in order. `read_bytes` bounds what
/// this owner reads in total (a read hint: the response budget itself is
/// applied once, by `service::fetch`); once it is used up the remaining
/// partitions answer with offsets only.
pub struct FetchOp {
    pub items: Vec<FetchItem>,
    pub read_bytes: u32,
}

impl ShardOp for FetchOp {
    type Reply = Vec<PartResult<FetchData>>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let shard = shard.clone();
        Box::pin(async move {
            let mut remaining = self.read_bytes;
            let mut out = Vec::with_capacity(self.items.len());
            for it in &self.items {
                let p = match shard.partition(&it.topic, it.partition) {
                    Ok(p) => p,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                if remaining == 0 {
                    out.push(Ok(offsets_only(&p)));
                    continue;
                }
                let cap = it.max_bytes.min(remaining).max(1);
                let r = p.fetch(it.offset, cap).await.map_err(|e| e.to_wire());
                if let Ok(d) = &r {
                    let read = u32::try_from(d.records.len()).unwrap_or(u32::MAX);
                    remaining = remaining.saturating_sub(read);
                }
                out.push(r);
            }
            out
        })
    }
}

fn offsets_only(p: &Partition) -> FetchData {
    FetchData {
        records: Records::new(),
        high_watermark: p.high_watermark(),
        log_start_offset: p.log_start_offset(),
        log_end_offset: p.log_end_offset(),
    }
}

/// One partition of a wait: wake once the high watermark moves past `offset`.
#[derive(Debug, Clone)]
pub struct WaitItem {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// Resolves when any owned partition among `items` has data past its
/// offset, or at `deadline` (at once if none of them is here).
pub struct WaitOp {
    pub items: Vec<WaitItem>,
    pub deadline: Instant,
}

impl ShardOp for WaitOp {
    type Reply = ();

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, ()> {
        let parts: Vec<(Rc<Partition>, u64)> = self
            .items
            .iter()
            .filter_map(|it| {
                shard
                    .partition(&it.topic, it.partition)
                    .ok()
                    .map(|p| (p, it.offset))
            })
            .collect();
        let deadline = self.deadline;
        Box::pin(async move {
            let futs: Vec<LocalBoxFuture<'_, ()>> = parts
                .iter()
                .map(|(p, off)| Box::pin(p.wait_for_data(*off, deadline)) as LocalBoxFuture<'_, ()>)
                .collect();
            first_of(futs).await
        })
    }
}

pub struct ListOffsetsOp {
    pub items: Vec<OffsetQuery>,
}

impl ShardOp for ListOffsetsOp {
    type Reply = Vec<PartResult<ListedOffset>>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let shard = shard.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(self.items.len());
            for it in &self.items {
                out.push(match shard.partition(&it.topic, it.partition) {
                    Ok(p) => p.list_offset(it.spec).await.map_err(|e| e.to_wire()),
                    Err(e) => Err(e),
                });
            }
            out
        })
    }
}

/// `(topic, partition)` of a partition whose offsets are asked.
pub struct InfoOp {
    pub items: Vec<(String, u32)>,
}

impl ShardOp for InfoOp {
    type Reply = Vec<PartResult<PartitionOffsets>>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let out = self
            .items
            .iter()
            .map(|(topic, partition)| {
                shard
                    .partition(topic, *partition)
                    .map(|p| PartitionOffsets {
                        log_start_offset: p.log_start_offset(),
                        log_end_offset: p.log_end_offset(),
                        high_watermark: p.high_watermark(),
                    })
            })
            .collect();
        Box::pin(async move { out })
    }
}

/// Advance one partition's log start (delete-records); answers the new log start.
pub struct DeleteRecordsOp {
    pub topic: String,
    pub partition: u32,
    pub before: u64,
}

impl ShardOp for DeleteRecordsOp {
    type Reply = PartResult<u64>;

    fn start(self, shard: &Rc<Shard>) -> LocalBoxFuture<'static, Self::Reply> {
        let found = shard.partition(&self.topic, self.partition);
        Box::pin(async move {
            found?
                .delete_records(self.before)
                .await
                .map_err(|e| e.to_wire())
        })
    }
}
