//! The request floor: the least CPU one glommio executor spends per small
//! request on this machine, without any of Corelog's broker code.
//!
//! Why: the broker spends on the order of 100 µs of CPU per small durable
//! produce request. Part of that is the cost of the machinery every request
//! goes through whatever the broker does: loopback TCP (one receive, one
//! send), glommio's reactor (its io_uring submissions, timers, sleeping and
//! waking) and, for a durable request, one O_DSYNC O_DIRECT write. This
//! measures exactly that floor, so the broker's figure can be read as a
//! ratio of it.
//!
//! How: a server on one `LocalExecutor` pinned to a CPU accepts
//! `connections` loopback connections, each wrapped in the broker's receive
//! buffer ([`corelog::net::buffered`]), and serves them in a loop: read a
//! 4-byte big-endian length and that many payload bytes, then (phase
//! `durable` only) write the payload, rounded up to 4 KiB, at the next
//! offset of a prezeroed O_DSYNC O_DIRECT file (the connections share it,
//! one write at a time each; offsets wrap around at the end of the region),
//! then write a 16-byte response (length prefix + 12 bytes). Clients are
//! std threads with blocking sockets (TCP_NODELAY), one request in flight
//! each, recording the round trip. Phases: `echo` (no disk), `durable`.
//!
//! Each phase: accept, a short warm-up, then a measured window of fixed
//! length. In the window the executor thread's own CPU and context switches
//! (getrusage RUSAGE_THREAD, read on the executor) and the whole process's
//! CPU (RUSAGE_SELF: client threads and io-wq workers included, for
//! reference) are read at both ends; a request counts when a client started
//! and finished it inside the window. A request's payload is
//! `request_bytes`; on the wire it is 4 bytes more.
//!
//! Invariants: the temporary file is removed on every path (a guard, and
//! the executor is always joined before returning); every loop is bounded
//! in time and in count; every failure is a [`BenchError`].

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corelog::timer::sleep_once as sleep;
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::io::DmaFile;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::strategies::{prezero, ZERO_WRITE_BYTES};
use super::{io_err, open_temp_with, round1, short_write, SyncLatency, Usage};
use crate::error::BenchError;
use crate::stats::{micros, new_histogram, record};

/// Bytes of every response: a 4-byte length prefix and 12 bytes.
const RESPONSE_BYTES: usize = 16;
/// Durable writes are rounded up to this (O_DIRECT alignment).
const WRITE_ALIGN: usize = 4096;
/// The prezeroed region the durable writes cycle through.
const REGION_BYTES: u64 = 64 << 20;
/// Largest request payload accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Most requests per connection and phase (a bound, never reached).
const MAX_REQUESTS: u64 = 100_000_000;
/// Longest warm-up before each measured window.
const MAX_WARMUP: Duration = Duration::from_millis(50);
/// Longest wait for all clients to connect.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a blocking socket call of a client may take (the server sets it
/// on its reads too, but glommio's buffered receive does not enforce it:
/// there the phase deadline bounds a stalled connection).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the server to be ready for a phase (includes zeroing
/// the region on a slow disk).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long past its window a phase's loops may run before giving up.
const PHASE_SLACK: Duration = Duration::from_secs(30);

/// Client states of one phase, set by the server.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The phases, in order: (name, one durable write per request).
const PHASES: [(&str, bool); 2] = [("echo", false), ("durable", true)];

/// One phase's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFloor {
    /// `echo` (no disk) or `durable` (one O_DSYNC write per request).
    pub phase: String,
    /// Payload bytes of each request (4 more on the wire).
    pub request_bytes: u64,
    pub connections: u64,
    /// Requests started and finished in the measured window.
    pub requests: u64,
    pub requests_per_s: f64,
    /// The server executor thread's CPU (user + system) per request, µs.
    pub server_cpu_us_per_request: f64,
    /// The whole process's CPU per request, µs (client threads and io-wq
    /// workers included).
    pub process_cpu_us_per_request: f64,
    /// The executor thread's context switches (voluntary + involuntary)
    /// per request.
    pub server_switches_per_request: f64,
    /// Client round trip (send the request, read the response), µs.
    pub round_trip_us: SyncLatency,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Directory of the durable phase's temporary file.
    pub dir: PathBuf,
    /// CPU the server executor is pinned to.
    pub cpu: usize,
    /// Measured window of each phase.
    pub phase: Duration,
    pub connections: usize,
    /// Payload bytes of each request.
    pub request_bytes: usize,
}

