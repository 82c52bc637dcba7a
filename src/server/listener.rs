//! One shard's life: boot (mesh + partition recovery), listen, accept,
//! shut down.
//!
//! Owns: the startup order (every shard recovers its partitions; shard 0
//! binds the claimed address first (`port::claim` resolved port 0 already);
//! the others bind the address it announces, each with its own SO_REUSEPORT
//! socket), the startup report to the main thread, the accept loop, and
//! graceful shutdown (stop accepting, close partitions, within
//! [`CLOSE_TIMEOUT_MS`]).
//!
//! Invariants: each shard reports to the main thread exactly once (ready or
//! failed; [`StartupGuard`] reports a failure if the shard never gets that
//! far, even if its executor could not be created); an accept error never
//! ends the accept loop.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::config::BrokerConfig;
use crate::shard::{Mesh, Shard, TopicMeta};

use super::StartupReport;
use super::{connection, port};

/// Longest a shard spends closing its partitions at shutdown, in ms; past
/// it the shard stops waiting (what is not closed is recovered at the next
/// start, as after a crash), so a shutdown always ends.
pub const CLOSE_TIMEOUT_MS: u64 = 30_000;

/// Reports a shard's startup outcome to the main thread exactly once; a
/// guard dropped without reporting reports a failure.
pub struct StartupGuard {
    shard: usize,
    tx: Option<mpsc::Sender<StartupReport>>,
}

impl StartupGuard {
    pub fn new(shard: usize, tx: mpsc::Sender<StartupReport>) -> Self {
        Self {
            shard,
            tx: Some(tx),
        }
    }

    fn report(&mut self, r: Result<SocketAddr, String>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.shard, r));
        }
    }
}

impl Drop for StartupGuard {
    fn drop(&mut self) {
        let shard = self.shard;
        self.report(Err(format!("shard {shard} failed to start")));
    }
}

/// The whole life of shard `id`.
pub async fn shard_main(
    id: usize,
    count: usize,
    config: BrokerConfig,
    mesh: Mesh,
    topics: Vec<TopicMeta>,
    mut guard: StartupGuard,
) {
    let configured = config.listen;
    let shard = match Shard::boot(id, count, config, mesh, topics).await {
        Ok(s) => s,
        Err(e) => {
            guard.report(Err(e.to_string()));
            return;
        }
    };

    // Shard 0 binds first and resolves port 0; the others follow its address.
    let bind_addr = if id == 0 {
        configured
    } else {
        match shard.recv_listen_addr().await {
            Some(a) => a,
            None => {
                guard.report(Err(format!(
                    "shard {id}: shard 0 never announced its listen address"
                )));
                return;
            }
        }
    };
    let listener = match port::bind_shard_listener(bind_addr) {
        Ok(l) => l,
        Err(e) => {
            guard.report(Err(e));
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            guard.report(Err(format!("cannot read the listen address: {e}")));
            return;
        }
    };
    if id == 0 {
        shard.send_listen_addr(addr).await;
    }
    shard.set_listen_addr(addr);
    shard.start_receivers();
    if id == 0 {
        shard.watch_signals();
    }

    let accept = glommio::spawn_local(accept_loop(shard.clone(), listener));
    guard.report(Ok(addr));
    tracing::debug!(shard = id, "accepting on {addr}");

    shard.stopped().await;
    tracing::debug!(shard = id, "stopping");
    let _ = accept.cancel().await;
    let closed = futures_lite::future::or(
        async {
            shard.close_all().await;
            true
        },
        async {
            crate::timer::sleep_once(Duration::from_millis(CLOSE_TIMEOUT_MS)).await;
            false
        },
    )
    .await;
    if !closed {
        tracing::warn!(
            shard = id,
            "closing partitions took over {CLOSE_TIMEOUT_MS} ms; stopping without waiting \
             (the next start recovers them)"
        );
    }
    tracing::debug!(shard = id, "stopped");
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.is_stopping() {
                    break;
                }
                let s = shard.clone();
                glommio::spawn_local(connection::serve(s, stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                crate::timer::sleep_once(Duration::from_millis(10)).await;
            }
        }
    }
}
