//! Requester side of partition operations: group per-partition items by
//! owning shard, run them locally or forward them, and put the answers back
//! in request order.
//!
//! Owns: [`Shard::produce_dispatch`] (the ordered, two-phase produce),
//! [`Shard::fetch_many`], [`Shard::wait_any`], [`Shard::list_offsets_many`],
//! [`Shard::partition_info_many`].
//!
//! Invariants: results are returned in the order of the input items; an item
//! whose topic/partition this shard does not know gets UnknownTopicOrPartition
//! without touching any other shard; `produce_dispatch` has appended every
//! local item and handed every remote item to the mesh before it returns.

use std::rc::Rc;
use std::time::Instant;

use crate::partition::{AppendResult, AppendTicket, FetchData};
use crate::protocol::messages::Acks;
use crate::protocol::{ShardId, WireError};

use super::mesh::{
    internal, FetchItem, InfoItem, OffsetItem, PartResult, PartitionOffsets, PendingReply,
    ProduceItem, ShardReply, ShardRequest, WaitItem,
};
use super::ops::{first_of, LocalBoxFuture};
use super::Shard;

/// Items grouped by owner: per shard, (index in the request, item).
type Groups<I> = Vec<Vec<(usize, I)>>;

/// A produce whose appends are done (or forwarded) and whose outcome is pending.
pub struct ProduceInFlight {
    len: usize,
    acks: Acks,
    immediate: Vec<(usize, WireError)>,
    local: Vec<(usize, PartResult<AppendTicket>)>,
    remote: Vec<(Vec<usize>, PendingReply)>,
}