/// Runs both phases; one result per phase.
pub fn measure(cfg: &FloorConfig) -> Result<Vec<RequestFloor>, BenchError> {
    if cfg.connections == 0 || cfg.connections > 64 {
        return Err(BenchError::Workload(format!(
            "--floor-connections {} must be within 1..=64",
            cfg.connections
        )));
    }
    if cfg.request_bytes == 0 || cfg.request_bytes > MAX_REQUEST_BYTES {
        return Err(BenchError::Workload(format!(
            "--floor-request-bytes {} must be within 1..={MAX_REQUEST_BYTES}",
            cfg.request_bytes
        )));
    }
    let write_bytes = cfg.request_bytes.div_ceil(WRITE_ALIGN) * WRITE_ALIGN;
    let (tx, rx) = mpsc::channel::<(SocketAddr, Arc<AtomicU8>)>();
    let server_cfg = cfg.clone();
    let server = LocalExecutorBuilder::new(Placement::Fixed(cfg.cpu))
        .name("bench-floor")
        .io_memory(
            (cfg.connections * write_bytes)
                .saturating_add(ZERO_WRITE_BYTES)
                .saturating_add(8 << 20),
        )
        .spawn(move || async move { serve(&server_cfg, write_bytes, tx).await })
        .map_err(|e| BenchError::Executor(format!("cannot start the floor executor: {e}")))?;
    let clients = drive_clients(cfg, &rx);
    // The server may be waiting to hand out a phase: fail its send now.
    drop(rx);
    // Always joined, so its temporary file is gone before we return.
    let served = server
        .join()
        .map_err(|e| BenchError::Executor(format!("floor executor failed: {e}")))?;
    let served = served?;
    let clients = clients?;
    Ok(PHASES
        .iter()
        .zip(served)
        .zip(clients)
        .map(|((&(name, _), s), h)| {
            let requests = h.len();
            let n = requests.max(1) as f64;
            let per = |v: f64| round1(v / n);
            RequestFloor {
                phase: name.into(),
                request_bytes: cfg.request_bytes as u64,
                connections: cfg.connections as u64,
                requests,
                requests_per_s: round1(requests as f64 / s.window.as_secs_f64().max(1e-9)),
                server_cpu_us_per_request: per(s.thread.cpu_us),
                process_cpu_us_per_request: per(s.process.cpu_us),
                server_switches_per_request: (s.thread.switches / n * 100.0).round() / 100.0,
                round_trip_us: SyncLatency::of(&h),
            }
        })
        .collect())
}

/// The table lines of the phases.
pub fn table(rows: &[RequestFloor]) -> String {
    let mut s = String::new();
    for r in rows {
        s.push_str(&format!(
            "request floor, {} ({} conns, {} B): {:.0} req/s, server {:.1} µs CPU per request \
             (process {:.1}), {:.2} switches; round trip p50 {} p99 {} µs\n",
            r.phase,
            r.connections,
            r.request_bytes,
            r.requests_per_s,
            r.server_cpu_us_per_request,
            r.process_cpu_us_per_request,
            r.server_switches_per_request,
            r.round_trip_us.p50,
            r.round_trip_us.p99,
        ));
    }
    s
}

