//! The coordinator's upkeep: the ticker (sessions, rebalance timeouts),
//! expiry of idle empty groups after `offsets_retention_ms`, and snapshots
//! that keep the internal partition bounded.
//!
//! Invariants: those of `group::coordinator`; a snapshot starts only while no
//! write is in flight.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::partition::Partition;
use crate::protocol::WireError;

use crate::group::records::{Entry, Key, OffsetValue};
use crate::group::state::GroupState;

use super::{Coordinator, EXPIRY_CHECK_MS};

impl Coordinator {
    // ------------------------------------------------------------ time

    pub(super) fn start_ticker(self: &Rc<Self>) {
        let me = self.clone();
        glommio::spawn_local(async move {
            let tick = Duration::from_millis(me.settings.tick_ms.max(1));
            let mut last_expiry_check = me.clock.now();
            while !me.stopped.get() {
                me.clock.sleep(tick).await;
                if me.stopped.get() {
                    break;
                }
                me.tick();
                if me.clock.elapsed(last_expiry_check) >= Duration::from_millis(EXPIRY_CHECK_MS) {
                    last_expiry_check = me.clock.now();
                    me.expire_offsets().await;
                }
                me.maybe_snapshot().await;
            }
        })
        .detach();
    }

    pub(super) fn tick(self: &Rc<Self>) {
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        let mut all = Vec::new();
        for (id, g) in self.groups.borrow_mut().iter_mut() {
            if g.members.is_empty() && g.pending_members.is_empty() {
                continue;
            }
            let fx = g.tick(now, wall);
            g.check();
            all.push((id.clone(), fx));
        }
        for (id, fx) in all {
            self.deliver(&id, fx);
        }
    }

    /// Deletes Empty groups (and their offsets) idle past offsets_retention_ms.
    pub(super) async fn expire_offsets(self: &Rc<Self>) {
        let candidates: Vec<String> = self
            .groups
            .borrow()
            .keys()
            .filter(|g| self.is_expired(g))
            .cloned()
            .collect();
        for g in candidates {
            // Checked again, in the same step that marks it Dead: a commit
            // may have arrived during the deletes before this one.
            match self.delete_if(&g, |c, g| c.is_expired(g)).await {
                Ok(true) => tracing::info!(
                    group = %g,
                    "group expired: empty for longer than offsets_retention_ms"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(group = %g, "expiring the group failed: {e}"),
            }
        }
    }

    /// An Empty group with no member, no commit in flight (Kafka's
    /// hasPendingOffsetCommits), idle past offsets_retention_ms.
    pub(super) fn is_expired(&self, group: &str) -> bool {
        if self.commits_in_flight.borrow().contains_key(group) {
            return false;
        }
        let wall = self.clock.wall_ms();
        let retention = i64::try_from(self.settings.offsets_retention_ms).unwrap_or(i64::MAX);
        self.groups.borrow().get(group).is_some_and(|g| {
            let last = g
                .offsets
                .values()
                .map(|c| c.commit_ms)
                .max()
                .unwrap_or(i64::MIN)
                .max(g.state_ms);
            g.members.is_empty()
                && g.state == GroupState::Empty
                && wall.saturating_sub(last) > retention
        })
    }

    /// Rewrites every live key and drops the log before it, once enough
    /// has been written since the last snapshot (see the module header).
    pub(super) async fn maybe_snapshot(self: &Rc<Self>) {
        let threshold = self
            .settings
            .snapshot_min_bytes
            .max(2 * self.last_snapshot_bytes.get());
        if self.bytes_since_snapshot.get() < threshold || self.writes_in_flight.get() > 0 {
            return;
        }
        if let Err(e) = self.snapshot().await {
            tracing::warn!(
                partition = %self.partition.topic_partition(),
                "group snapshot failed (retried later): {e}"
            );
        }
    }

    /// Writes the snapshot; public for tests.
    pub async fn snapshot(self: &Rc<Self>) -> Result<(), WireError> {
        // Every record below this point is applied (no write in flight), so
        // the entries below are exactly the log's state.
        assert_eq!(self.writes_in_flight.get(), 0, "snapshot during a write");
        let entries = self.live_entries();
        if entries.is_empty() {
            // Nothing lives: everything before the end can go.
            let end = self.partition.high_watermark();
            self.partition
                .delete_records(end)
                .await
                .map_err(|e| e.to_wire())?;
            self.bytes_since_snapshot.set(0);
            return Ok(());
        }
        let before = self.bytes_since_snapshot.get();
        let offsets = self.write(&entries).await?;
        let first = offsets[0];
        // The log from `first` on: the snapshot and whatever was written
        // while it was being made durable.
        let since = self.bytes_since_snapshot.get().saturating_sub(before);
        self.partition
            .delete_records(first)
            .await
            .map_err(|e| e.to_wire())?;
        self.last_snapshot_bytes.set(since);
        self.bytes_since_snapshot.set(since);
        tracing::info!(
            partition = %self.partition.topic_partition(),
            entries = entries.len(),
            log_start = first,
            "group snapshot written; the log before it was dropped"
        );
        Ok(())
    }

    /// Every live key with its value, as the log has them.
    pub(super) fn live_entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let persisted = self.persisted.borrow();
        let mut ids: Vec<&String> = persisted.keys().collect();
        ids.sort();
        for id in ids {
            out.push(Entry::Group(Key::group(id), persisted.get(id).cloned()));
        }
        let groups = self.groups.borrow();
        let mut gids: Vec<&String> = groups.keys().collect();
        gids.sort();
        for id in gids {
            for ((t, p), c) in &groups[id].offsets {
                out.push(Entry::Offset(
                    Key::offset(id, t, *p),
                    Some(OffsetValue::new(
                        c.offset,
                        c.leader_epoch,
                        &c.metadata,
                        c.commit_ms,
                    )),
                ));
            }
        }
        out
    }

    /// The partition this coordinator keeps its state in.
    pub fn partition(&self) -> &Rc<Partition> {
        &self.partition
    }

    /// Committed offsets of `group` (tests, describe).
    pub fn committed(&self, group: &str) -> BTreeMap<(String, u32), u64> {
        self.groups
            .borrow()
            .get(group)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|(k, c)| (k.clone(), c.offset))
                    .collect()
            })
            .unwrap_or_default()
    }
}
