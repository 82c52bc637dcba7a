//! Async Rust client for Corelog: [`Admin`], [`Producer`], [`Consumer`].
//!
//! Runs inside a glommio executor: everything is single-threaded (`Rc`,
//! `RefCell`), and each handle owns one pipelined TCP [`Connection`].
//!
//! Invariants: a request is written to the socket in the order its future was
//! created (`Connection::start` enqueues synchronously), so batches for one
//! partition reach the broker in send order; every request resolves exactly
//! once (response, timeout, or connection loss: then every pending request
//! fails with the same clear error). Connections never resend; the producer
//! (`sender`) resends batches itself, numbered so the broker writes each once.

mod admin;
pub mod assignor;
mod connection;
mod consumer;
mod delivery;
mod flight;
pub mod group;
mod group_admin;
mod partitioner;
mod producer;
mod sender;
mod sync;

#[cfg(test)]
mod mock_tests;

#[cfg(test)]
use crate::protocol::ErrorCode;
use crate::protocol::WireError;

pub use admin::Admin;
pub use connection::{Connection, ReconnectingConnection, ResponseFuture};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
pub use group::{GroupConfig, OffsetReset, RebalanceEvent};
pub use group_admin::{GroupInfo, GroupMemberInfo};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{
    Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    DEFAULT_DELIVERY_TIMEOUT_MS, DEFAULT_MAX_IN_FLIGHT_PER_PARTITION,
    MAX_IN_FLIGHT_WITH_IDEMPOTENCE,
};

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("broker error: {0}")]
    Broker(WireError),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection closed")]
    Closed,
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The peer accepted the TCP connection but is not a Corelog broker (an
    /// HTTP server, a silent port, ...): "ADDR did not answer the Corelog
    /// handshake (what it did)".
    #[error("{0}")]
    Handshake(String),
}

impl ClientError {
    /// The broker's error code, when the broker refused the request.
    pub fn wire_code(&self) -> Option<crate::protocol::ErrorCode> {
        match self {
            ClientError::Broker(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `host:port` of the broker.
    pub bootstrap: String,
    /// Sent in every request header (for broker logs).
    pub client_id: String,
    /// How long one request may wait for its response, in ms (also the
    /// connect timeout).
    pub request_timeout_ms: u64,
    /// Largest response frame accepted, in bytes.
    pub max_frame_bytes: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9700".into(),
            client_id: "corelog-client".into(),
            request_timeout_ms: 30_000,
            max_frame_bytes: 128 * 1024 * 1024,
        }
    }
}