/// For each phase: waits for the server, runs the clients, merges their
/// round trips.
fn drive_clients(
    cfg: &FloorConfig,
    rx: &mpsc::Receiver<(SocketAddr, Arc<AtomicU8>)>,
) -> Result<Vec<Histogram<u64>>, BenchError> {
    let mut out = Vec::with_capacity(PHASES.len());
    for (name, _) in PHASES {
        let (addr, state) = rx.recv_timeout(READY_TIMEOUT).map_err(|e| {
            BenchError::Executor(format!("floor server not ready for phase {name}: {e}"))
        })?;
        let deadline = Instant::now() + MAX_WARMUP + cfg.phase + PHASE_SLACK;
        let threads: Vec<_> = (0..cfg.connections)
            .map(|_| {
                let state = state.clone();
                let bytes = cfg.request_bytes;
                std::thread::spawn(move || client(addr, &state, bytes, deadline))
            })
            .collect();
        let mut merged = new_histogram();
        let mut first_err = None;
        for t in threads {
            let r = t
                .join()
                .map_err(|_| BenchError::Executor("floor client thread panicked".into()))
                .and_then(|r| r);
            match r {
                Ok(h) => merged.add(&h).map_err(|e| {
                    BenchError::Executor(format!("cannot merge round-trip histograms: {e}"))
                })?,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        out.push(merged);
    }
    Ok(out)
}

/// One client connection: closed loop, one request in flight, until the
/// server says stop; round trips of requests inside the measured window.
fn client(
    addr: SocketAddr,
    state: &AtomicU8,
    request_bytes: usize,
    deadline: Instant,
) -> Result<Histogram<u64>, BenchError> {
    let io = |what: &str| {
        let what = format!("floor client {what} {addr}");
        move |e| BenchError::io(what, e)
    };
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(io("connect to"))?;
    s.set_nodelay(true).map_err(io("set TCP_NODELAY on"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(io("set read timeout on"))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(io("set write timeout on"))?;
    let len = u32::try_from(request_bytes)
        .map_err(|_| BenchError::Workload(format!("request of {request_bytes} bytes")))?;
    let mut req = vec![0x5au8; 4 + request_bytes];
    req[..4].copy_from_slice(&len.to_be_bytes());
    let mut resp = [0u8; RESPONSE_BYTES];
    let mut hist = new_histogram();
    for _ in 0..MAX_REQUESTS {
        let st = state.load(Ordering::Acquire);
        if st == STOP || Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        s.write_all(&req).map_err(io("write to"))?;
        s.read_exact(&mut resp).map_err(io("read from"))?;
        let took = t0.elapsed();
        if resp[..4] != ((RESPONSE_BYTES - 4) as u32).to_be_bytes() {
            return Err(BenchError::io(
                format!("floor client read from {addr}"),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response length"),
            ));
        }
        if st == MEASURE && state.load(Ordering::Acquire) == MEASURE {
            record(&mut hist, micros(took));
        }
    }
    Ok(hist)
}

/// What the server measured in one phase's window.
struct Served {
    window: Duration,
    /// The executor thread.
    thread: Usage,
    /// The whole process.
    process: Usage,
}

/// The durable phase's file and where the next write goes.
struct Disk {
    file: DmaFile,
    path: PathBuf,
    next: Cell<u64>,
    write_bytes: usize,
}

impl Disk {
    /// One durable write of `payload` (padded with zeros to `write_bytes`).
    async fn write(&self, payload: &[u8]) -> Result<(), BenchError> {
        if payload.len() > self.write_bytes {
            return Err(BenchError::io(
                "floor server read",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "request of {} bytes, above the {}-byte write",
                        payload.len(),
                        self.write_bytes
                    ),
                ),
            ));
        }
        let pos = self.next.get();
        let end = pos + self.write_bytes as u64;
        self.next
            .set(if end + self.write_bytes as u64 > REGION_BYTES {
                0
            } else {
                end
            });
        let mut buf = self.file.alloc_dma_buffer(self.write_bytes);
        let bytes = buf.as_bytes_mut();
        bytes[..payload.len()].copy_from_slice(payload);
        bytes[payload.len()..].fill(0);
        let n = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| io_err("write", &self.path, e))?;
        if n != self.write_bytes {
            return Err(short_write(&self.path, n, self.write_bytes));
        }
        Ok(())
    }
}

/// The executor's side: prepares the file, then serves each phase.
async fn serve(
    cfg: &FloorConfig,
    write_bytes: usize,
    tx: mpsc::Sender<(SocketAddr, Arc<AtomicU8>)>,
) -> Result<Vec<Served>, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("floor server bind 127.0.0.1:0", e.into()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::io("floor server local address", e.into()))?;
    let (file, guard) = open_temp_with(&cfg.dir, "request-floor", true).await?;
    let path = guard.0.clone();
    prezero(&file, &path, REGION_BYTES).await?;
    let disk = Rc::new(Disk {
        file,
        path,
        next: Cell::new(0),
        write_bytes,
    });
    let warmup = (cfg.phase / 10).min(MAX_WARMUP);
    let mut out = Vec::with_capacity(PHASES.len());
    for (name, durable) in PHASES {
        let state = Arc::new(AtomicU8::new(WARMUP));
        tx.send((addr, state.clone()))
            .map_err(|_| BenchError::Executor(format!("floor clients gone before {name}")))?;
        let deadline = Instant::now() + ACCEPT_TIMEOUT + warmup + cfg.phase + PHASE_SLACK;
        let mut handlers = Vec::with_capacity(cfg.connections);
        let accept_by = Instant::now() + ACCEPT_TIMEOUT;
        for _ in 0..cfg.connections {
            let left = accept_by.saturating_duration_since(Instant::now());
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                sleep(left).await;
                None
            })
            .await
            .ok_or_else(|| BenchError::Executor(format!("floor clients did not connect ({name})")))?
            .map_err(|e| BenchError::io("floor server accept", e.into()))?;
            let stream = corelog::net::buffered(accepted);
            let _ = stream.set_nodelay(true);
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| BenchError::io("floor server set read timeout", e.into()))?;
            let disk = durable.then(|| disk.clone());
            handlers.push(glommio::spawn_local(handle(stream, disk, deadline)));
        }
        sleep(warmup).await;
        let (thread0, process0) = (
            Usage::now(libc::RUSAGE_THREAD)?,
            Usage::now(libc::RUSAGE_SELF)?,
        );
        let t0 = Instant::now();
        state.store(MEASURE, Ordering::Release);
        sleep(cfg.phase).await;
        let (thread1, process1) = (
            Usage::now(libc::RUSAGE_THREAD)?,
            Usage::now(libc::RUSAGE_SELF)?,
        );
        let window = t0.elapsed();
        state.store(STOP, Ordering::Release);
        let left = deadline.saturating_duration_since(Instant::now());
        let all = async {
            let mut r = Ok(());
            for h in handlers {
                if let Err(e) = h.await {
                    r = r.and(Err(e));
                }
            }
            r
        };
        future::or(async { Some(all.await) }, async {
            sleep(left).await;
            None
        })
        .await
        .ok_or_else(|| BenchError::Executor(format!("floor connections did not end ({name})")))??;
        out.push(Served {
            window,
            thread: thread1.since(thread0),
            process: process1.since(process0),
        });
    }
    if let Ok(disk) = Rc::try_unwrap(disk) {
        let _ = disk.file.close().await;
    }
    drop(guard);
    Ok(out)
}

