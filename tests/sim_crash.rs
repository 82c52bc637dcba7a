//! The simulated-disk crash test: appends, crashes and recovers a real
//! `Partition` (writer, group commit, segment rolls, delete-records and its
//! log-start checkpoint, retention deletes) thousands of times on
//! `corelog::io::SimDisk`, which loses every write and directory entry not
//! covered by a completed fsync, tears unsynced writes at page granularity,
//! fails fsyncs and fills up, all from a seed. After every crash the partition
//! is reopened on what survived and checked:
//! - every batch whose append was acknowledged (flush=always) is there,
//!   byte-identical, at its offset;
//! - every batch a fetch returned before the crash is still there;
//! - offsets are contiguous from the log start to the high watermark, and
//!   every batch served is one that was appended at that offset;
//! - an acknowledged delete-records is not undone, and the log start never
//!   passes what was requested;
//! - the reopened partition accepts appends;
//! - idempotent producers (half the batches carry a producer id and
//!   sequence): the producer state was rebuilt from the snapshots and the
//!   log, so a retry of each of a producer's last 5 stored batches is a
//!   duplicate answered with its original offset and not written again.
//!
//! `CORELOG_SIM_SEED=N` runs only seed N (printed on failure);
//! `CORELOG_SIM_ITERATIONS=N` sets the number of crash cycles (default
//! 5,000) for a soak. The `*_is_caught` tests show the checker failing when
//! one fsync is taken away: a test that cannot fail proves nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use corelog::config::{FlushPolicy, RecoveryScan, TopicConfig};
use corelog::io::{Clock, Disk, Io, SimDisk};
use corelog::partition::cache::BatchCache;
use corelog::partition::{Partition, PartitionError, PartitionLimits};
use corelog::protocol::batch::{self, BatchBuilder};
use corelog::protocol::TopicPartition;

/// Crash cycles in the default run (debug build: well under a minute).
const DEFAULT_CYCLES: u64 = 5_000;
/// Crash cycles on one disk before starting over on a fresh one (bounds
/// the log each check reads).
const CYCLES_PER_LIFE: u64 = 25;
/// Most time one await of the workload may take before the test calls it
/// a hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const LIMITS: PartitionLimits = PartitionLimits {
    max_batch_bytes: 1 << 20,
    max_decompressed_batch_bytes: 4 << 20,
    retention_check_interval_ms: 3_600_000,
    recovery_scan: RecoveryScan::Active,
    producer_id_expiration_ms: 86_400_000,
};

/// Test-only ways to break the fsync discipline.
#[derive(Clone, Copy, Default)]
struct Sabotage {
    /// Every data fdatasync reports success without syncing.
    skip_fsyncs: bool,
    /// Directory fsyncs do nothing.
    ignore_dir_syncs: bool,
}

/// What the history so far promises about the log.
#[derive(Default)]
struct Model {
    /// Base offset → the batch as stored (base offset stamped): acknowledged
    /// appends and batches a fetch returned.
    promised: BTreeMap<u64, Bytes>,
    /// Base offset → batches appended in the current cycle and not (yet)
    /// acknowledged: they may or may not survive.
    maybe: BTreeMap<u64, Vec<Bytes>>,
    /// Largest log start an acknowledged delete-records asked for.
    log_start_floor: u64,
    /// Largest log start ever asked for.
    log_start_ceiling: u64,
    /// The idempotent producer of this cycle and its next sequence; `None`
    /// after a failed append (its state is unknown until the next recovery).
    producer: Option<(i64, i32)>,
    /// Largest producer id used so far.
    max_producer_id: i64,
    /// Retries recognised as duplicates after a recovery.
    duplicates: u64,
}

fn stamped(b: &Bytes, base: u64) -> Bytes {
    let mut v = b.to_vec();
    batch::set_base_offset(&mut v, base);
    Bytes::from(v)
}

fn make_batch(rng: &mut StdRng, tag: u64) -> Bytes {
    make_batch_as(rng, tag, None).0
}

