//! The broker: process startup, per-shard listeners, connections and
//! request handling.
//!
//! Owns: [`run`] (the `corelog serve` entry point), the per-shard main and
//! its listeners ([`listener`]), the protocol-generic connection loop
//! ([`connection`], over a [`codec::Codec`] and a transport), and the
//! FlatBuffers front end ([`codec::FlatBuffers`], [`handlers`]), which maps
//! requests to the partition service (`crate::service`).
//!
//! Invariants: `listening on <addr>` is printed exactly once, on stdout, and
//! only after every shard has opened its partitions and is accepting; a
//! failure before that is returned as [`ServerError::Startup`] with a message
//! naming the cause; after it, nothing a client sends can stop the broker
//! (errors are answered or end that one connection). Logs go to stderr via
//! tracing.
//!
//! Must not know: partitions or how requests are routed to shards (that is
//! `service` and `shard`).

pub mod codec;
pub mod connection;
pub mod handlers;
pub mod listener;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::shard::{registry, startup, Mesh, ShardError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Startup(String),
}

impl From<ShardError> for ServerError {
    fn from(e: ShardError) -> Self {
        ServerError::Startup(e.to_string())
    }
}

/// What a shard tells the main thread during startup.
pub(crate) type StartupReport = (usize, Result<SocketAddr, String>);

/// Runs the broker until SIGINT/SIGTERM. Prints `listening on ADDR` to stdout
/// once every shard accepts connections.
pub fn run(config: BrokerConfig) -> Result<(), ServerError> {
    config
        .validate()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let _lock = startup::lock_data_dir(&config.data_dir)?;
    // glommio opens files through io_uring relative to no directory: every
    // path below must be absolute, so resolve the data dir once, here.
    let mut config = config;
    config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(|e| {
        ServerError::Startup(format!(
            "cannot resolve data dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let cpus = startup::shard_cpus(config.shards)?;
    let shards = cpus.len();
    startup::raise_memlock(shards as u64 * config.shard.io_memory_bytes);
    let topics = registry::load_topics(
        &crate::io::Disk::Real,
        &config.data_dir,
        shards,
        config.limits.max_partitions_per_topic,
    )
    .map_err(|e| ServerError::Startup(format!("cannot load topics: {e}")))?;
    tracing::info!(
        "starting {shards} shard(s) on CPUs {cpus:?}; {} topic(s) in {}",
        topics.len(),
        config.data_dir.display()
    );
    startup::block_signals()?;

    let mesh = Mesh::full(shards, config.shard.mesh_channel_capacity as usize);
    let (report_tx, report_rx) = mpsc::channel::<StartupReport>();
    let mut handles = Vec::with_capacity(shards);
    for (i, cpu) in cpus.iter().copied().enumerate() {
        let io_memory = usize::try_from(config.shard.io_memory_bytes).unwrap_or(usize::MAX);
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .io_memory(io_memory)
            .ring_depth(config.shard.ring_depth as usize);
        let guard = listener::StartupGuard::new(i, report_tx.clone());
        let (config, mesh, topics) = (config.clone(), mesh.clone(), topics.clone());
        let spawned = builder.spawn(move || async move {
            listener::shard_main(i, shards, config, mesh, topics, guard).await
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                return Err(ServerError::Startup(format!(
                    "cannot start shard {i} on CPU {cpu}: {e}"
                )))
            }
        }
    }
    drop(report_tx);

    let mut addr = None;
    for _ in 0..shards {
        match report_rx.recv() {
            Ok((_, Ok(a))) => addr = Some(a),
            Ok((i, Err(msg))) => {
                // The shard is on its way out; its thread may hold a more
                // precise error (e.g. the executor could not be created).
                let detail = if i < handles.len() {
                    match handles.remove(i).join() {
                        Err(e) => format!("{msg}: {e}"),
                        Ok(()) => msg,
                    }
                } else {
                    msg
                };
                return Err(ServerError::Startup(detail));
            }
            Err(_) => return Err(ServerError::Startup("a shard exited during startup".into())),
        }
    }
    let Some(addr) = addr else {
        return Err(ServerError::Startup("no shard is listening".into()));
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    tracing::info!("listening on {addr} with {shards} shard(s)");

    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            tracing::error!("shard {i} ended with an error: {e}");
        }
    }
    tracing::info!("shut down cleanly");
    Ok(())
}
