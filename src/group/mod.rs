//! Consumer groups: Kafka's group coordinator (membership, generations,
//! rebalances, committed offsets), kept in the internal topic
//! `__consumer_offsets` through the normal partition path.
//!
//! Owns: the per-group state machine ([`state`]: pure, time passed in), the
//! internal topic's record format and the group → partition hash
//! ([`records`]), and the coordinator of one internal partition
//! ([`coordinator`]: waiting requests, timers, durable writes, loading,
//! snapshots). docs/consumer-groups.md describes the protocol and
//! guarantees.
//!
//! Layering: above `partition` (it appends to and replays an internal
//! partition like any client would, through `Partition`), below `shard`
//! (which owns one coordinator per internal partition it owns) and
//! `service` (which routes group requests to the owning shard).
//!
//! Must not know: wire formats, sockets, other shards.

pub mod coordinator;
pub mod records;
pub mod state;
#[cfg(test)]
mod tests;

pub use coordinator::{Coordinator, GroupSettings};
pub use records::{partition_for_group, OFFSETS_TOPIC};
pub use state::{ClientInfo, GroupLimits, GroupState};