/// A batch, idempotent (producer id, epoch 0, base sequence) if asked;
/// also its record count.
fn make_batch_as(rng: &mut StdRng, tag: u64, producer: Option<(i64, i32)>) -> (Bytes, u32) {
    let mut b = BatchBuilder::new();
    if let Some((pid, seq)) = producer {
        b.set_producer(pid, 0, seq);
    }
    let n = rng.gen_range(1..=6);
    let big = rng.gen_bool(0.2);
    for i in 0..n {
        let len = if big {
            rng.gen_range(1_000..9_000)
        } else {
            rng.gen_range(1..300)
        };
        let mut v = format!("{tag}:{i}:").into_bytes();
        v.resize(len.max(v.len()), (tag % 251) as u8);
        b.push(1_000 + (tag % 1_000_000) as i64, None, Some(&v), &[]);
    }
    (b.finish(), n)
}

fn topic_config(rng: &mut StdRng) -> TopicConfig {
    TopicConfig {
        segment_bytes: rng.gen_range(8 * 1024..64 * 1024),
        segment_ms: 60_000,
        index_interval_bytes: 1024,
        flush: FlushPolicy::ALWAYS,
        retention_ms: u64::MAX / 4,
        retention_bytes: None,
    }
}

/// Awaits `f`, failing (not hanging) after [`STEP_TIMEOUT`].
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> Result<T, String> {
    let timeout = async {
        corelog::timer::sleep(STEP_TIMEOUT).await;
        None
    };
    futures_lite::future::or(async { Some(f.await) }, timeout)
        .await
        .ok_or_else(|| format!("{what} did not finish within {STEP_TIMEOUT:?}"))
}

async fn open(
    disk: &Disk,
    clock: &Clock,
    dir: &Path,
    config: &TopicConfig,
    sabotage: Sabotage,
) -> Result<Rc<Partition>, String> {
    let io = Io::new(disk.clone(), clock.clone());
    if sabotage.skip_fsyncs {
        io.faults.skip_fsyncs.set(u32::MAX);
    }
    let cache = BatchCache::new(1 << 20);
    let p = bounded(
        "open",
        Partition::open_on(
            io,
            TopicPartition::new("t", 0),
            dir.to_path_buf(),
            config.clone(),
            LIMITS,
            &cache,
        ),
    )
    .await?
    .map_err(|e| format!("reopen failed: {e}"))?;
    Ok(p)
}

/// Every batch from the log start to the high watermark, in order.
async fn read_all(p: &Partition) -> Result<Vec<(u64, Bytes)>, String> {
    let mut out = Vec::new();
    let mut next = p.log_start_offset();
    let hw = p.high_watermark();
    let mut rounds = 0;
    while next < hw {
        rounds += 1;
        if rounds > 100_000 {
            return Err("read_all does not progress".into());
        }
        let d = bounded("fetch", p.fetch(next, 64 * 1024))
            .await?
            .map_err(|e| format!("fetch at {next} after reopen: {e}"))?;
        if d.records.is_empty() {
            return Err(format!(
                "empty fetch at {next} below the high watermark {hw}"
            ));
        }
        for item in batch::batches(&d.records.to_bytes()) {
            let (h, b) = item.map_err(|e| format!("fetched batch does not parse: {e}"))?;
            batch::validate(b).map_err(|e| format!("fetched batch invalid: {e}"))?;
            if out.is_empty() {
                if h.base_offset > next || h.next_offset() <= next {
                    return Err(format!(
                        "first batch [{}, {}) does not hold the log start {next}",
                        h.base_offset,
                        h.next_offset()
                    ));
                }
            } else if h.base_offset != next {
                return Err(format!(
                    "offsets not contiguous: batch at {} where {next} was expected",
                    h.base_offset
                ));
            }
            out.push((h.base_offset, Bytes::copy_from_slice(b)));
            next = h.next_offset();
        }
    }
    if next != hw {
        return Err(format!("read up to {next}, high watermark {hw}"));
    }
    Ok(out)
}

