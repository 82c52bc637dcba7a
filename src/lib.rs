//! Corelog: a thread-per-core, io_uring event-streaming broker.
//!
//! Layers, lowest first (a module uses only the ones before it):
//! `config` → `protocol` → `storage` → `partition` → `shard` → `service` →
//! `server` (front ends),
//! with `net` (framed TCP I/O) under `server` and `client`, and `client`
//! and `cli` beside the server. ARCHITECTURE.md is the codemap.

pub mod cli;
pub mod client;
pub mod config;
pub mod group;
pub mod io;
pub mod malloc_policy;
pub mod net;
pub mod partition;
pub mod protocol;
pub mod server;
pub mod service;
pub mod shard;
pub mod storage;
pub mod timer;

/// This build's version, as reported in ApiVersions.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
