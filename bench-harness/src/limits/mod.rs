//! `corelog-bench limits`: what the machine allows, to compare runs against.
//!
//! - Disk: sequential write bandwidth with glommio `DmaFile` (O_DIRECT over
//!   io_uring, the broker's own write path, see `corelog::storage::file`):
//!   large aligned writes (1 MiB by default) into a preallocated file, with
//!   `queue_depth` writes in flight (the broker has one writer per
//!   partition) and once more with one in flight; the timing includes the
//!   final fdatasync, so the data is durable when the clock stops.
//! - Durable write bandwidth (a diagnostic, not the bandwidth targets are
//!   measured against): `queue_depth` files written in parallel, each in a
//!   loop of "preallocate, write one block, fdatasync", i.e. the broker's
//!   flush=always pattern when every group write is one block per partition.
//! - fdatasync latency: rounds of "append one 4 KiB page, fdatasync" (the
//!   least a durable produce costs), preallocated in 1 MiB steps as the
//!   broker does; `fdatasync_us` times the sync alone, `append_fdatasync_us`
//!   both.
//! - Sequential read bandwidth: the bandwidth test's file read back with
//!   O_DIRECT (never from the page cache), same block size and queue depth:
//!   the ceiling of a catch-up consumer reading data no longer in memory.
//! - Durable write strategies ([`strategies`]): latency and CPU per durable
//!   write for each way of preparing and syncing a segment.
//! - Loopback TCP bandwidth: one connection, 1 MiB writes, for `tcp_s`.
//! - The request floor ([`request_floor`]): CPU per small request of one
//!   glommio executor serving loopback TCP, without and with one durable
//!   write per request (the floor of a produce request).
//!
//! Invariants: the temporary files are removed on every path (a guard);
//! nothing is left in the data dir.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cli::LimitsArgs;
use crate::error::BenchError;
use crate::machine::MachineInfo;
use crate::stats::{micros, new_histogram, record};

mod request_floor;
mod strategies;

pub use request_floor::RequestFloor;
pub use strategies::WriteStrategy;

