//! Runs a produce / consume / e2e workload: topics, executors, aggregation.
//!
//! Layout: one glommio executor per entry of `--cpus`, each pinned to its
//! CPU (`Placement::Fixed`); producer `i` runs on executor `i % E`, consumer
//! `j` on executor `(producers + j) % E` (so with two CPUs one producer and
//! one consumer get one each). Every executor connects its clients first
//! and reports ready; the main thread then fixes one common start instant
//! (so open-loop schedules and the seconds of every executor line up).
//! Each executor sends one [`Interval`] per second to the main thread,
//! which merges them second by second, prints the progress line, writes
//! the HdrHistogram interval log, and builds the totals.
//!
//! Invariants: every wait is bounded (ready: connect timeout; run:
//! warm-up + duration + drain + request timeout + slack; afterwards the
//! run is aborted and what was measured is reported); the cross-thread
//! state is a few counters in [`RunShared`] (this is the load generator,
//! not the broker's data path).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, UNIX_EPOCH};

use corelog::client::{Admin, ClientConfig, ClientError};
use corelog::protocol::ErrorCode;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::cpu::CpuSampler;
use crate::error::BenchError;
use crate::stats::{Aggregate, Clock, Interval, Percentiles, Recorder};
use crate::workload::{Mode, Workload};
use crate::{consumer_load, producer_load};

/// How long executors may take to connect and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time past the expected end before the run is aborted.
const RUN_SLACK: Duration = Duration::from_secs(30);
/// Delay between "everyone is ready" and the common start.
const START_DELAY: Duration = Duration::from_millis(100);
/// io_uring-registered memory per load-generator executor, in bytes.
const EXECUTOR_IO_MEMORY_BYTES: usize = 4 << 20;

/// A topic and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
}

/// Counters shared by every executor of one run.
#[derive(Debug, Default)]
pub struct RunShared {
    pub producers_running: AtomicU64,
    /// Records acknowledged (added by each producer when it finishes).
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
    pub abort: AtomicBool,
}

/// What a producer or consumer task needs (one per executor).
pub struct RunCtx {
    pub workload: Arc<Workload>,
    pub clock: Clock,
    pub start: Instant,
    /// Producers stop sending here.
    pub end: Instant,
    /// Consumers stop here at the latest.
    pub drain_deadline: Instant,
    pub recorder: Rc<RefCell<Recorder>>,
    pub shared: Arc<RunShared>,
}

/// A consumer's `(topic, partitions)` assignment.
type Assignment = Vec<(String, Vec<u32>)>;

/// The clients one executor runs.
#[derive(Debug, Clone, Default)]
struct ExecPlan {
    producers: Vec<u32>,
    /// Consumer id and its `(topic, partitions)`.
    consumers: Vec<(u32, Assignment)>,
}

enum Msg {
    Ready(usize, Result<(), String>),
    Interval(Box<Interval>),
}

/// What a finished run measured.
pub struct RunOutcome {
    pub aggregate: Aggregate,
    pub topics: Vec<TopicSpec>,
    pub started_at_unix_ms: u64,
    /// Set when the run had to be cut short.
    pub aborted: Option<String>,
}

/// Whole seconds of warm-up (the measured window starts on a tick).
pub fn warmup_whole_s(w: &Workload) -> u64 {
    w.warmup_s.ceil() as u64
}

pub fn run(w: Workload) -> Result<RunOutcome, BenchError> {
    let w = Arc::new(w);
    let topics = setup_topics(&w)?;
    let plans = plan(&w, &topics);
    let clock = Clock::new();
    let shared = Arc::new(RunShared::default());
    shared
        .producers_running
        .store(u64::from(w.producers), Ordering::SeqCst);
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut starts = Vec::new();
    let mut handles = Vec::new();
    for (idx, (cpu, plan)) in w.cpus.iter().zip(plans).enumerate() {
        let (start_tx, start_rx) = mpsc::channel::<Option<Instant>>();
        starts.push(start_tx);
        let (w2, topics2, shared2, tx2) = (w.clone(), topics.clone(), shared.clone(), tx.clone());
        let handle = LocalExecutorBuilder::new(Placement::Fixed(*cpu))
            .name(&format!("bench-{idx}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                executor_main(idx, plan, w2, topics2, clock, shared2, tx2, start_rx).await
            });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                for s in &starts {
                    let _ = s.send(None);
                }
                return Err(BenchError::Executor(format!(
                    "cannot start executor {idx} on CPU {cpu}: {e}"
                )));
            }
        }
    }
    drop(tx);
    // Wait until every executor has connected its clients.
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = 0;
    let mut failure = None;
    while ready < starts.len() && failure.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Msg::Ready(_, Ok(()))) => ready += 1,
            Ok(Msg::Ready(i, Err(e))) => failure = Some(format!("executor {i}: {e}")),
            Ok(Msg::Interval(_)) => {}
            Err(_) => failure = Some(format!("executors not ready within {READY_TIMEOUT:?}")),
        }
    }
    if let Some(f) = failure {
        for s in &starts {
            let _ = s.send(None);
        }
        for h in handles {
            let _ = h.join();
        }
        return Err(BenchError::Executor(f));
    }
    let start = Instant::now() + START_DELAY;
    for s in &starts {
        let _ = s.send(Some(start));
    }
    let started_at_unix_ms = clock.epoch_ns(start) / 1_000_000;
    let (aggregate, aborted) = aggregate(&w, &rx, starts.len(), start, &clock, &shared)?;
    if aborted.is_none() {
        for h in handles {
            if let Err(e) = h.join() {
                return Err(BenchError::Executor(format!("executor failed: {e}")));
            }
        }
    }
    Ok(RunOutcome {
        aggregate,
        topics,
        started_at_unix_ms,
        aborted,
    })
}

