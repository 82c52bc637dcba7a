//! The broker: listeners, connections, request routing.
//! TODO(helper: server).

use crate::config::BrokerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Startup(String),
}

/// Runs the broker until SIGINT/SIGTERM. Prints `listening on ADDR` to stdout
/// once every shard accepts connections.
pub fn run(_config: BrokerConfig) -> Result<(), ServerError> {
    todo!()
}
