//! The consumer: manual partition assignment or a consumer-group
//! subscription (`subscribe`: partitions come from the group, positions from
//! committed offsets; `client::group`), seeks, long-polling fetches, commits.
//!
//! Invariants:
//! - Records are returned in offset order per partition, never below the
//!   partition's position; after a poll the position is one past the last
//!   offset of the last whole batch seen.
//! - Every batch's CRC is verified before its records are used: a corrupt
//!   batch is an error, never data.
//! - A poll either succeeds as a whole (records returned, positions advanced)
//!   or fails and leaves every position unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::admin::{describe, list_offsets, unexpected};
use super::connection::ReconnectingConnection;
use super::group::{GroupConfig, Joined, Membership, OffsetReset, RebalanceEvent};
use super::{ClientConfig, ClientError};
use crate::protocol::batch::{batches, records_body, verify_crc, RecordIter};
use crate::protocol::compression::DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES;
use crate::protocol::messages::{
    FetchPartition, FetchRequest, FetchTopic, OffsetSpec, RequestBody, ResponseBody,
};
use crate::protocol::{ErrorCode, TopicPartition, WireError};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    Offset(u64),
    /// The first record whose timestamp is >= this many ms since the epoch.
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    /// Longest the broker holds a fetch waiting for data, in ms.
    pub max_wait_ms: u32,
    /// The broker answers as soon as this many bytes are available.
    pub min_bytes: u32,
    /// Most bytes fetched per partition per poll.
    pub max_partition_bytes: u32,
    /// Most bytes one compressed batch's records may decompress to; a batch
    /// past it is an error (CorruptBatch), never an unbounded allocation.
    pub max_decompressed_batch_bytes: usize,
    /// The consumer group `subscribe` joins (none: assign partitions by hand).
    pub group: Option<GroupConfig>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            max_wait_ms: 500,
            min_bytes: 1,
            max_partition_bytes: 1024 * 1024,
            max_decompressed_batch_bytes: DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES,
            group: None,
        }
    }
}

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Reads assigned partitions over one connection.
pub struct Consumer {
    config: ConsumerConfig,
    conn: ReconnectingConnection,
    positions: BTreeMap<TopicPartition, u64>,
    /// Group membership once `subscribe` was called.
    group: Option<Membership>,
    /// Rebalance events not yet taken by the application.
    events: Vec<RebalanceEvent>,
    last_auto_commit: Instant,
}

/// Largest total fetch size requested, in bytes (the broker caps it too).
const MAX_FETCH_BYTES: u32 = 64 * 1024 * 1024;

impl Consumer {
    pub async fn connect(config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let conn = ReconnectingConnection::connect(&config.client).await?;
        Ok(Consumer {
            config,
            conn,
            positions: BTreeMap::new(),
            group: None,
            events: Vec::new(),
            last_auto_commit: Instant::now(),
        })
    }