impl ProduceInFlight {
    /// Waits for every partition's outcome; results in request order.
    pub async fn finish(self) -> Vec<PartResult<AppendResult>> {
        let mut out: Vec<PartResult<AppendResult>> =
            (0..self.len).map(|_| Err(internal("no result"))).collect();
        for (i, e) in self.immediate {
            out[i] = Err(e);
        }
        let (idx, started): (Vec<usize>, Vec<_>) = self.local.into_iter().unzip();
        for (i, r) in idx
            .into_iter()
            .zip(Shard::produce_finish(started, self.acks).await)
        {
            out[i] = r;
        }
        for (idx, pending) in self.remote {
            match pending.wait().await {
                Ok(ShardReply::Produce(results)) if results.len() == idx.len() => {
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = r;
                    }
                }
                Ok(ShardReply::Done(Err(e))) | Err(e) => {
                    for i in idx {
                        out[i] = Err(e.clone());
                    }
                }
                Ok(other) => {
                    let e = internal(format!("unexpected produce reply {other:?}"));
                    for i in idx {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }
}

impl Shard {
    /// Splits items into per-owner groups; unknown ones become errors.
    fn group<I>(
        &self,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, u32),
    ) -> (Groups<I>, Vec<(usize, WireError)>) {
        let mut groups: Groups<I> = (0..self.count).map(|_| Vec::new()).collect();
        let mut errors = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            let (topic, p) = key(&it);
            match self.owner_of(topic, p) {
                Ok(s) if s < self.count => groups[s].push((i, it)),
                Ok(s) => errors.push((i, internal(format!("owner shard {s} out of range")))),
                Err(e) => errors.push((i, e)),
            }
        }
        (groups, errors)
    }

    /// Phase one of a produce: appends local items now (synchronously, in
    /// order) and sends one message per remote owner (awaiting only the
    /// send). Phase two is [`ProduceInFlight::finish`].
    pub async fn produce_dispatch(
        self: &Rc<Self>,
        acks: Acks,
        items: Vec<ProduceItem>,
    ) -> ProduceInFlight {
        let len = items.len();
        let (groups, immediate) = self.group(items, |it| (it.topic.as_str(), it.partition));
        let mut local = Vec::new();
        let mut remote_groups = Vec::new();
        for (s, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (idx, items): (Vec<usize>, Vec<ProduceItem>) = group.into_iter().unzip();
            if s == self.id {
                local = idx.into_iter().zip(self.produce_start(&items)).collect();
            } else {
                remote_groups.push((s, idx, items));
            }
        }
        let mut remote = Vec::with_capacity(remote_groups.len());
        for (s, idx, items) in remote_groups {
            let pending = self
                .send_request(s, ShardRequest::Produce { acks, items })
                .await;
            remote.push((idx, pending));
        }
        ProduceInFlight {
            len,
            acks,
            immediate,
            local,
            remote,
        }
    }

    /// Runs one request per owner group concurrently and scatters the
    /// per-item answers back into request order.
    async fn scatter<I: 'static, R: 'static>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, u32),
        make: impl Fn(Vec<I>) -> ShardRequest,
        extract: fn(ShardReply) -> Result<Vec<PartResult<R>>, WireError>,
    ) -> Vec<PartResult<R>> {
        let len = items.len();
        let (groups, immediate) = self.group(items, key);
        let mut out: Vec<PartResult<R>> = (0..len).map(|_| Err(internal("no result"))).collect();
        for (i, e) in immediate {
            out[i] = Err(e);
        }
        let mut tasks = Vec::new();
        for (s, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (idx, items): (Vec<usize>, Vec<I>) = group.into_iter().unzip();
            let body = make(items);
            let me = self.clone();
            let task = glommio::spawn_local(async move { me.call(s as ShardId, body).await });
            tasks.push((idx, task));
        }
        for (idx, task) in tasks {
            let reply = task.await;
            match extract(reply) {
                Ok(results) if results.len() == idx.len() => {
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = r;
                    }
                }
                Ok(_) => {
                    for i in idx {
                        out[i] = Err(internal("reply has the wrong number of results"));
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    /// Fetches every item from its owner. Each owner caps its part at
    /// `budget_bytes`; the caller applies the overall cap.
    pub async fn fetch_many(
        self: &Rc<Self>,
        items: Vec<FetchItem>,
        budget_bytes: u32,
    ) -> Vec<PartResult<FetchData>> {
        self.scatter(
            items,
            |it| (it.topic.as_str(), it.partition),
            |items| ShardRequest::Fetch {
                items,
                budget_bytes,
            },
            |r| match r {
                ShardReply::Fetch(v) => Ok(v),
                ShardReply::Done(Err(e)) => Err(e),
                other => Err(internal(format!("unexpected fetch reply {other:?}"))),
            },
        )
        .await
    }

    pub async fn list_offsets_many(
        self: &Rc<Self>,
        items: Vec<OffsetItem>,
    ) -> Vec<PartResult<(u64, i64)>> {
        self.scatter(
            items,
            |it| (it.topic.as_str(), it.partition),
            |items| ShardRequest::ListOffsets { items },
            |r| match r {
                ShardReply::ListOffsets(v) => Ok(v),
                ShardReply::Done(Err(e)) => Err(e),
                other => Err(internal(format!("unexpected list offsets reply {other:?}"))),
            },
        )
        .await
    }

    pub async fn partition_info_many(
        self: &Rc<Self>,
        items: Vec<InfoItem>,
    ) -> Vec<PartResult<PartitionOffsets>> {
        self.scatter(
            items,
            |it| (it.topic.as_str(), it.partition),
            |items| ShardRequest::PartitionInfo { items },
            |r| match r {
                ShardReply::PartitionInfo(v) => Ok(v),
                ShardReply::Done(Err(e)) => Err(e),
                other => Err(internal(format!("unexpected info reply {other:?}"))),
            },
        )
        .await
    }

    /// Resolves as soon as any item's partition has data past its offset
    /// (wherever it lives), or at `deadline`. Remote owners get one
    /// WaitForData each; a wait that is no longer needed simply answers later
    /// and its reply is dropped.
    pub async fn wait_any(self: &Rc<Self>, items: Vec<WaitItem>, deadline: Instant) {
        let (groups, _unknown) = self.group(items, |it| (it.topic.as_str(), it.partition));
        let mut futs: Vec<LocalBoxFuture<'static, ()>> = Vec::new();
        for (s, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let items: Vec<WaitItem> = group.into_iter().map(|(_, it)| it).collect();
            let me = self.clone();
            if s == self.id {
                futs.push(Box::pin(
                    async move { me.wait_local(&items, deadline).await },
                ));
            } else {
                futs.push(Box::pin(async move {
                    let pending = me
                        .send_request(s, ShardRequest::WaitForData { items, deadline })
                        .await;
                    let _ = pending.wait().await;
                }));
            }
        }
        if futs.is_empty() {
            return;
        }
        // Never past the deadline, even if a peer is slow to answer.
        let me = self.clone();
        futs.push(Box::pin(async move {
            let now = Instant::now();
            if deadline > now {
                crate::timer::sleep(deadline - now).await;
            }
            drop(me);
        }));
        first_of(futs).await
    }
}
