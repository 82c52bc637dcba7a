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
//! tracing. SIGINT/SIGTERM are blocked from the first line of [`run`]: before
//! `listening on`, the main thread polls for them every
//! [`STARTUP_SIGNAL_POLL_MS`] and ends the process at once with status 0
//! (nothing was served yet, and every on-disk state is crash-consistent, so
//! an exit mid-recovery is as safe as a crash); after it, shard 0 turns them
//! into a graceful shutdown. The listen address is claimed ([`port`]) before
//! any shard starts, so a second broker on it is refused.
//!
//! Must not know: partitions or how requests are routed to shards (that is
//! `service` and `shard`).

pub mod budget;
pub mod codec;
pub mod connection;
pub mod group_handlers;
pub mod handlers;
pub mod listener;
pub mod port;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

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

/// How often the main thread looks for SIGINT/SIGTERM while the shards
/// start, in ms.
pub const STARTUP_SIGNAL_POLL_MS: u64 = 50;

/// Ends the process with status 0 if SIGINT or SIGTERM arrived (startup only;
/// see the module header).
fn exit_if_signalled(stage: &str) {
    if let Some(sig) = startup::take_pending_signal() {
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        tracing::info!("{name} received {stage}: exiting before serving anything");
        std::process::exit(0);
    }
}

fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Runs the broker until SIGINT/SIGTERM. Prints `listening on ADDR` to stdout
/// once every shard accepts connections.
pub fn run(config: BrokerConfig) -> Result<(), ServerError> {
    startup::block_signals()?;
    config
        .validate()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let cpus = startup::shard_cpus(config.shards)?;
    let shards = cpus.len();
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
    // Held until the process exits: no other broker can listen here.
    let claim = port::claim(config.listen).map_err(ServerError::Startup)?;
    config.listen = claim.addr();
    startup::raise_memlock(shards as u64 * config.shard.io_memory_bytes)?;
    exit_if_signalled("while loading topics");
    crate::storage::format_version::check_or_create(&crate::io::Disk::Real, &config.data_dir)
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let topics = registry::load_topics(
        &crate::io::Disk::Real,
        &config.data_dir,
        shards,
        config.limits.max_partitions_per_topic,
    )
    .map_err(|e| ServerError::Startup(format!("cannot load topics: {e}")))?;
    let partitions: usize = topics.iter().map(|t| t.partitions as usize).sum();
    tracing::info!(
        "starting {} on CPUs {cpus:?}; {}, {} in {}",
        count(shards, "shard"),
        count(topics.len(), "topic"),
        count(partitions, "partition"),
        config.data_dir.display()
    );
    exit_if_signalled("while loading topics");

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
                    "cannot start shard {i} on CPU {cpu}: {}",
                    startup::describe_executor_error(&e.to_string())
                )))
            }
        }
    }
    drop(report_tx);

    let mut addr = None;
    let mut ready = 0;
    while ready < shards {
        let report = match report_rx.recv_timeout(Duration::from_millis(STARTUP_SIGNAL_POLL_MS)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                exit_if_signalled("while the shards start");
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ServerError::Startup("a shard exited during startup".into()))
            }
        };
        match report {
            (_, Ok(a)) => {
                addr = Some(a);
                ready += 1;
            }
            (i, Err(msg)) => {
                // The shard is on its way out; its thread may hold a more
                // precise error (e.g. the executor could not be created).
                let detail = if i < handles.len() {
                    match handles.remove(i).join() {
                        Err(e) => format!(
                            "{msg}: {}",
                            startup::describe_executor_error(&e.to_string())
                        ),
                        Ok(()) => msg,
                    }
                } else {
                    msg
                };
                return Err(ServerError::Startup(detail));
            }
        }
    }
    exit_if_signalled("while the shards start");
    let Some(addr) = addr else {
        return Err(ServerError::Startup("no shard is listening".into()));
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    tracing::info!("listening on {addr} with {}", count(shards, "shard"));

    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            tracing::error!("shard {i} ended with an error: {e}");
        }
    }
    tracing::info!("shut down cleanly");
    drop(claim);
    Ok(())
}