    /// Joins the configured consumer group (`ConsumerConfig::group`) and
    /// consumes what it assigns: partitions and their starting positions
    /// (committed offsets, or `auto_offset_reset`) come with `poll`.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        let Some(group) = self.config.group.clone() else {
            return Err(ClientError::Config(
                "subscribe needs a group (ConsumerConfig::group)".into(),
            ));
        };
        if self.group.is_some() {
            return Err(ClientError::Config("already subscribed".into()));
        }
        if !self.positions.is_empty() {
            return Err(ClientError::Config(
                "partitions are assigned by hand: subscribe or assign, not both".into(),
            ));
        }
        let topics = topics.iter().map(|t| t.to_string()).collect();
        let m = Membership::new(&self.config.client, group, topics).await?;
        self.group = Some(m);
        Ok(())
    }

    /// What rebalances did since the last call (assigned, revoked, lost).
    pub fn take_rebalance_events(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.events)
    }

    /// This member's id and generation in its group (`None` before subscribe).
    pub fn group_generation(&self) -> Option<(String, i32)> {
        self.group.as_ref().map(|m| (m.member_id(), m.generation()))
    }

    /// Commits the current positions of every owned partition (the next
    /// offset each poll would read) and waits for the coordinator.
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        let offsets: Vec<(TopicPartition, u64)> = self
            .positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits specific offsets (the next offset to read, per partition).
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        let Some(m) = &self.group else {
            return Err(ClientError::Config(
                "commit needs subscribe (a group)".into(),
            ));
        };
        m.commit(offsets).await
    }

    /// Starts a commit of the current positions and returns without waiting
    /// for it; the returned future gives its outcome.
    pub fn commit_async(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), ClientError>> + 'static {
        let offsets: Vec<(TopicPartition, u64)> = self
            .positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        let task = self.group.as_ref().map(|m| m.commit_task(offsets));
        async move {
            match task {
                Some(t) => t.await,
                None => Err(ClientError::Config(
                    "commit needs subscribe (a group)".into(),
                )),
            }
        }
    }

    /// The group's committed offset of each partition (`None`: none yet).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<u64>>, ClientError> {
        let Some(m) = &self.group else {
            return Err(ClientError::Config(
                "committed needs subscribe (a group)".into(),
            ));
        };
        m.committed(partitions).await
    }

    /// Leaves the group cleanly: commits the positions (auto-commit on) and
    /// sends LeaveGroup, so the group rebalances at once instead of after
    /// the session timeout. A static member does not leave (its partitions
    /// wait for it for the session timeout).
    pub async fn close(mut self) -> Result<(), ClientError> {
        let Some(m) = self.group.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        if m.config.enable_auto_commit && m.generation() >= 0 {
            let offsets: Vec<(TopicPartition, u64)> = self
                .positions
                .iter()
                .map(|(tp, o)| (tp.clone(), *o))
                .collect();
            result = m.commit(&offsets).await;
        }
        m.leave("the consumer closed").await;
        result
    }

    /// The group's share of a poll: a lost generation drops partitions, a
    /// finished join applies its assignment, a needed rejoin starts, and
    /// auto-commit runs. Waits (up to `max_wait_ms`) only when the member
    /// owns nothing yet.
    async fn group_step(&mut self) -> Result<(), ClientError> {
        let Some(m) = self.group.as_mut() else {
            return Ok(());
        };
        if let Some(e) = m.fatal() {
            return Err(e);
        }
        m.polled();
        if m.take_lost() && !self.positions.is_empty() {
            let lost: Vec<TopicPartition> = self.positions.keys().cloned().collect();
            self.positions.clear();
            self.events.push(RebalanceEvent::Lost(lost));
        }
        let mut revoked_now = false;
        if let Some(r) = m.joined(Duration::ZERO).await {
            revoked_now = self.apply_join(r).await?;
        }
        let Some(m) = self.group.as_mut() else {
            return Ok(());
        };
        // After a revocation the rejoin waits for the next poll, so the
        // application can commit what it processed of the revoked
        // partitions in between (its generation is still current).
        if m.needs_rejoin() && !revoked_now {
            if !m.config.assignors[0].is_cooperative() && !self.positions.is_empty() {
                // Eager protocols give everything up before rejoining.
                let all: BTreeSet<TopicPartition> = self.positions.keys().cloned().collect();
                self.revoke(&all).await;
            }
            let Some(m) = self.group.as_mut() else {
                return Ok(());
            };
            m.start_join(self.positions.keys().cloned().collect());
        }
        let Some(m) = self.group.as_mut() else {
            return Ok(());
        };
        if self.positions.is_empty() && m.is_joining() {
            let wait = Duration::from_millis(u64::from(self.config.max_wait_ms));
            if let Some(r) = m.joined(wait).await {
                // Nothing is owned here, so nothing can be revoked.
                self.apply_join(r).await?;
            }
        }
        self.maybe_auto_commit().await;
        Ok(())
    }

    async fn maybe_auto_commit(&mut self) {
        let Some(m) = &self.group else {
            return;
        };
        let every = Duration::from_millis(u64::from(m.config.auto_commit_interval_ms));
        if !m.config.enable_auto_commit
            || self.positions.is_empty()
            || self.last_auto_commit.elapsed() < every
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        let offsets: Vec<(TopicPartition, u64)> = self
            .positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        if let Err(e) = m.commit(&offsets).await {
            tracing::debug!("auto-commit failed (retried at the next interval): {e}");
        }
    }

    /// Gives up `partitions` in an orderly way: commits their positions
    /// (auto-commit on), then stops fetching them.
    async fn revoke(&mut self, partitions: &BTreeSet<TopicPartition>) {
        if partitions.is_empty() {
            return;
        }
        if let Some(m) = &self.group {
            if m.config.enable_auto_commit {
                let offsets: Vec<(TopicPartition, u64)> = partitions
                    .iter()
                    .filter_map(|tp| self.positions.get(tp).map(|o| (tp.clone(), *o)))
                    .collect();
                if let Err(e) = m.commit(&offsets).await {
                    tracing::warn!("commit before revoking {partitions:?} failed: {e}");
                }
            }
        }
        for tp in partitions {
            self.positions.remove(tp);
        }
        self.events.push(RebalanceEvent::Revoked(
            partitions.iter().cloned().collect(),
        ));
    }

    /// Applies a finished join; answers whether partitions were revoked.
    async fn apply_join(&mut self, r: Result<Joined, ClientError>) -> Result<bool, ClientError> {
        let joined = match r {
            Ok(j) => j,
            Err(e) => {
                if let Some(f) = self.group.as_ref().and_then(|m| m.fatal()) {
                    return Err(f);
                }
                tracing::warn!("joining the group failed (retrying): {e}");
                return Ok(false);
            }
        };
        if self.group.as_ref().map(|m| m.generation()) != Some(joined.generation) {
            // The membership was given up after this join finished (poll
            // watchdog, lost generation): its assignment is not ours.
            return Ok(false);
        }
        let owned: BTreeSet<TopicPartition> = self.positions.keys().cloned().collect();
        let revoked: BTreeSet<TopicPartition> =
            owned.difference(&joined.assigned).cloned().collect();
        let added: Vec<TopicPartition> = joined.assigned.difference(&owned).cloned().collect();
        if !revoked.is_empty() {
            self.revoke(&revoked).await;
            if let Some(m) = &self.group {
                // Cooperative: the partitions given up go to others in the
                // next generation, which this member's rejoin starts.
                m.request_rejoin();
            }
        }
        let was_revoked = !revoked.is_empty();
        if added.is_empty() {
            return Ok(was_revoked);
        }
        let starts = match self.starting_positions(&added).await {
            Ok(s) => s,
            Err(e) => {
                // The partitions stay unowned here, so rejoin: the group
                // gives them out again rather than leave them unread.
                if let Some(m) = &self.group {
                    m.request_rejoin();
                }
                return Err(e);
            }
        };
        for (tp, start) in added.iter().zip(starts) {
            self.positions.insert(tp.clone(), start);
        }
        self.events.push(RebalanceEvent::Assigned(added));
        Ok(was_revoked)
    }

    /// Where newly assigned partitions start: the committed offset, or the
    /// reset policy.
    async fn starting_positions(&self, added: &[TopicPartition]) -> Result<Vec<u64>, ClientError> {
        let Some(m) = &self.group else {
            return Err(ClientError::Config("not in a group".into()));
        };
        let reset = m.config.auto_offset_reset;
        let committed = m.committed(added).await?;
        let mut out = Vec::with_capacity(added.len());
        for tp in added {
            out.push(match committed.get(tp).copied().flatten() {
                Some(o) => o,
                None => self.reset_position(tp, reset).await?,
            });
        }
        Ok(out)
    }

    /// Where a partition with no usable committed offset starts.
    async fn reset_position(
        &self,
        tp: &TopicPartition,
        reset: OffsetReset,
    ) -> Result<u64, ClientError> {
        let to = match reset {
            OffsetReset::Earliest => SeekTo::Earliest,
            OffsetReset::Latest => SeekTo::Latest,
            OffsetReset::None => {
                return Err(ClientError::Broker(WireError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!("{tp} has no committed offset and auto_offset_reset is none"),
                )))
            }
        };
        Ok(self.resolve(&tp.topic, &[tp.partition], to).await?[0])
    }

    /// Adds partitions of `topic` to the assignment, each starting at
    /// `start`. An empty `partitions` assigns every partition of the topic.
    /// Fails (assigning nothing) if the topic or a partition does not exist.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        start: SeekTo,
    ) -> Result<(), ClientError> {
        let info = describe(&*self.conn.get().await?, topic).await?;
        let existing: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
        let wanted: Vec<u32> = if partitions.is_empty() {
            existing.clone()
        } else {
            partitions.to_vec()
        };
        if let Some(p) = wanted.iter().find(|p| !existing.contains(p)) {
            return Err(ClientError::Broker(WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "partition {p} of topic '{topic}' does not exist (it has {})",
                    existing.len()
                ),
            )));
        }
        let offsets = self.resolve(topic, &wanted, start).await?;
        for (p, o) in wanted.into_iter().zip(offsets) {
            self.positions.insert(TopicPartition::new(topic, p), o);
        }
        Ok(())
    }

    /// Removes every assignment.
    pub fn unassign_all(&mut self) {
        self.positions.clear();
    }

    /// Moves one assigned (or new) partition to `to`; returns the new position.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<u64, ClientError> {
        let offset = self.resolve(topic, &[partition], to).await?[0];
        self.positions
            .insert(TopicPartition::new(topic, partition), offset);
        Ok(offset)
    }

    /// The next offset `poll` will read from this partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions
            .get(&TopicPartition::new(topic, partition))
            .copied()
    }

    /// The current assignment with positions.
    pub fn assignment(&self) -> Vec<(TopicPartition, u64)> {
        self.positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// Turns a `SeekTo` into offsets, one per partition (ListOffsets for
    /// anything but an explicit offset).
    async fn resolve(
        &self,
        topic: &str,
        partitions: &[u32],
        to: SeekTo,
    ) -> Result<Vec<u64>, ClientError> {
        let spec = match to {
            SeekTo::Offset(o) => return Ok(vec![o; partitions.len()]),
            SeekTo::Earliest => OffsetSpec::Earliest,
            SeekTo::Latest => OffsetSpec::Latest,
            SeekTo::Timestamp(ms) if ms < 0 => {
                return Err(ClientError::Config(format!("timestamp {ms} is negative")))
            }
            SeekTo::Timestamp(ms) => OffsetSpec::Timestamp(ms),
        };
        list_offsets(&*self.conn.get().await?, topic, partitions, spec).await
    }

    /// One long-poll fetch over every assigned partition: waits up to
    /// `max_wait_ms` for `min_bytes`, returns the records past each position
    /// (possibly none) and advances the positions.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        self.group_step().await?;
        if self.positions.is_empty() {
            if self.group.is_some() {
                // A member with nothing assigned (yet): nothing to read. Wait
                // as a fetch would, so a poll loop never spins (and the
                // membership's heartbeat and join tasks get to run).
                crate::timer::sleep_once(Duration::from_millis(u64::from(self.config.max_wait_ms)))
                    .await;
                return Ok(Vec::new());
            }
            return Err(ClientError::Config(
                "no partitions assigned: call assign first".into(),
            ));
        }
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (tp, offset) in &self.positions {
            let part = FetchPartition {
                partition: tp.partition,
                fetch_offset: *offset,
                max_bytes: self.config.max_partition_bytes,
            };
            match topics.last_mut() {
                Some(t) if t.name == tp.topic => t.partitions.push(part),
                _ => topics.push(FetchTopic {
                    name: tp.topic.clone(),
                    partitions: vec![part],
                }),
            }
        }
        let total = u32::try_from(self.positions.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(self.config.max_partition_bytes)
            .min(MAX_FETCH_BYTES);
        let body = RequestBody::Fetch(FetchRequest {
            max_wait_ms: self.config.max_wait_ms,
            min_bytes: self.config.min_bytes,
            max_bytes: total.max(self.config.max_partition_bytes),
            topics,
        });
        // The broker may hold a fetch for max_wait_ms before answering.
        let timeout_ms = self
            .config
            .client
            .request_timeout_ms
            .saturating_add(u64::from(self.config.max_wait_ms));
        let resp = match self
            .conn
            .get()
            .await?
            .start_with_timeout(body, timeout_ms)?
            .await?
        {
            ResponseBody::Fetch(r) => r,
            other => return Err(unexpected("Fetch", &other)),
        };
        let mut out = Vec::new();
        let mut advanced: Vec<(TopicPartition, u64)> = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                let tp = TopicPartition::new(t.name.clone(), p.partition);
                let Some(&position) = self.positions.get(&tp) else {
                    continue; // not asked for; ignore
                };
                if let Some(e) = p.error {
                    let reset = self.group.as_ref().map(|m| m.config.auto_offset_reset);
                    if let (ErrorCode::OffsetOutOfRange, Some(reset)) = (e.code, reset) {
                        if reset != OffsetReset::None {
                            // The committed position fell out of retention:
                            // start again where the reset policy says.
                            let to = self.reset_position(&tp, reset).await?;
                            tracing::warn!(
                                "{tp}: offset {position} is out of range; reset to {to}"
                            );
                            advanced.push((tp, to));
                            continue;
                        }
                    }
                    // Name the partition and offset once: the broker's
                    // message usually names them already.
                    let message = if e.message.contains(&tp.to_string()) {
                        e.message
                    } else {
                        format!("{tp} at offset {position}: {}", e.message)
                    };
                    return Err(ClientError::Broker(WireError::new(e.code, message)));
                }
                let next = decode_records(
                    &tp,
                    position,
                    &p.records.to_bytes(),
                    self.config.max_decompressed_batch_bytes,
                    &mut out,
                )?;
                if next > position {
                    advanced.push((tp, next));
                }
            }
        }
        for (tp, next) in advanced {
            self.positions.insert(tp, next);
        }
        Ok(out)
    }
}

