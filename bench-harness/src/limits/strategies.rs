//! Durable write strategies, side by side on the machine's own disk: what a
//! durable append costs in latency and in CPU, for each way the broker
//! could lay out and sync a segment (issue 13: "choose by measurement").
//!
//! Layouts (how the blocks under the write are prepared):
//! - `extend`: blocks reserved ahead with fallocate KEEP_SIZE in 1 MiB
//!   steps, so every append still moves the file's size (the broker's
//!   layout before issue 13). An extending O_DIRECT write cannot complete
//!   inline in io_uring: the kernel hands it to an io-wq worker thread.
//! - `fallocated`: the whole region fallocated with the size set, so each
//!   append overwrites an unwritten extent (the file system converts it to
//!   written at completion, and the next sync commits that conversion).
//! - `prezeroed`: the region written with zeros and synced up front, so an
//!   append is a pure overwrite of written blocks (no metadata to commit).
//!
//! Syncs: `fdatasync` after each write (one more io_uring op, always run by
//! a worker thread), or the file opened O_DSYNC so the write itself is
//! durable when it completes (FUA or a flush issued by the kernel).
//!
//! Each strategy runs for a fixed time with one write in flight (the
//! least a durable produce costs). CPU is read twice: this process
//! (getrusage, which counts its io-wq worker threads) and the whole
//! machine (/proc/stat, which also counts kernel workers doing the
//! conversion or the flush for us), both per write.
//!
//! Invariants: every temporary file is removed on every path; the
//! preparation (fallocate, zeroing) is outside the timed loop.

use std::path::Path;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use serde::{Deserialize, Serialize};

use super::{io_err, open_temp_with, SyncLatency, Usage, PREALLOC_STEP_BYTES};
use crate::error::BenchError;
use crate::stats::{micros, new_histogram, record};

/// Size of each zeroing write of the `prezeroed` layout, in bytes.
pub(super) const ZERO_WRITE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Extend,
    Fallocated,
    Prezeroed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    Fdatasync,
    ODsync,
}

const STRATEGIES: [(Layout, SyncMode); 6] = [
    (Layout::Extend, SyncMode::Fdatasync),
    (Layout::Fallocated, SyncMode::Fdatasync),
    (Layout::Prezeroed, SyncMode::Fdatasync),
    (Layout::Extend, SyncMode::ODsync),
    (Layout::Fallocated, SyncMode::ODsync),
    (Layout::Prezeroed, SyncMode::ODsync),
];

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Extend => "extend",
            Layout::Fallocated => "fallocated",
            Layout::Prezeroed => "prezeroed",
        }
    }
}

impl SyncMode {
    fn name(self) -> &'static str {
        match self {
            SyncMode::Fdatasync => "write+fdatasync",
            SyncMode::ODsync => "O_DSYNC write",
        }
    }
}

/// One strategy's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteStrategy {
    /// `extend`, `fallocated` or `prezeroed`.
    pub layout: String,
    /// `write+fdatasync` or `O_DSYNC write`.
    pub sync: String,
    pub write_bytes: u64,
    /// A durable write (write and its sync), µs.
    pub durable_write_us: SyncLatency,
    /// This process's CPU (user + system, io-wq workers included) per
    /// durable write, µs.
    pub process_cpu_us_per_write: f64,
    /// The whole machine's busy CPU per durable write, µs (includes kernel
    /// workers that run on our behalf, and anything else running).
    pub machine_cpu_us_per_write: f64,
    /// Context switches of this process (voluntary + involuntary, all its
    /// threads) per durable write.
    pub context_switches_per_write: f64,
}

/// CPU counters at one moment.
struct CpuMark {
    process_us: f64,
    switches: f64,
    machine_busy_us: Option<f64>,
}

impl CpuMark {
    fn now() -> CpuMark {
        // A failed getrusage reads as zero (as before): the figures show it.
        let u = Usage::now(libc::RUSAGE_SELF).unwrap_or_default();
        CpuMark {
            process_us: u.cpu_us,
            switches: u.switches,
            machine_busy_us: machine_busy_us(),
        }
    }
}

/// Busy time of all CPUs since boot (/proc/stat: everything but idle and
/// iowait), µs.
fn machine_busy_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: f64 = v.iter().take(8).sum();
    let busy = total - v[3] - v[4];
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(busy / hz * 1e6)
}

