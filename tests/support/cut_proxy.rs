//! A loopback TCP proxy that cuts connections at random points (tests of the
//! idempotent producer, tests/idempotent_produce.rs).
//!
//! Between a client and a broker it forwards bytes both ways, and with
//! seeded randomness it cuts a connection pair (both sockets shut down)
//! when a chunk arrives: from the broker (the request was forwarded and
//! possibly written; its response is lost) or from the client (a request
//! is cut short). The target can be re-pointed (a broker restarted on
//! another port); while it refuses connections, the client side is closed.
//!
//! Invariants: listens on 127.0.0.1 only; at most `MAX_CONNECTIONS`
//! accepted and `max_cuts` cuts; every thread ends when its sockets close,
//! and `Drop` stops accepting, shuts every live connection down and joins
//! the accept thread.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Connections the proxy accepts in its lifetime.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Bytes forwarded per read.
const CHUNK_BYTES: usize = 64 * 1024;
/// Connect timeout to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    target: Mutex<SocketAddr>,
    rng: Mutex<StdRng>,
    /// Cut probability per chunk, in 1/1_000_000.
    cut_ppm: AtomicUsize,
    cuts: AtomicUsize,
    cuts_after_forward: AtomicUsize,
    max_cuts: usize,
    stop: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

impl Shared {
    /// Whether to cut now (seeded; at most `max_cuts`).
    fn roll(&self) -> bool {
        let ppm = self.cut_ppm.load(Ordering::SeqCst);
        if ppm == 0 || self.cuts.load(Ordering::SeqCst) >= self.max_cuts {
            return false;
        }
        let hit = self.rng.lock().expect("rng").gen_range(0..1_000_000) < ppm;
        if hit {
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }
}

pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl CutProxy {
    /// Proxies to `target`, cutting with probability `cut_ppm` per million
    /// chunks, at most `max_cuts` times; randomness from `seed`.
    pub fn start(target: SocketAddr, seed: u64, cut_ppm: usize, max_cuts: usize) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            cut_ppm: AtomicUsize::new(cut_ppm),
            cuts: AtomicUsize::new(0),
            cuts_after_forward: AtomicUsize::new(0),
            max_cuts,
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("cut-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("spawn proxy");
        CutProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends new connections to `target` from now on.
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("target") = target;
    }

    /// Cuts so far, and how many of them dropped a broker's answer.
    pub fn cuts(&self) -> (usize, usize) {
        (
            self.shared.cuts.load(Ordering::SeqCst),
            self.shared.cuts_after_forward.load(Ordering::SeqCst),
        )
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        for s in self.shared.live.lock().expect("live").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for _ in 0..MAX_CONNECTIONS {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let target = *shared.target.lock().expect("target");
        let Ok(broker) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            // The broker is down: the client sees a closed connection.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        {
            let mut live = shared.live.lock().expect("live");
            live.retain(|s| s.peer_addr().is_ok());
            for s in [&client, &broker] {
                if let Ok(c) = s.try_clone() {
                    live.push(c);
                }
            }
        }
        for (from, to, answers) in [
            (client.try_clone(), broker.try_clone(), false),
            (broker.try_clone(), client.try_clone(), true),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let s = shared.clone();
            let _ = std::thread::Builder::new()
                .name("cut-proxy-pump".into())
                .spawn(move || pump(from, to, answers, s));
        }
    }
}

/// Forwards `from` → `to` until either closes or a cut; a cut shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream, answers: bool, shared: Arc<Shared>) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.roll() {
            if answers {
                // The broker answered (so the request reached it): drop it.
                shared.cuts_after_forward.fetch_add(1, Ordering::SeqCst);
            } else {
                // Forward part of the request, then cut.
                let _ = to.write_all(&buf[..n / 2]);
            }
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