/// Appends the records of `buf` (whole batches) at or past `position` to
/// `out`; returns the position after them. A compressed batch's records are
/// decompressed (at most `max_decompressed_batch_bytes`) into their own
/// buffer, which its records' keys and values then share.
fn decode_records(
    tp: &TopicPartition,
    position: u64,
    buf: &Bytes,
    max_decompressed_batch_bytes: usize,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, ClientError> {
    let corrupt = |base: u64, why: String| {
        ClientError::Broker(WireError::new(
            ErrorCode::CorruptBatch,
            format!("{tp}: batch at offset {base}: {why}"),
        ))
    };
    let mut next = position;
    for item in batches(buf) {
        let (header, raw) = item.map_err(|e| corrupt(next, e.to_string()))?;
        verify_crc(raw).map_err(|e| corrupt(header.base_offset, e.to_string()))?;
        let last = header.last_offset();
        if last < next {
            continue;
        }
        let body = records_body(raw, &header, max_decompressed_batch_bytes)
            .map_err(|e| corrupt(header.base_offset, e.to_string()))?;
        let buf = match body {
            std::borrow::Cow::Borrowed(b) => buf.slice_ref(b),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        for r in RecordIter::new(&buf, header.record_count) {
            let r = r.map_err(|e| corrupt(header.base_offset, e.to_string()))?;
            // base_offset is outside the CRC: saturate, never overflow.
            let offset = header.base_offset.saturating_add(u64::from(r.offset_delta));
            if offset < next {
                continue;
            }
            out.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset,
                timestamp_ms: header.first_timestamp_ms.wrapping_add(r.timestamp_delta),
                key: r.key.map(|k| buf.slice_ref(k)),
                value: r.value.map(|v| buf.slice_ref(v)),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.map(|v| buf.slice_ref(v)),
                        )
                    })
                    .collect(),
            });
        }
        next = header.next_offset();
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{set_base_offset, BatchBuilder};
    use bytes::BytesMut;

    fn batch(base: u64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for (i, v) in values.iter().enumerate() {
            b.push(100 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let mut v = b.finish().to_vec();
        set_base_offset(&mut v, base);
        v
    }

    #[test]
    fn skips_below_position_and_advances() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch(10, &["a", "b", "c"]));
        buf.extend_from_slice(&batch(13, &["d"]));
        let buf = buf.freeze();
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        let next = decode_records(&tp, 11, &buf, 1 << 20, &mut out).expect("ok");
        assert_eq!(next, 14);
        let got: Vec<(u64, &[u8])> = out
            .iter()
            .map(|r| (r.offset, r.value.as_deref().expect("v")))
            .collect();
        assert_eq!(got, vec![(11, &b"b"[..]), (12, b"c"), (13, b"d")]);
        assert_eq!(out[1].timestamp_ms, 102);
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn reads_a_mix_of_compressed_and_plain_batches() {
        use crate::protocol::compression::Compression;
        let mut buf = BytesMut::new();
        let mut base = 0;
        let mut want = Vec::new();
        for (i, codec) in Compression::ALL
            .into_iter()
            .chain([Compression::None])
            .enumerate()
        {
            let mut b = BatchBuilder::new();
            for j in 0..3 {
                let v = format!("{codec}-{i}-{j}");
                b.push(100, Some(b"k"), Some(v.as_bytes()), &[]);
                want.push((base + j, v.into_bytes()));
            }
            let mut v = b.finish_compressed(codec).to_vec();
            set_base_offset(&mut v, base);
            buf.extend_from_slice(&v);
            base += 3;
        }
        let buf = buf.freeze();
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        let next = decode_records(&tp, 0, &buf, 1 << 20, &mut out).expect("ok");
        assert_eq!(next, base);
        let got: Vec<(u64, Vec<u8>)> = out
            .iter()
            .map(|r| (r.offset, r.value.as_deref().expect("v").to_vec()))
            .collect();
        assert_eq!(got, want);
        // Past the consumer's decompression limit: an error, not an allocation.
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(&[0u8; 64 * 1024]), &[]);
        let big = Bytes::from(b.finish_compressed(Compression::Zstd).to_vec());
        let e = decode_records(&tp, 0, &big, 1024, &mut Vec::new()).expect_err("too large");
        assert!(
            e.to_string().contains("max_decompressed_batch_bytes"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_batch_is_an_error() {
        let mut v = batch(0, &["hello"]);
        let n = v.len();
        v[n - 2] ^= 0xff;
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        let e = decode_records(&tp, 0, &Bytes::from(v), 1 << 20, &mut out).expect_err("corrupt");
        assert_eq!(e.wire_code(), Some(ErrorCode::CorruptBatch));
        assert!(out.is_empty());
    }

    #[test]
    fn hostile_base_offset_does_not_overflow() {
        // A broker (or a damaged segment) may send any base_offset.
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        let v = batch(u64::MAX - 1, &["a", "b", "c"]);
        let next = decode_records(&tp, 0, &Bytes::from(v), 1 << 20, &mut out).expect("ok");
        assert_eq!(next, u64::MAX);
        assert_eq!(out.last().map(|r| r.offset), Some(u64::MAX));
    }

    #[test]
    fn empty_and_truncated_tail() {
        let tp = TopicPartition::new("t", 0);
        let mut out = Vec::new();
        assert_eq!(
            decode_records(&tp, 5, &Bytes::new(), 1 << 20, &mut out).expect("ok"),
            5
        );
        let mut v = batch(5, &["x"]);
        let whole = v.len();
        v.extend_from_slice(&batch(6, &["y"])[..20]);
        assert_eq!(
            decode_records(&tp, 5, &Bytes::from(v), 1 << 20, &mut out).expect("ok"),
            6
        );
        assert_eq!(out.len(), 1);
        assert!(whole > 0);
    }
}
