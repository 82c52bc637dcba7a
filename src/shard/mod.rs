//! Shards: one glommio executor per CPU, each owning a set of partitions.
//! TODO(helper: server).