/// Creates (or checks) the topics on a short-lived executor; returns their
/// partition counts.
fn setup_topics(w: &Arc<Workload>) -> Result<Vec<TopicSpec>, BenchError> {
    let w2 = w.clone();
    let handle = LocalExecutorBuilder::default()
        .name("bench-setup")
        .io_memory(512 << 10)
        .spawn(move || async move { setup_topics_async(&w2).await })
        .map_err(|e| BenchError::Executor(format!("cannot start the setup executor: {e}")))?;
    handle
        .join()
        .map_err(|e| BenchError::Executor(format!("setup executor failed: {e}")))?
}

async fn setup_topics_async(w: &Workload) -> Result<Vec<TopicSpec>, BenchError> {
    let admin = Admin::connect(ClientConfig {
        bootstrap: w.bootstrap.clone(),
        client_id: "corelog-bench-admin".into(),
        request_timeout_ms: w.request_timeout_ms,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| BenchError::client(format!("connect to {}", w.bootstrap), e))?;
    let configs = w.topic_config_pairs();
    let mut out = Vec::new();
    for name in w.topic_names() {
        if let Some(p) = w.create_partitions {
            match admin.create_topic(&name, p, &configs).await {
                Ok(()) => {}
                Err(ClientError::Broker(e)) if e.code == ErrorCode::TopicAlreadyExists => {
                    if !configs.is_empty() {
                        admin
                            .alter_topic_config(&name, &configs)
                            .await
                            .map_err(|e| BenchError::client(format!("alter topic {name}"), e))?;
                    }
                }
                Err(e) => return Err(BenchError::client(format!("create topic {name}"), e)),
            }
        }
        let info = admin.describe_topic(&name).await.map_err(|e| {
            let hint = if w.create_partitions.is_none() {
                " (create it with --create-partitions P)"
            } else {
                ""
            };
            BenchError::client(format!("describe topic {name}{hint}"), e)
        })?;
        let partitions = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        if partitions == 0 {
            return Err(BenchError::Workload(format!(
                "topic {name} has no partitions"
            )));
        }
        if let Some(p) = w.create_partitions {
            if p != partitions {
                return Err(BenchError::Workload(format!(
                    "topic {name} exists with {partitions} partitions, not {p}: delete it or use another --topic"
                )));
            }
        }
        out.push(TopicSpec { name, partitions });
    }
    Ok(out)
}

/// Spreads producers and consumers over the executors, and the partitions
/// over the consumers.
fn plan(w: &Workload, topics: &[TopicSpec]) -> Vec<ExecPlan> {
    let e = w.cpus.len().max(1);
    let mut plans = vec![ExecPlan::default(); e];
    for i in 0..w.producers {
        plans[i as usize % e].producers.push(i);
    }
    let all: Vec<(usize, u32)> = topics
        .iter()
        .enumerate()
        .flat_map(|(t, s)| (0..s.partitions).map(move |p| (t, p)))
        .collect();
    for j in 0..w.consumers {
        let mut assignment: Assignment = Vec::new();
        for (k, (t, p)) in all.iter().enumerate() {
            if k % w.consumers as usize != j as usize {
                continue;
            }
            match assignment.last_mut() {
                Some((name, ps)) if *name == topics[*t].name => ps.push(*p),
                _ => assignment.push((topics[*t].name.clone(), vec![*p])),
            }
        }
        if assignment.is_empty() {
            continue; // more consumers than partitions: this one has nothing
        }
        plans[(w.producers + j) as usize % e]
            .consumers
            .push((j, assignment));
    }
    plans
}

#[allow(clippy::too_many_arguments)]
async fn executor_main(
    idx: usize,
    plan: ExecPlan,
    workload: Arc<Workload>,
    topics: Vec<TopicSpec>,
    clock: Clock,
    shared: Arc<RunShared>,
    tx: mpsc::Sender<Msg>,
    start_rx: mpsc::Receiver<Option<Instant>>,
) {
    let w = &*workload;
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    let mut setup = Ok(());
    for id in &plan.producers {
        match producer_load::connect(w, *id, &topics).await {
            Ok(p) => producers.push((*id, p)),
            Err(e) => {
                setup = Err(e.to_string());
                break;
            }
        }
    }
    if setup.is_ok() {
        for (id, assignment) in &plan.consumers {
            match consumer_load::connect(w, *id, assignment).await {
                Ok(c) => consumers.push((*id, c)),
                Err(e) => {
                    setup = Err(e.to_string());
                    break;
                }
            }
        }
    }
    let ok = setup.is_ok();
    let _ = tx.send(Msg::Ready(idx, setup));
    if !ok {
        return;
    }
    // Setup only: block this thread until the common start is known.
    let start = match start_rx.recv_timeout(READY_TIMEOUT + Duration::from_secs(10)) {
        Ok(Some(t)) => t,
        _ => return,
    };
    let end =
        start + Duration::from_secs(warmup_whole_s(w)) + Duration::from_secs_f64(w.duration_s);
    let ctx = Rc::new(RunCtx {
        workload: workload.clone(),
        clock,
        start,
        end,
        drain_deadline: end + Duration::from_secs_f64(w.drain_s),
        recorder: Rc::new(RefCell::new(Recorder::new(idx))),
        shared,
    });
    let remaining = Rc::new(Cell::new(producers.len() + consumers.len()));
    let topics = Rc::new(topics);
    for (id, p) in producers {
        let (ctx, topics, remaining) = (ctx.clone(), topics.clone(), remaining.clone());
        glommio::spawn_local(async move {
            producer_load::run(p, id, topics, ctx).await;
            remaining.set(remaining.get() - 1);
        })
        .detach();
    }
    for (id, c) in consumers {
        let (ctx, remaining) = (ctx.clone(), remaining.clone());
        glommio::spawn_local(async move {
            consumer_load::run(c, id, ctx).await;
            remaining.set(remaining.get() - 1);
        })
        .detach();
    }
    // One report per second, on the common grid; the last one says done.
    let mut second = 0u64;
    loop {
        let tick = start + Duration::from_secs(second + 1);
        let now = Instant::now();
        if tick > now {
            corelog::timer::sleep_once_until(tick).await;
        }
        let done = remaining.get() == 0 || ctx.shared.abort.load(Ordering::Relaxed);
        let interval = ctx.recorder.borrow_mut().take(second, done);
        if tx.send(Msg::Interval(Box::new(interval))).is_err() || done {
            break;
        }
        second += 1;
    }
}

/// Merges the executors' intervals second by second until all are done.
fn aggregate(
    w: &Workload,
    rx: &mpsc::Receiver<Msg>,
    executors: usize,
    start: Instant,
    clock: &Clock,
    shared: &RunShared,
) -> Result<(Aggregate, Option<String>), BenchError> {
    let warmup = warmup_whole_s(w);
    let mut agg = Aggregate::new(warmup, w.duration_s);
    let hard_deadline = start
        + Duration::from_secs(warmup)
        + Duration::from_secs_f64(w.duration_s + w.drain_s)
        + Duration::from_millis(w.request_timeout_ms)
        + RUN_SLACK;
    let mut log_file = match &w.hdr_log {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
            BenchError::Write {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let start_wall = UNIX_EPOCH + Duration::from_nanos(clock.epoch_ns(start));
    let mut log = match log_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment(&format!(
                    "corelog-bench {} {}; values in microseconds; tags: publish, send-ack, e2e",
                    env!("CARGO_PKG_VERSION"),
                    w.summary()
                ))
                .with_start_time(start_wall)
                .with_base_time(start_wall)
                .begin_log_with(f, &mut serializer)
                .map_err(|e| BenchError::io("write the HdrHistogram log", e))?,
        ),
        None => None,
    };
    let progress = Progress::new(w);
    let mut cpu = CpuSampler::new(w.broker_pid);
    let mut pending: BTreeMap<u64, (usize, Interval)> = BTreeMap::new();
    let mut done_at: Vec<Option<u64>> = vec![None; executors];
    let mut aborted = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Interval(iv)) => {
                if iv.done && iv.executor < executors {
                    done_at[iv.executor] = Some(iv.second);
                }
                let slot = pending
                    .entry(iv.second)
                    .or_insert_with(|| (0, Interval::new(usize::MAX, iv.second)));
                slot.0 += 1;
                slot.1.merge(&iv);
            }
            Ok(Msg::Ready(..)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if done_at.iter().any(Option::is_none) {
                    aborted = Some("an executor stopped without finishing".to_string());
                }
            }
        }
        if aborted.is_none() && Instant::now() > hard_deadline {
            shared.abort.store(true, Ordering::SeqCst);
            aborted = Some(format!(
                "the run did not finish by its deadline ({:?} after the end); stopped",
                RUN_SLACK
            ));
        }
        // Finalize complete seconds in order (everything when aborting).
        while let Some((&second, (reports, _))) = pending.iter().next() {
            let expected = done_at
                .iter()
                .filter(|d| d.is_none_or(|d| d >= second))
                .count();
            if *reports < expected && aborted.is_none() {
                break;
            }
            let Some((_, merged)) = pending.remove(&second) else {
                break;
            };
            agg.add_second(&merged, cpu.sample());
            if let Some(log) = log.as_mut() {
                let at = Duration::from_secs(merged.second);
                let tags: &[(&str, &hdrhistogram::Histogram<u64>)] = match w.mode {
                    Mode::Produce => {
                        &[("publish", &merged.publish), ("send-ack", &merged.send_ack)]
                    }
                    Mode::Consume => &[],
                    Mode::E2e => &[
                        ("publish", &merged.publish),
                        ("send-ack", &merged.send_ack),
                        ("e2e", &merged.e2e),
                    ],
                };
                for (tag, h) in tags {
                    log.write_histogram(*h, at, Duration::from_secs(1), Tag::new(tag))
                        .map_err(|e| BenchError::Io {
                            what: "write the HdrHistogram log".into(),
                            source: std::io::Error::other(format!("{e:?}")),
                        })?;
                }
            }
            progress.show(&agg, &merged);
        }
        let all_done = done_at.iter().all(Option::is_some);
        if pending.is_empty() && (all_done || aborted.is_some()) {
            break;
        }
    }
    progress.finish();
    drop(log);
    if let Some(mut f) = log_file {
        f.flush()
            .map_err(|e| BenchError::io("write the HdrHistogram log", e))?;
    }
    Ok((agg, aborted))
}