/// Checks a freshly reopened partition against the model, then forgets
/// what the history no longer promises.
async fn check(p: &Rc<Partition>, m: &mut Model) -> Result<(), String> {
    let start = p.log_start_offset();
    if start < m.log_start_floor {
        return Err(format!(
            "log start {start} is below an acknowledged delete-records to {}",
            m.log_start_floor
        ));
    }
    // Segments are deleted only below the log start, and the checkpoint
    // only ever holds a requested value: the log start never passes what
    // delete-records asked for.
    if start > m.log_start_ceiling {
        return Err(format!(
            "log start {start} passed every delete-records request ({})",
            m.log_start_ceiling
        ));
    }
    let all = read_all(p).await?;
    let stored: BTreeMap<u64, Bytes> = all.into_iter().collect();
    for (base, want) in m.promised.range(start..) {
        match stored.get(base) {
            Some(got) if got == want => {}
            Some(_) => return Err(format!("batch at offset {base} changed across the crash")),
            None => {
                return Err(format!(
                    "acknowledged or served batch at offset {base} is missing after the crash \
                     (log start {start}, high watermark {})",
                    p.high_watermark()
                ))
            }
        }
    }
    for (base, got) in &stored {
        let known = m.promised.get(base).is_some_and(|b| b == got)
            || m.maybe
                .get(base)
                .is_some_and(|v| v.iter().any(|b| b == got));
        if !known && *base >= start {
            return Err(format!(
                "batch served at offset {base} was never appended there"
            ));
        }
    }
    check_producers(p, m, &stored).await?;
    // What survived is now what the log holds: it is promised from here on.
    m.promised = stored;
    m.maybe.clear();
    Ok(())
}

/// Every producer's last (up to) 5 stored batches are duplicates now: a
/// retry is answered with the original offsets and writes nothing. Then
/// picks the producer (and next sequence) the next workload continues.
async fn check_producers(
    p: &Rc<Partition>,
    m: &mut Model,
    stored: &BTreeMap<u64, Bytes>,
) -> Result<(), String> {
    let mut by_producer: BTreeMap<i64, Vec<(u64, batch::BatchHeader, Bytes)>> = BTreeMap::new();
    let mut latest: Option<(u64, i64)> = None;
    for (base, b) in stored {
        let h = batch::BatchHeader::parse(b).map_err(|e| format!("stored batch: {e}"))?;
        if h.producer_id >= 0 {
            by_producer
                .entry(h.producer_id)
                .or_default()
                .push((*base, h, b.clone()));
            latest = Some((*base, h.producer_id));
        }
    }
    let end = p.log_end_offset();
    for (pid, batches) in &by_producer {
        for (base, h, b) in batches.iter().rev().take(5) {
            let t = p
                .append(b.clone())
                .map_err(|e| format!("retry of producer {pid}'s batch at {base} refused: {e}"))?;
            if t.result().base_offset != *base || t.result().last_offset != h.last_offset() {
                return Err(format!(
                    "retry of producer {pid}'s batch at {base} answered {:?}, not its original offsets",
                    t.result()
                ));
            }
            bounded("duplicate", t.wait())
                .await?
                .map_err(|e| format!("duplicate of a stored batch failed: {e}"))?;
            if p.log_end_offset() != end {
                return Err(format!(
                    "retry of producer {pid}'s batch at {base} was written again"
                ));
            }
            m.duplicates += 1;
        }
    }
    m.producer = match latest.and_then(|(_, pid)| by_producer.get(&pid)?.last().map(|x| (pid, x.1)))
    {
        Some((pid, h)) => Some((pid, h.base_sequence + h.last_offset_delta as i32 + 1)),
        None => {
            m.max_producer_id += 1;
            Some((m.max_producer_id, 0))
        }
    };
    if let Some((pid, _)) = m.producer {
        m.max_producer_id = m.max_producer_id.max(pid);
    }
    Ok(())
}