/// Measures every strategy for `per_strategy` with `block`-byte writes.
pub async fn measure(
    dir: &Path,
    block: usize,
    per_strategy: Duration,
    max_writes: u64,
) -> Result<Vec<WriteStrategy>, BenchError> {
    let mut out = Vec::with_capacity(STRATEGIES.len());
    for (layout, sync) in STRATEGIES {
        out.push(measure_one(dir, layout, sync, block, per_strategy, max_writes).await?);
    }
    Ok(out)
}

async fn measure_one(
    dir: &Path,
    layout: Layout,
    sync: SyncMode,
    block: usize,
    per_strategy: Duration,
    max_writes: u64,
) -> Result<WriteStrategy, BenchError> {
    let name = format!("strategy-{}", layout.name());
    let (file, guard) = open_temp_with(dir, &name, sync == SyncMode::ODsync).await?;
    let path = guard.0.clone();
    let region = max_writes * block as u64;
    match layout {
        Layout::Extend => {}
        Layout::Fallocated => file
            .pre_allocate(region, false)
            .await
            .map_err(|e| io_err("fallocate", &path, e))?,
        Layout::Prezeroed => prezero(&file, &path, region).await?,
    }
    let mut hist = new_histogram();
    let mut reserved = 0u64;
    let mut writes = 0u64;
    let before = CpuMark::now();
    let t0 = Instant::now();
    while writes < max_writes && t0.elapsed() < per_strategy {
        let pos = writes * block as u64;
        if layout == Layout::Extend && pos + block as u64 > reserved {
            reserved += PREALLOC_STEP_BYTES;
            let _ = file.pre_allocate(reserved, true).await;
        }
        let mut buf = file.alloc_dma_buffer(block);
        buf.as_bytes_mut().fill(writes as u8 | 1);
        let w0 = Instant::now();
        file.write_at(buf, pos)
            .await
            .map_err(|e| io_err("write", &path, e))?;
        if sync == SyncMode::Fdatasync {
            file.fdatasync()
                .await
                .map_err(|e| io_err("fdatasync", &path, e))?;
        }
        record(&mut hist, micros(w0.elapsed()));
        writes += 1;
    }
    let after = CpuMark::now();
    let _ = file.close().await;
    drop(guard);
    let n = writes.max(1) as f64;
    let per = |v: f64| (v / n * 10.0).round() / 10.0;
    Ok(WriteStrategy {
        layout: layout.name().into(),
        sync: sync.name().into(),
        write_bytes: block as u64,
        durable_write_us: SyncLatency::of(&hist),
        process_cpu_us_per_write: per(after.process_us - before.process_us),
        machine_cpu_us_per_write: match (after.machine_busy_us, before.machine_busy_us) {
            (Some(a), Some(b)) => per(a - b),
            _ => 0.0,
        },
        context_switches_per_write: per(after.switches - before.switches),
    })
}

/// The strategies as table lines.
pub fn table(rows: &[WriteStrategy]) -> String {
    let mut s = String::new();
    if let Some(r) = rows.first() {
        s.push_str(&format!(
            "durable {} KiB write strategies (one in flight; µs; CPU per write):\n",
            r.write_bytes >> 10
        ));
    }
    for r in rows {
        s.push_str(&format!(
            "  {:<10} {:<15} p50 {:>6} p99 {:>6}  process {:>6.1}  machine {:>6.1}  switches {:>4.1}  ({} writes)\n",
            r.layout,
            r.sync,
            r.durable_write_us.p50,
            r.durable_write_us.p99,
            r.process_cpu_us_per_write,
            r.machine_cpu_us_per_write,
            r.context_switches_per_write,
            r.durable_write_us.count,
        ));
    }
    s
}

/// Writes zeros over `[0, region)` of `file` in [`ZERO_WRITE_BYTES`] writes
/// and syncs, so later writes there are pure overwrites (the `prezeroed`
/// layout; also the request floor's file). Outside every timed part.
pub(super) async fn prezero(file: &DmaFile, path: &Path, region: u64) -> Result<(), BenchError> {
    let mut pos = 0;
    while pos < region {
        let n = ZERO_WRITE_BYTES.min((region - pos) as usize);
        let mut buf = file.alloc_dma_buffer(n);
        buf.as_bytes_mut().fill(0);
        file.write_at(buf, pos)
            .await
            .map_err(|e| io_err("write zeros", path, e))?;
        pos += n as u64;
    }
    file.fdatasync()
        .await
        .map_err(|e| io_err("fdatasync", path, e))
}
