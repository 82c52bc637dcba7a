//! Requester side of per-partition operations: group items by owning shard,
//! start one op per owner (here, or over the mesh), and put the answers back
//! in input order.
//!
//! Owns: [`Shard::group_by_owner`], [`Shard::scatter_start`] (the ordered
//! first phase: every local op's synchronous part has run and every remote op
//! has been handed to the mesh when it returns) and [`Scattered::finish`].
//!
//! Invariants: results are returned in the order and number of the input
//! items (asserted); an item whose topic/partition this shard does not know
//! gets UnknownTopicOrPartition without touching any other shard; an owner
//! answers exactly one result per item it was sent (asserted).
//!
//! Must not know: what the op does (it is any [`ShardOp`] answering one
//! result per item).

use std::rc::Rc;

use crate::protocol::WireError;

use super::mesh::{PartResult, ShardOp, Started};
use super::ops::{join_all, LocalBoxFuture};
use super::Shard;

/// Items grouped by owner: per shard, (index in the input, item).
pub type Groups<I> = Vec<Vec<(usize, I)>>;

/// One owner's op: the input indexes of its items, and its pending answers.
type OwnerOp<R> = (Vec<usize>, Started<Vec<PartResult<R>>>);

/// Ops started on their owners whose per-item answers are pending.
pub struct Scattered<R> {
    len: usize,
    immediate: Vec<(usize, WireError)>,
    started: Vec<OwnerOp<R>>,
}

impl<R: Send + Sync + 'static> Scattered<R> {
    /// Waits for every owner; one result per input item, in input order.
    pub async fn finish(self) -> Vec<PartResult<R>> {
        let mut out: Vec<Option<PartResult<R>>> = (0..self.len).map(|_| None).collect();
        for (i, e) in self.immediate {
            out[i] = Some(Err(e));
        }
        // Wait on every owner at once (a local op runs while peers work).
        let waits = self
            .started
            .into_iter()
            .map(|(idx, st)| {
                Box::pin(async move { (idx, st.wait().await) })
                    as LocalBoxFuture<'static, (Vec<usize>, Result<Vec<PartResult<R>>, WireError>)>
            })
            .collect();
        for (idx, answer) in join_all(waits).await {
            match answer {
                Ok(results) => {
                    assert_eq!(
                        results.len(),
                        idx.len(),
                        "an owner answered {} results for {} items",
                        results.len(),
                        idx.len()
                    );
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => r,
                None => panic!("item {i} of a scatter got no result"),
            })
            .collect()
    }
}

impl Shard {
    /// Splits items into per-owner groups; unknown ones become errors.
    pub fn group_by_owner<I>(
        &self,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, u32),
    ) -> (Groups<I>, Vec<(usize, WireError)>) {
        let mut groups: Groups<I> = (0..self.count).map(|_| Vec::new()).collect();
        let mut errors = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            let (topic, p) = key(&it);
            match self.owner_of(topic, p) {
                Ok(s) => {
                    // TopicMeta::owner only names shards of this broker.
                    assert!(s < self.count, "owner shard {s} of {}", self.count);
                    groups[s].push((i, it))
                }
                Err(e) => errors.push((i, e)),
            }
        }
        (groups, errors)
    }

    /// Phase one: starts `make(items of one owner)` on each owner, in shard
    /// order (a local op's synchronous part runs now; a remote op is handed to
    /// the mesh, awaiting only the send). Phase two is [`Scattered::finish`].
    pub async fn scatter_start<I, O, R>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, u32),
        make: impl Fn(Vec<I>) -> O,
    ) -> Scattered<R>
    where
        O: ShardOp<Reply = Vec<PartResult<R>>>,
        R: Send + Sync + 'static,
    {
        let len = items.len();
        let (groups, immediate) = self.group_by_owner(items, key);
        let mut started = Vec::new();
        for (s, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (idx, items): (Vec<usize>, Vec<I>) = group.into_iter().unzip();
            started.push((idx, self.start_on(s, make(items)).await));
        }
        Scattered {
            len,
            immediate,
            started,
        }
    }

    /// [`Shard::scatter_start`] then [`Scattered::finish`].
    pub async fn scatter<I, O, R>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, u32),
        make: impl Fn(Vec<I>) -> O,
    ) -> Vec<PartResult<R>>
    where
        O: ShardOp<Reply = Vec<PartResult<R>>>,
        R: Send + Sync + 'static,
    {
        self.scatter_start(items, key, make).await.finish().await
    }
}