/// One cycle's workload until the disk dies or the steps run out.
async fn workload(
    rng: &mut StdRng,
    p: &Rc<Partition>,
    sim: &SimDisk,
    clock: &Clock,
    m: &mut Model,
    tag: &mut u64,
) -> Result<(), String> {
    let steps = rng.gen_range(1..12);
    for _ in 0..steps {
        if sim.is_dead() {
            return Ok(());
        }
        match rng.gen_range(0..10) {
            0..=5 => {
                let n = rng.gen_range(1..8);
                let mut tickets = Vec::new();
                for _ in 0..n {
                    *tag += 1;
                    let producer = m.producer.filter(|_| rng.gen_bool(0.5));
                    let (b, records) = make_batch_as(rng, *tag, producer);
                    if let Some((pid, seq)) = producer {
                        m.producer = Some((pid, seq + records as i32));
                    }
                    match p.append(b.clone()) {
                        Ok(t) => {
                            let base = t.result().base_offset;
                            m.maybe.entry(base).or_default().push(stamped(&b, base));
                            tickets.push((t, b));
                        }
                        Err(e) => return Err(format!("append refused: {e}")),
                    }
                }
                for (t, b) in tickets {
                    match bounded("append", t.wait()).await? {
                        Ok(r) => {
                            m.promised.insert(r.base_offset, stamped(&b, r.base_offset));
                        }
                        // The producer's sequence is unknown until recovery.
                        Err(_) => m.producer = None,
                    }
                }
            }
            6 | 7 => {
                let (start, hw) = (p.log_start_offset(), p.high_watermark());
                if hw > start {
                    let at = rng.gen_range(start..hw);
                    if let Ok(Ok(d)) = bounded("fetch", p.fetch(at, 16 * 1024)).await {
                        for item in batch::batches(&d.records.to_bytes()) {
                            let (h, b) = item.map_err(|e| format!("fetch: {e}"))?;
                            if h.next_offset() > d.high_watermark {
                                return Err(format!(
                                    "fetch served offset {} at or above the high watermark {}",
                                    h.last_offset(),
                                    d.high_watermark
                                ));
                            }
                            m.promised.insert(h.base_offset, Bytes::copy_from_slice(b));
                        }
                    }
                }
            }
            8 => {
                let (start, hw) = (p.log_start_offset(), p.high_watermark());
                let before = rng.gen_range(start..=hw);
                m.log_start_ceiling = m.log_start_ceiling.max(before);
                match bounded("delete_records", p.delete_records(before)).await? {
                    Ok(_) => m.log_start_floor = m.log_start_floor.max(before),
                    Err(PartitionError::OffsetOutOfRange { .. }) => {
                        return Err(format!(
                            "delete_records({before}) out of range [{start}, {hw}]"
                        ))
                    }
                    Err(_) => {}
                }
            }
            _ => {
                // Age the active segment past segment_ms: the next append rolls.
                clock.advance(Duration::from_secs(61));
            }
        }
    }
    Ok(())
}

/// What one life exercised (printed, so a run that exercises nothing shows).
#[derive(Default, Debug)]
struct LifeStats {
    acked: u64,
    checked: u64,
    crashes_mid_workload: u64,
    failed_fsyncs: u64,
    enospc: u64,
    dir_syncs: u64,
    duplicates: u64,
}