/// The one-line progress indicator on stderr.
struct Progress {
    enabled: bool,
    tty: bool,
    mode: Mode,
}

impl Progress {
    fn new(w: &Workload) -> Progress {
        Progress {
            enabled: !w.quiet,
            tty: std::io::stderr().is_terminal(),
            mode: w.mode,
        }
    }

    fn show(&self, agg: &Aggregate, s: &Interval) {
        if !self.enabled {
            return;
        }
        let phase = format!("{:?}", agg.phase(s.second)).to_lowercase();
        let p = Percentiles::of(&s.publish);
        let e = Percentiles::of(&s.e2e);
        let mut line = format!("[{:>4} s {phase:<7}]", s.second + 1);
        if self.mode != Mode::Consume {
            line.push_str(&format!(
                " produced {:>9} msg/s {:>8.1} MB/s  publish p99 {:>7} µs",
                s.produced_msgs,
                s.produced_bytes as f64 / 1e6,
                p.p99
            ));
        }
        if self.mode != Mode::Produce {
            line.push_str(&format!(
                " | consumed {:>9} msg/s {:>8.1} MB/s",
                s.consumed_msgs,
                s.consumed_bytes as f64 / 1e6
            ));
        }
        if self.mode == Mode::E2e {
            line.push_str(&format!("  e2e p99 {:>7} µs", e.p99));
        }
        line.push_str(&format!(" | errors {}", s.errors()));
        if let Some(pt) = agg.series.last() {
            if let Some(b) = pt.broker_cpu_cores {
                line.push_str(&format!(" | broker {b:.2} cores"));
            }
            if let Some(b) = pt.bench_cpu_cores {
                line.push_str(&format!(" | bench {b:.2} cores"));
            }
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::LoadArgs;
    use crate::workload::CpuList;

    #[test]
    fn plan_spreads_clients_and_partitions() {
        let args = LoadArgs {
            producers: Some(3),
            consumers: Some(2),
            cpus: Some(CpuList(vec![0, 0])),
            ..LoadArgs::default()
        };
        let w = Workload::resolve(Mode::E2e, &args).expect("valid");
        let topics = vec![TopicSpec {
            name: "t".into(),
            partitions: 5,
        }];
        let plans = plan(&w, &topics);
        assert_eq!(plans[0].producers, vec![0, 2]);
        assert_eq!(plans[1].producers, vec![1]);
        // consumer 0 -> executor (3 + 0) % 2 = 1, consumer 1 -> executor 0
        assert_eq!(
            plans[1].consumers[0].1,
            vec![("t".to_string(), vec![0, 2, 4])]
        );
        assert_eq!(plans[0].consumers[0].1, vec![("t".to_string(), vec![1, 3])]);
    }
}