/// Page size of the fdatasync test, in bytes.
const SYNC_PAGE_BYTES: usize = 4096;
/// Preallocation step of the fdatasync test (as the broker), in bytes.
const PREALLOC_STEP_BYTES: u64 = 1 << 20;
/// Size of each loopback TCP write, in bytes.
const TCP_WRITE_BYTES: usize = 1 << 20;
/// Most writes of one write strategy (bounds its file: 64 MiB of 4 KiB).
const MAX_STRATEGY_WRITES: u64 = 16_384;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncLatency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl SyncLatency {
    fn of(h: &Histogram<u64>) -> SyncLatency {
        SyncLatency {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsResult {
    pub tool: String,
    pub version: String,
    pub data_dir: PathBuf,
    /// Sequential O_DIRECT write bandwidth with `disk_write_queue_depth`
    /// writes in flight, MB/s (10^6 bytes).
    pub disk_write_mb_s: f64,
    /// The same with one write in flight.
    pub disk_write_qd1_mb_s: f64,
    /// Sequential O_DIRECT read of the same file, same block size and
    /// queue depth, MB/s.
    #[serde(default)]
    pub disk_read_mb_s: f64,
    pub disk_write_bytes: u64,
    pub disk_write_block_bytes: u64,
    pub disk_write_queue_depth: u64,
    /// `disk_write_queue_depth` files in parallel, each writing one block
    /// then fdatasync in a loop, MB/s (diagnostic).
    pub durable_write_mb_s: f64,
    /// fdatasync after a 4 KiB append, µs.
    pub fdatasync_us: SyncLatency,
    /// The 4 KiB append and its fdatasync together, µs.
    pub append_fdatasync_us: SyncLatency,
    /// One loopback TCP connection, MB/s.
    pub loopback_tcp_mb_s: f64,
    /// Durable write strategies side by side (empty if skipped).
    #[serde(default)]
    pub write_strategies: Vec<WriteStrategy>,
    /// CPU per request of one executor serving loopback requests, `echo`
    /// then `durable` (empty if skipped or in older results).
    #[serde(default)]
    pub request_floor: Vec<RequestFloor>,
    pub machine: MachineInfo,
}

impl LimitsResult {
    pub fn table(&self) -> String {
        format!(
            "corelog-bench limits on {} ({})\n\
             disk write ({} MiB, {} KiB writes, {} in flight): {:>9.1} MB/s\n\
             disk write (one in flight):                 {:>9.1} MB/s\n\
             disk read (same file, O_DIRECT):            {:>9.1} MB/s\n\
             durable write ({} files, write+fdatasync each): {:>9.1} MB/s\n\
             fdatasync after 4 KiB append (µs): p50 {} p99 {} max {} ({} rounds)\n\
             append + fdatasync (µs):           p50 {} p99 {} max {}\n\
             loopback TCP:                               {:>9.1} MB/s\n{}{}",
            self.data_dir.display(),
            self.machine.summary(),
            self.disk_write_bytes >> 20,
            self.disk_write_block_bytes >> 10,
            self.disk_write_queue_depth,
            self.disk_write_mb_s,
            self.disk_write_qd1_mb_s,
            self.disk_read_mb_s,
            self.disk_write_queue_depth,
            self.durable_write_mb_s,
            self.fdatasync_us.p50,
            self.fdatasync_us.p99,
            self.fdatasync_us.max,
            self.fdatasync_us.count,
            self.append_fdatasync_us.p50,
            self.append_fdatasync_us.p99,
            self.append_fdatasync_us.max,
            self.loopback_tcp_mb_s,
            strategies::table(&self.write_strategies),
            request_floor::table(&self.request_floor),
        )
    }

    /// The durable request floor, if measured.
    pub fn durable_floor(&self) -> Option<&RequestFloor> {
        self.request_floor
            .iter()
            .find(|r| r.phase == "durable" && r.requests > 0)
    }
}

pub fn run(args: &LimitsArgs) -> Result<LimitsResult, BenchError> {
    if !args.tcp_s.is_finite() || args.tcp_s <= 0.0 || args.tcp_s > 600.0 {
        return Err(BenchError::Workload(format!(
            "--tcp-s {} must be within (0, 600]",
            args.tcp_s
        )));
    }
    if !args.block_kib.is_multiple_of(4) {
        return Err(BenchError::Workload(format!(
            "--block-kib {} must be a multiple of 4 (O_DIRECT alignment)",
            args.block_kib
        )));
    }
    if !args.strategy_block_kib.is_multiple_of(4) {
        return Err(BenchError::Workload(format!(
            "--strategy-block-kib {} must be a multiple of 4 (O_DIRECT alignment)",
            args.strategy_block_kib
        )));
    }
    let meta = std::fs::metadata(&args.data_dir).map_err(|source| BenchError::Read {
        path: args.data_dir.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(BenchError::Workload(format!(
            "--data-dir {} is not a directory",
            args.data_dir.display()
        )));
    }
    let dir = std::fs::canonicalize(&args.data_dir).map_err(|source| BenchError::Read {
        path: args.data_dir.clone(),
        source,
    })?;
    let block = args.block_kib * 1024;
    let blocks = (args.write_mib * 1024 * 1024).div_ceil(block).max(1);
    let total = blocks * block;
    let qd = args.queue_depth;
    let fsyncs = args.fsyncs;
    let strategy_time = Duration::from_millis(args.strategy_ms);
    let strategy_block = (args.strategy_block_kib * 1024) as usize;
    let placement = match args.cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let dir2 = dir.clone();
    let disk = LocalExecutorBuilder::new(placement)
        .name("bench-limits")
        .io_memory(((qd * block) as usize).saturating_add(4 << 20))
        .spawn(move || async move {
            let (qd_n, written) = disk_write(&dir2, blocks, block, qd).await?;
            let read = disk_read(written, blocks, block, qd).await?;
            let qd_1 = if qd > 1 {
                disk_write(&dir2, blocks, block, 1).await?.0
            } else {
                qd_n
            };
            let durable = durable_write(&dir2, blocks, block, qd).await?;
            let (sync, both) = sync_latency(&dir2, fsyncs).await?;
            let strategies = if strategy_time.is_zero() {
                Vec::new()
            } else {
                strategies::measure(&dir2, strategy_block, strategy_time, MAX_STRATEGY_WRITES)
                    .await?
            };
            Ok::<_, BenchError>((qd_n, qd_1, read, durable, sync, both, strategies))
        })
        .map_err(|e| BenchError::Executor(format!("cannot start the limits executor: {e}")))?
        .join()
        .map_err(|e| BenchError::Executor(format!("limits executor failed: {e}")))?;
    let (qd_n, qd_1, read, durable, sync, both, write_strategies) = disk?;
    let tcp = loopback_tcp(Duration::from_secs_f64(args.tcp_s))?;
    let request_floor = if args.floor_ms == 0 {
        Vec::new()
    } else {
        request_floor::measure(&request_floor::FloorConfig {
            dir: dir.clone(),
            cpu: args.cpu.unwrap_or(0),
            phase: Duration::from_millis(args.floor_ms),
            connections: args.floor_connections as usize,
            request_bytes: args.floor_request_bytes as usize,
        })?
    };
    Ok(LimitsResult {
        tool: "corelog-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: dir,
        disk_write_mb_s: round1(qd_n),
        disk_write_qd1_mb_s: round1(qd_1),
        disk_read_mb_s: round1(read),
        disk_write_bytes: total,
        disk_write_block_bytes: block,
        durable_write_mb_s: round1(durable),
        disk_write_queue_depth: qd,
        fdatasync_us: SyncLatency::of(&sync),
        append_fdatasync_us: SyncLatency::of(&both),
        loopback_tcp_mb_s: round1(tcp),
        write_strategies,
        request_floor,
        machine: MachineInfo::read(),
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Removes the file when dropped (every exit path).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io_err(what: &str, path: &Path, e: impl Into<std::io::Error>) -> BenchError {
    BenchError::io(format!("{what} {}", path.display()), e.into())
}

/// A write of `path` that moved `n` of `want` bytes.
fn short_write(path: &Path, n: usize, want: usize) -> BenchError {
    io_err(
        "write",
        path,
        std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {want} bytes"),
        ),
    )
}

/// CPU time and context switches of a thread or the process (getrusage).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_us: f64,
    switches: f64,
}

impl Usage {
    /// `who`: `RUSAGE_THREAD` (the calling thread) or `RUSAGE_SELF` (the
    /// process, all its threads and io-wq workers).
    fn now(who: libc::c_int) -> Result<Usage, BenchError> {
        // SAFETY: an all-zero rusage is a valid value of the C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage only writes the exclusively borrowed `ru`.
        let rc = unsafe { libc::getrusage(who, &mut ru) };
        if rc != 0 {
            return Err(BenchError::io("getrusage", std::io::Error::last_os_error()));
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
        Ok(Usage {
            cpu_us: tv(ru.ru_utime) + tv(ru.ru_stime),
            switches: (ru.ru_nvcsw + ru.ru_nivcsw) as f64,
        })
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_us: self.cpu_us - before.cpu_us,
            switches: self.switches - before.switches,
        }
    }
}

async fn open_temp(dir: &Path, name: &str) -> Result<(DmaFile, RemoveOnDrop), BenchError> {
    open_temp_with(dir, name, false).await
}

/// [`open_temp`], with O_DSYNC if `dsync` (writes durable on completion).
async fn open_temp_with(
    dir: &Path,
    name: &str,
    dsync: bool,
) -> Result<(DmaFile, RemoveOnDrop), BenchError> {
    let path = dir.join(format!(".corelog-bench-{name}-{}.tmp", std::process::id()));
    let guard = RemoveOnDrop(path.clone());
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(true);
    if dsync {
        opts.custom_flags(libc::O_DSYNC);
    }
    let file = opts
        .dma_open(&path)
        .await
        .map_err(|e| io_err("open (O_DIRECT)", &path, e))?;
    Ok((file, guard))
}

/// Runs `op(i)` for every block index in `0..blocks` with `qd` in flight:
/// each of `qd` workers takes the next index when it finishes one.
async fn each_block<F, Fut>(blocks: u64, qd: u64, op: F) -> Result<(), BenchError>
where
    F: Fn(u64) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + 'static,
{
    let next = Rc::new(Cell::new(0u64));
    let mut workers = Vec::new();
    for _ in 0..qd {
        let (next, op) = (next.clone(), op.clone());
        workers.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= blocks {
                    return Ok::<(), BenchError>(());
                }
                next.set(i + 1);
                op(i).await?;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    Ok(())
}

/// A file written by [`disk_write`], removed when dropped.
struct Written {
    file: Rc<DmaFile>,
    guard: RemoveOnDrop,
}

/// Writes `blocks` blocks of `block` bytes with `qd` in flight; MB/s and
/// the file.
async fn disk_write(
    dir: &Path,
    blocks: u64,
    block: u64,
    qd: u64,
) -> Result<(f64, Written), BenchError> {
    let (file, guard) = open_temp(dir, "disk-write").await?;
    let path = guard.0.clone();
    // As the broker: blocks reserved ahead, size unchanged (keep size).
    let _ = file.pre_allocate(blocks * block, true).await;
    let file = Rc::new(file);
    let t0 = Instant::now();
    let (f, p) = (file.clone(), path.clone());
    each_block(blocks, qd, move |i| {
        let (file, path) = (f.clone(), p.clone());
        async move {
            let mut buf = file.alloc_dma_buffer(block as usize);
            buf.as_bytes_mut().fill(0xa5 ^ (i as u8));
            let n = file
                .write_at(buf, i * block)
                .await
                .map_err(|e| io_err("write", &path, e))?;
            if n as u64 != block {
                return Err(short_write(&path, n, block as usize));
            }
            Ok(())
        }
    })
    .await?;
    file.fdatasync()
        .await
        .map_err(|e| io_err("fdatasync", &path, e))?;
    let secs = t0.elapsed().as_secs_f64();
    let mb_s = (blocks * block) as f64 / secs.max(1e-9) / 1e6;
    Ok((mb_s, Written { file, guard }))
}

/// Reads `written` back sequentially, `block` bytes per read with `qd` in
/// flight (O_DIRECT: from the disk, not the page cache); MB/s.
async fn disk_read(written: Written, blocks: u64, block: u64, qd: u64) -> Result<f64, BenchError> {
    let Written { file, guard } = written;
    let path = guard.0.clone();
    let t0 = Instant::now();
    let (f, p) = (file.clone(), path.clone());
    each_block(blocks, qd, move |i| {
        let (file, path) = (f.clone(), p.clone());
        async move {
            let r = file
                .read_at_aligned(i * block, block as usize)
                .await
                .map_err(|e| io_err("read", &path, e))?;
            if r.len() as u64 != block {
                return Err(BenchError::io(
                    format!("read {}", path.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read: {} of {block} bytes", r.len()),
                    ),
                ));
            }
            Ok(())
        }
    })
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let _ = file.close_rc().await;
    drop(guard);
    Ok((blocks * block) as f64 / secs.max(1e-9) / 1e6)
}

/// `files` files written in parallel, `blocks` blocks in all, each block
/// followed by an fdatasync of its file; MB/s.
async fn durable_write(dir: &Path, blocks: u64, block: u64, files: u64) -> Result<f64, BenchError> {
    let next = Rc::new(Cell::new(0u64));
    let mut opened = Vec::new();
    for i in 0..files {
        opened.push(open_temp(dir, &format!("durable-{i}")).await?);
    }
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for (file, guard) in opened {
        let next = next.clone();
        writers.push(glommio::spawn_local(async move {
            let path = guard.0.clone();
            let mut pos = 0u64;
            let mut reserved = 0u64;
            loop {
                let i = next.get();
                if i >= blocks {
                    break;
                }
                next.set(i + 1);
                while pos + block > reserved {
                    reserved += PREALLOC_STEP_BYTES;
                    let _ = file.pre_allocate(reserved, true).await;
                }
                let mut buf = file.alloc_dma_buffer(block as usize);
                buf.as_bytes_mut().fill(0x3c ^ (i as u8));
                file.write_at(buf, pos)
                    .await
                    .map_err(|e| io_err("write", &path, e))?;
                file.fdatasync()
                    .await
                    .map_err(|e| io_err("fdatasync", &path, e))?;
                pos += block;
            }
            let _ = file.close().await;
            drop(guard);
            Ok::<(), BenchError>(())
        }));
    }
    for w in writers {
        w.await?;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((blocks * block) as f64 / secs.max(1e-9) / 1e6)
}

/// `rounds` of 4 KiB append + fdatasync: (sync alone, append + sync) in µs.
async fn sync_latency(
    dir: &Path,
    rounds: u64,
) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
    let (file, guard) = open_temp(dir, "fdatasync").await?;
    let path = guard.0.clone();
    let mut sync = new_histogram();
    let mut both = new_histogram();
    let mut reserved = 0u64;
    for i in 0..rounds {
        let pos = i * SYNC_PAGE_BYTES as u64;
        if pos + SYNC_PAGE_BYTES as u64 > reserved {
            reserved += PREALLOC_STEP_BYTES;
            let _ = file.pre_allocate(reserved, true).await;
        }
        let mut buf = file.alloc_dma_buffer(SYNC_PAGE_BYTES);
        buf.as_bytes_mut().fill(i as u8);
        let t0 = Instant::now();
        file.write_at(buf, pos)
            .await
            .map_err(|e| io_err("write", &path, e))?;
        let t1 = Instant::now();
        file.fdatasync()
            .await
            .map_err(|e| io_err("fdatasync", &path, e))?;
        let t2 = Instant::now();
        record(&mut sync, micros(t2 - t1));
        record(&mut both, micros(t2 - t0));
    }
    let _ = file.close().await;
    drop(guard);
    Ok((sync, both))
}

/// Streams over one loopback connection for `dur`; MB/s seen by the reader.
fn loopback_tcp(dur: Duration) -> Result<f64, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::io("local address", e))?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; TCP_WRITE_BYTES];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    let mut s = TcpStream::connect(addr).map_err(|e| BenchError::io("connect loopback", e))?;
    let buf = vec![0x5au8; TCP_WRITE_BYTES];
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        s.write_all(&buf)
            .map_err(|e| BenchError::io("write loopback", e))?;
    }
    drop(s);
    let (total, secs) = reader
        .join()
        .map_err(|_| BenchError::Executor("loopback reader thread panicked".into()))?
        .map_err(|e| BenchError::io("read loopback", e))?;
    Ok(total as f64 / secs.as_secs_f64().max(1e-9) / 1e6)
}
