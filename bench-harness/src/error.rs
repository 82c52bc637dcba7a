//! The one error type of corelog-bench.
//!
//! Invariant: nothing in the harness panics on user input (flags, workload
//! files, result files, an unreachable broker); every failure becomes a
//! [`BenchError`] that `main` prints before exiting with status 1.

use std::path::PathBuf;

use corelog::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or workload-file value that cannot be used.
    #[error("invalid workload: {0}")]
    Workload(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid workload file: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Client { what: String, source: ClientError },
    /// A glommio executor could not start, or died.
    #[error("executor: {0}")]
    Executor(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("plot: {0}")]
    Plot(String),
}

impl BenchError {
    pub fn client(what: impl Into<String>, source: ClientError) -> Self {
        BenchError::Client {
            what: what.into(),
            source,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}