/// Serves one connection until the client closes it: request in, optional
/// durable write, response out.
async fn handle(
    mut s: corelog::net::NetStream,
    disk: Option<Rc<Disk>>,
    deadline: Instant,
) -> Result<(), BenchError> {
    let io = |what: &'static str| move |e| BenchError::io(format!("floor server {what}"), e);
    let mut len = [0u8; 4];
    let mut body = vec![0u8; MAX_REQUEST_BYTES];
    let mut resp = [0u8; RESPONSE_BYTES];
    resp[..4].copy_from_slice(&((RESPONSE_BYTES - 4) as u32).to_be_bytes());
    for i in 0..MAX_REQUESTS {
        if Instant::now() >= deadline {
            break;
        }
        match s.read_exact(&mut len).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io("read")(e)),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_REQUEST_BYTES {
            return Err(BenchError::io(
                "floor server read",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("request of {n} bytes"),
                ),
            ));
        }
        s.read_exact(&mut body[..n]).await.map_err(io("read"))?;
        if let Some(d) = &disk {
            d.write(&body[..n]).await?;
        }
        resp[4..12].copy_from_slice(&i.to_be_bytes());
        s.write_all(&resp).await.map_err(io("write"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_phases_serve_requests_and_leave_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = FloorConfig {
            dir: dir.path().to_path_buf(),
            cpu: 0,
            phase: Duration::from_millis(200),
            connections: 2,
            request_bytes: 10_240,
        };
        let rows = measure(&cfg).expect("floor runs");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].phase, "echo");
        assert_eq!(rows[1].phase, "durable");
        for r in &rows {
            assert!(r.requests > 0, "no requests: {r:?}");
            assert_eq!(r.round_trip_us.count, r.requests, "{r:?}");
            assert!(r.server_cpu_us_per_request > 0.0, "{r:?}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read temp dir")
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
    }
}