/// One disk's life: `cycles` crash cycles from an empty disk.
async fn run_life(seed: u64, cycles: u64, sabotage: Sabotage) -> Result<LifeStats, String> {
    let mut stats = LifeStats::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut disk = Disk::sim(seed);
    let clock = Clock::sim(1_700_000_000_000);
    let dir = PathBuf::from("/data/topics/t/0");
    let config = topic_config(&mut rng);
    let mut m = Model::default();
    let mut tag = 0u64;
    for cycle in 0..cycles {
        let sim = disk.as_sim().expect("sim disk").clone();
        sim.set_ignore_dir_syncs(sabotage.ignore_dir_syncs);
        sim.set_torn_crashes(rng.gen_bool(0.7));
        // Recovery runs on a healthy disk; the faults start with the workload.
        sim.set_capacity_bytes(None);
        sim.set_fsync_failure_per_mille(0);
        let p = open(&disk, &clock, &dir, &config, sabotage)
            .await
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        check(&p, &mut m)
            .await
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        stats.checked += m.promised.len() as u64;
        let acked_before = m.promised.len();
        sim.set_fsync_failure_per_mille(if rng.gen_bool(0.2) { 100 } else { 0 });
        sim.set_capacity_bytes(if rng.gen_bool(0.1) {
            Some(rng.gen_range(64 * 1024..512 * 1024))
        } else {
            None
        });
        if rng.gen_bool(0.9) {
            sim.set_crash_after_ops(Some(rng.gen_range(0..60)));
        }
        workload(&mut rng, &p, &sim, &clock, &mut m, &mut tag)
            .await
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        stats.acked += m.promised.len().saturating_sub(acked_before) as u64;
        stats.crashes_mid_workload += sim.is_dead() as u64;
        let s = sim.stats();
        (stats.failed_fsyncs, stats.enospc) = (s.failed_fsyncs, s.enospc);
        stats.dir_syncs = s.dir_syncs;
        stats.duplicates = m.duplicates;
        // Power fails (if it has not already), then the old partition stops.
        disk = sim.crash();
        let _ = bounded("close", p.close()).await?;
    }
    // The survivor still takes appends.
    if let Some(sim) = disk.as_sim() {
        sim.set_capacity_bytes(None);
        sim.set_fsync_failure_per_mille(0);
    }
    let p = open(&disk, &clock, &dir, &config, Sabotage::default()).await?;
    check(&p, &mut m).await?;
    let b = make_batch(&mut rng, u64::MAX / 2);
    let end = p.log_end_offset();
    let r = bounded(
        "final append",
        p.append(b).map_err(|e| e.to_string())?.wait(),
    )
    .await?
    .map_err(|e| format!("the recovered partition refuses appends: {e}"))?;
    if r.base_offset != end {
        return Err(format!(
            "final append landed at {}, log end was {end}",
            r.base_offset
        ));
    }
    p.close().await.map_err(|e| e.to_string())?;
    Ok(stats)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(4 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

#[test]
fn acknowledged_batches_survive_simulated_crashes() {
    let only = env_u64("CORELOG_SIM_SEED");
    let cycles = env_u64("CORELOG_SIM_ITERATIONS").unwrap_or(DEFAULT_CYCLES);
    run(move || async move {
        let seeds: Vec<u64> = match only {
            Some(s) => vec![s],
            None => (0..cycles.div_ceil(CYCLES_PER_LIFE)).collect(),
        };
        let mut total = LifeStats::default();
        for seed in seeds {
            match run_life(seed, CYCLES_PER_LIFE, Sabotage::default()).await {
                Ok(s) => {
                    total.acked += s.acked;
                    total.checked += s.checked;
                    total.crashes_mid_workload += s.crashes_mid_workload;
                    total.failed_fsyncs += s.failed_fsyncs;
                    total.enospc += s.enospc;
                    total.dir_syncs += s.dir_syncs;
                    total.duplicates += s.duplicates;
                }
                Err(e) => panic!(
                    "simulated crash test failed: seed {seed}: {e}\n\
                     (reproduce with CORELOG_SIM_SEED={seed})"
                ),
            }
        }
        println!("simulated crashes: {total:?}");
        assert!(
            total.acked > 0 && total.crashes_mid_workload > 0 && total.duplicates > 0,
            "{total:?}"
        );
    });
}

/// Runs lives with `sabotage` until the checker complains; it must.
fn sabotage_is_caught(sabotage: Sabotage) {
    run(move || async move {
        for seed in 0..20 {
            if let Err(e) = run_life(seed, CYCLES_PER_LIFE, sabotage).await {
                println!("caught (seed {seed}): {e}");
                return;
            }
        }
        panic!("the crash test did not notice the sabotaged fsyncs");
    });
}

#[test]
fn a_skipped_data_fsync_is_caught() {
    sabotage_is_caught(Sabotage {
        skip_fsyncs: true,
        ..Sabotage::default()
    });
}

#[test]
fn a_skipped_directory_fsync_is_caught() {
    sabotage_is_caught(Sabotage {
        ignore_dir_syncs: true,
        ..Sabotage::default()
    });
}
