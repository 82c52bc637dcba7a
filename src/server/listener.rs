//! One shard's life: boot (mesh + partition recovery), listen, accept,
//! shut down.
//!
//! Owns: the listeners of the broker ([`listeners`]: a list of (address,
//! protocol), one SO_REUSEPORT socket per listener per shard), the startup
//! order (every shard recovers its partitions; shard 0 binds the configured
//! addresses first and resolves port 0; the others bind the resolved
//! addresses), the startup report to the main thread, the accept loops
//! (generic over the [`Acceptor`] and the protocol), and graceful shutdown
//! (stop accepting, close partitions, within [`CLOSE_TIMEOUT_MS`]). The
//! client listener's address was claimed by `port::claim` before any shard
//! started (port 0 already resolved), so shard 0 binds a concrete port.
//!
//! Invariants: each shard reports to the main thread exactly once (ready or
//! failed; [`StartupGuard`] reports a failure if the shard never gets that
//! far, even if its executor could not be created); an accept error never
//! ends the accept loop; every shard binds the same listeners, in the same
//! order, as shard 0 announced them (asserted).
//!
//! Must not know: what a protocol's requests do (its codec and handler do).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::config::BrokerConfig;
use crate::net::Acceptor;
use crate::protocol::codec::DecodeLimits;
use crate::service::Service;
use crate::shard::{Mesh, Shard, TopicMeta};

use super::budget::RequestBudget;
use super::codec::{Codec, FlatBuffers, Handler};
use super::connection::{self, Conn, ConnLimits};
use super::handlers::FlatBuffersHandler;
use super::port;
use super::StartupReport;

/// Longest a shard spends closing its partitions at shutdown, in ms; past
/// it the shard stops waiting (what is not closed is recovered at the next
/// start, as after a crash), so a shutdown always ends.
pub const CLOSE_TIMEOUT_MS: u64 = 30_000;

/// The wire protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Corelog's FlatBuffers protocol (`listen`).
    FlatBuffers,
}

/// One listener every shard runs: where, and in which protocol.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSpec {
    /// The config key that set `addr` (for error messages).
    pub setting: &'static str,
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

/// The broker's listeners, from the configuration. The first one is the
/// address `listening on` reports. A second protocol (e.g. Kafka's) is one
/// more entry here, a [`Protocol`] variant and its arm in [`spawn_listener`].
pub fn listeners(config: &BrokerConfig) -> Vec<ListenerSpec> {
    vec![ListenerSpec {
        setting: "listen",
        addr: config.listen,
        protocol: Protocol::FlatBuffers,
    }]
}

/// Starts the accept loop of one bound listener on this shard.
fn spawn_listener(
    shard: &Rc<Shard>,
    spec: &ListenerSpec,
    listener: TcpListener,
    budget: &Rc<RequestBudget>,
) -> glommio::Task<()> {
    let limits = ConnLimits::from_config(&shard.config.limits);
    match spec.protocol {
        Protocol::FlatBuffers => {
            let conn = Conn {
                codec: Rc::new(FlatBuffers {
                    limits: DecodeLimits::for_requests(&shard.config.limits),
                }),
                handler: Rc::new(FlatBuffersHandler {
                    service: Service::new(shard.clone()),
                }),
                limits,
                shard: shard.id,
                clock: shard.clock().clone(),
                budget: budget.clone(),
            };
            glommio::spawn_local(accept_loop(shard.clone(), listener, conn))
        }
    }
}

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
    let specs = listeners(&config);
    let shard = match Shard::boot(id, count, config, mesh, topics).await {
        Ok(s) => s,
        Err(e) => {
            guard.report(Err(e.to_string()));
            return;
        }
    };

    // Shard 0 binds first and resolves port 0; the others follow its addresses.
    let bind_addrs: Vec<SocketAddr> = if id == 0 {
        specs.iter().map(|s| s.addr).collect()
    } else {
        match shard.recv_listen_addrs().await {
            Some(a) if a.len() == specs.len() => a,
            _ => {
                guard.report(Err(format!(
                    "shard {id}: shard 0 never announced its listen addresses"
                )));
                return;
            }
        }
    };
    let mut bound = Vec::with_capacity(specs.len());
    for (spec, bind_addr) in specs.iter().zip(&bind_addrs) {
        let listener = match port::bind_shard_listener(*bind_addr) {
            Ok(l) => l,
            Err(e) => {
                guard.report(Err(e));
                return;
            }
        };
        let addr = match Acceptor::local_addr(&listener) {
            Ok(a) => a,
            Err(e) => {
                guard.report(Err(format!(
                    "cannot read the {} address: {e}",
                    spec.setting
                )));
                return;
            }
        };
        bound.push((listener, addr));
    }
    let addrs: Vec<SocketAddr> = bound.iter().map(|(_, a)| *a).collect();
    assert_eq!(addrs.len(), specs.len());
    if id == 0 {
        shard.send_listen_addrs(&addrs).await;
    }
    let Some(&addr) = addrs.first() else {
        guard.report(Err("no listener is configured".into()));
        return;
    };
    shard.set_listen_addr(addr);
    shard.start_receivers();
    if id == 0 {
        shard.watch_signals();
    }

    // One request-memory budget for all of this shard's listeners.
    let limits = &shard.config.limits;
    let budget = RequestBudget::new(
        limits.max_queued_request_bytes,
        u64::from(limits.max_frame_bytes),
    );
    let accepts: Vec<_> = specs
        .iter()
        .zip(bound)
        .map(|(spec, (listener, _))| spawn_listener(&shard, spec, listener, &budget))
        .collect();
    guard.report(Ok(addr));
    tracing::debug!(shard = id, "accepting on {addrs:?}");

    shard.stopped().await;
    tracing::debug!(shard = id, "stopping");
    for accept in accepts {
        let _ = accept.cancel().await;
    }
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
    tracing::info!(
        shard = id,
        peak_bytes = budget.peak_bytes(),
        capacity_bytes = budget.capacity_bytes(),
        waits = budget.waits(),
        overdrafts = budget.overdrafts(),
        "request budget (max_queued_request_bytes): peak {} of {} bytes reserved, {} reservations waited, {} overdrafts",
        budget.peak_bytes(),
        budget.capacity_bytes(),
        budget.waits(),
        budget.overdrafts()
    );
    tracing::debug!(shard = id, "stopped");
}

async fn accept_loop<A, C, H>(shard: Rc<Shard>, listener: A, conn: Conn<C, H>)
where
    A: Acceptor,
    C: Codec,
    H: Handler<C::Request, C::Response>,
{
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.is_stopping() {
                    break;
                }
                glommio::spawn_local(connection::serve(conn.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                crate::timer::sleep_once(Duration::from_millis(10)).await;
            }
        }
    }
}
