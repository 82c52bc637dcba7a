//! Repeated crash cycles: the real broker is SIGKILLed at a random moment
//! while producers with acks run, restarted on the same data dir, and
//! checked, at least `CYCLES` times (env `CORELOG_CRASH_CYCLES`, default 50).
//!
//! Topics use 64 KiB segments and a 512-byte index interval, so kills land
//! during segment rolls and index writes too. `ca` and `cb` are
//! `flush = "always"` (acks leader and all), `ci` uses `flush.interval_ms`,
//! and `cr` (flush=always) keeps only `retention_bytes` = 4 segments with a
//! 50 ms retention check, so segments are deleted all the time. Every other
//! cycle aims its kill at a retention delete: an inotify watch on `cr`'s
//! partition directories sees the first unlink of a deletion and the broker
//! is SIGKILLed right then; the other cycles kill at a random moment. The
//! run counts kills within `NEAR_DELETE` of an unlink and restarts that found
//! a half-deleted segment. The seed (env `CORELOG_CRASH_SEED`) is printed for
//! reproduction.
//!
//! The checker keeps every acknowledged (topic, partition, offset, payload)
//! and everything it was ever served. It proves: nothing acknowledged is
//! missing (flush=always topics; for the interval topic a loss is allowed by
//! design and only counted; on the retention topic an acknowledged record may
//! be gone only below the partition's current log start, which must leave at
//! least `retention_bytes` worth of records), offsets are contiguous from the
//! log start, an offset never maps to two payloads across restarts (also when
//! a kill before the unlink brings deleted records back), no payload appears
//! twice, each producer's records keep their order in a partition, every
//! served payload was sent to that partition, and (at the end, raw) every
//! batch of every segment passes its CRC with contiguous offsets and no index
//! file is left without its segment.
//!
//! Bounded: every wait is bounded by the harness, the whole run by
//! `RUN_LIMIT`. No timing assertions.

mod common;
#[path = "support/delete_watch.rs"]
mod delete_watch;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{run_client, try_within, Broker, BrokerOptions};
use corelog::client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, SeekTo};
use corelog::protocol::batch::{batches, verify_crc};
use corelog::protocol::messages::Acks;
use corelog::protocol::ErrorCode;
use rand::{Rng, SeedableRng};

/// Default number of kill/restart cycles.
const DEFAULT_CYCLES: u32 = 50;
/// Records each producer sends per second at most (bounds the checker's
/// memory and the verification time; still several segment rolls per second
/// per partition with 64 KiB segments).
const RECORDS_PER_SEC_PER_PRODUCER: f64 = 2500.0;
/// The whole test gives up (fails) past this.
const RUN_LIMIT: Duration = Duration::from_secs(900);
/// `retention_bytes` of the retention topic: four 64 KiB segments.
const RETENTION_BYTES: u64 = 4 * 65536;
/// Retention check interval of the broker under test, in ms.
const RETENTION_CHECK_INTERVAL_MS: u64 = 50;
/// Upper bound on the bytes one record of this test takes in a segment (a
/// one-record batch: 61-byte header, record framing, payload of at most
/// ~160 bytes): retention keeps at least RETENTION_BYTES / this records.
const MAX_BYTES_PER_RECORD: u64 = 512;
/// A kill is "near" a retention delete if a segment file of the retention
/// topic was unlinked at most this long before it.
const NEAR_DELETE: Duration = Duration::from_millis(20);
/// An aimed kill comes up to this many µs after the unlink it saw.
const AIM_JITTER_US: u64 = 1500;
/// An aimed cycle waits at most this long for a retention delete.
const AIM_LIMIT: Duration = Duration::from_millis(2500);

/// One topic under test.
struct TopicSpec {
    name: &'static str,
    partitions: u32,
    /// `flush = "always"`: nothing acknowledged may be lost.
    always: bool,
    /// `retention_bytes = RETENTION_BYTES`: the log start moves.
    retention: bool,
    /// Producers per cycle and their acks.
    producers: &'static [Acks],
}

const TOPICS: &[TopicSpec] = &[
    TopicSpec {
        name: "ca",
        partitions: 3,
        always: true,
        retention: false,
        producers: &[Acks::Leader, Acks::Leader],
    },
    TopicSpec {
        name: "cb",
        partitions: 2,
        always: true,
        retention: false,
        producers: &[Acks::All],
    },
    TopicSpec {
        name: "ci",
        partitions: 2,
        always: false,
        retention: false,
        producers: &[Acks::Leader],
    },
    TopicSpec {
        name: "cr",
        partitions: 2,
        always: true,
        retention: true,
        producers: &[Acks::Leader],
    },
];

fn spec(topic: &str) -> &'static TopicSpec {
    TOPICS
        .iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("unknown topic {topic}"))
}

/// Payload of record `seq` of producer `producer` to `topic`: says where it
/// belongs and carries a padding whose length depends on `seq`.
fn payload(topic: &str, producer: u32, seq: u64) -> String {
    let pad = (seq % 97) as usize + 40;
    format!("t{topic}-p{producer}-s{seq}-{}", "x".repeat(pad))
}

/// Parses `payload`, checking the padding: (topic, producer, seq).
fn parse_payload(v: &str) -> Option<(String, u32, u64)> {
    let mut it = v.splitn(4, '-');
    let t = it.next()?.strip_prefix('t')?.to_string();
    let p = it.next()?.strip_prefix('p')?.parse().ok()?;
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    let pad = it.next()?;
    if pad.len() != (s % 97) as usize + 40 || pad.bytes().any(|b| b != b'x') {
        return None;
    }
    Some((t, p, s))
}

/// Partition a producer's record `seq` goes to.
fn partition_of(partitions: u32, producer: u32, seq: u64) -> u32 {
    ((seq + producer as u64) % partitions as u64) as u32
}

type Tp = (String, u32);

/// What one producing phase reports.
#[derive(Default)]
struct ProduceReport {
    /// (topic, partition, offset, payload) acknowledged.
    acked: Vec<(String, u32, u64, String)>,
    /// Producer id → records sent (seq 0..n).
    sent: HashMap<u32, u64>,
}

#[derive(Default)]
struct Checker {
    /// Everything ever served: offset → payload, per partition.
    served: HashMap<Tp, BTreeMap<u64, String>>,
    /// Payload → offset, per partition (duplicates).
    where_: HashMap<Tp, HashMap<String, u64>>,
    /// Offsets below this were read and checked, per partition.
    checked_to: HashMap<Tp, u64>,
    /// Acknowledged records not yet confirmed present.
    pending_acks: Vec<(String, u32, u64, String)>,
    /// Producer id → (topic, records sent).
    sent: HashMap<u32, (String, u64)>,
    /// Latest log start seen, per partition.
    log_start: HashMap<Tp, u64>,
    acked_total: u64,
    verified_acked: u64,
    lost_interval_acked: u64,
    lost_interval_served: u64,
    /// Acknowledged records of the retention topic found below the log start
    /// (deleted by retention) when checked.
    retention_deleted_acked: u64,
    /// Restarts where a retention partition's log start was lower than
    /// before the kill (deleted segments back: the kill came before unlink).
    log_start_went_back: u64,
    records_read: u64,
}

impl Checker {
    fn take_report(&mut self, topic_of: &HashMap<u32, String>, r: ProduceReport) {
        self.acked_total += r.acked.len() as u64;
        self.pending_acks.extend(r.acked);
        for (pid, n) in r.sent {
            self.sent.insert(pid, (topic_of[&pid].clone(), n));
        }
    }

    /// The broker reports `log_start` for `tp`: only retention moves it,
    /// and retention leaves at least `RETENTION_BYTES` of records.
    fn saw_log_start(&mut self, tp: &Tp, log_start: u64, hw: u64, after_restart: bool) {
        let s = spec(&tp.0);
        if !s.retention {
            assert_eq!(log_start, 0, "{}/{}: log start moved", tp.0, tp.1);
            return;
        }
        assert!(
            log_start <= hw,
            "{}/{}: log start {log_start} above hw {hw}",
            tp.0,
            tp.1
        );
        if log_start > 0 {
            let kept = hw - log_start;
            assert!(
                kept >= RETENTION_BYTES / MAX_BYTES_PER_RECORD,
                "{}/{}: log start {log_start} leaves only {kept} records below hw {hw}: more than retention deleted",
                tp.0,
                tp.1
            );
        }
        let prev = self.log_start.insert(tp.clone(), log_start).unwrap_or(0);
        if log_start < prev {
            assert!(
                after_restart,
                "{}/{}: log start went back from {prev} to {log_start} on a live broker",
                tp.0, tp.1
            );
            self.log_start_went_back += 1;
        }
    }

    /// A restarted broker reports `hw` for `tp`: forget what it lost (a
    /// failure for flush=always) and return where reading should start.
    fn restarted(&mut self, tp: &Tp, hw: u64, full: bool) -> u64 {
        let always = spec(&tp.0).always;
        let served = self.served.entry(tp.clone()).or_default();
        let lost: Vec<(u64, String)> = served.range(hw..).map(|(o, v)| (*o, v.clone())).collect();
        if !lost.is_empty() {
            assert!(
                !always,
                "{}/{}: flush=always partition lost {} served record(s) from offset {} (high watermark now {hw})",
                tp.0,
                tp.1,
                lost.len(),
                lost[0].0
            );
            self.lost_interval_served += lost.len() as u64;
            let w = self.where_.entry(tp.clone()).or_default();
            for (o, v) in lost {
                served.remove(&o);
                w.remove(&v);
            }
        }
        let c = self.checked_to.entry(tp.clone()).or_insert(0);
        *c = (*c).min(hw);
        let log_start = self.log_start.get(tp).copied().unwrap_or(0);
        if full {
            log_start
        } else {
            (*c).max(log_start)
        }
    }

    /// Records served at `tp`, read from `start` up to the high watermark.
    fn served_batch(&mut self, tp: &Tp, start: u64, recs: &[(u64, String)]) {
        let served = self.served.entry(tp.clone()).or_default();
        let where_ = self.where_.entry(tp.clone()).or_default();
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for (i, (off, v)) in recs.iter().enumerate() {
            assert_eq!(
                *off,
                start + i as u64,
                "{}/{}: offsets not contiguous: record #{i} read from {start} has offset {off}",
                tp.0,
                tp.1
            );
            let (t, pid, seq) = parse_payload(v)
                .unwrap_or_else(|| panic!("{}/{} @{off}: malformed payload {v:?}", tp.0, tp.1));
            assert_eq!(
                t, tp.0,
                "{}/{} @{off}: payload {v:?} of another topic",
                tp.0, tp.1
            );
            let parts = spec(&t).partitions;
            assert_eq!(
                partition_of(parts, pid, seq),
                tp.1,
                "{}/{} @{off}: payload {v:?} belongs to another partition",
                tp.0,
                tp.1
            );
            match self.sent.get(&pid) {
                Some((st, n)) if *st == t && seq < *n => {}
                other => panic!(
                    "{}/{} @{off}: payload {v:?} was never sent (producer record: {other:?})",
                    tp.0, tp.1
                ),
            }
            if let Some(prev) = last_seq.insert(pid, seq) {
                assert!(
                    seq > prev,
                    "{}/{} @{off}: producer {pid} seq {seq} after seq {prev} (order broken)",
                    tp.0,
                    tp.1
                );
            }
            if let Some(old) = served.get(off) {
                assert_eq!(
                    old, v,
                    "{}/{} offset {off} served two different payloads across restarts",
                    tp.0, tp.1
                );
            } else {
                served.insert(*off, v.clone());
            }
            if let Some(o) = where_.insert(v.clone(), *off) {
                assert_eq!(
                    o, *off,
                    "{}/{}: payload {v:?} served at offsets {o} and {off} (duplicate)",
                    tp.0, tp.1
                );
            }
        }
        self.records_read += recs.len() as u64;
        let end = start + recs.len() as u64;
        let c = self.checked_to.entry(tp.clone()).or_insert(0);
        *c = (*c).max(end);
    }

    /// Every pending acknowledgement must now be served (flush=always).
    fn check_acks(&mut self) {
        for (t, p, off, v) in std::mem::take(&mut self.pending_acks) {
            let tp = (t.clone(), p);
            let got = self.served.get(&tp).and_then(|m| m.get(&off));
            let log_start = self.log_start.get(&tp).copied().unwrap_or(0);
            match got {
                Some(g) if *g == v => self.verified_acked += 1,
                Some(g) => panic!(
                    "{t}/{p} offset {off}: acknowledged {v:?} but the broker serves {g:?}"
                ),
                None if spec(&t).retention && off < log_start => {
                    self.retention_deleted_acked += 1
                }
                None if spec(&t).always => panic!(
                    "{t}/{p} offset {off}: acknowledged {v:?} (flush=always) is missing after restart"
                ),
                None => self.lost_interval_acked += 1,
            }
        }
    }
}

/// One contiguous run of records read from a partition.
struct Chunk {
    partition: u32,
    start: u64,
    recs: Vec<(u64, String)>,
}

/// Reads each partition from its start offset up to the given high
/// watermark. On the retention topic the log start may pass the reader
/// (a retention pass right after a restart): then it continues from the new
/// log start, in a new chunk. Returns the chunks and the latest log starts.
async fn read_range(
    cfg: ConsumerConfig,
    topic: &str,
    ranges: Vec<(u32, u64, u64)>,
) -> (Vec<Chunk>, HashMap<u32, u64>) {
    let retention = spec(topic).retention;
    let admin = Admin::connect(cfg.client.clone()).await.expect("admin");
    let mut consumer = Consumer::connect(cfg).await.expect("consumer connect");
    let mut out = Vec::new();
    let mut log_starts = HashMap::new();
    for (p, start, hw) in ranges {
        let mut chunk = Chunk {
            partition: p,
            start,
            recs: Vec::new(),
        };
        if start < hw {
            consumer
                .assign(topic, &[p], SeekTo::Offset(start))
                .await
                .expect("assign");
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut polls = 0u32;
            while consumer.position(topic, p).unwrap_or(0) < hw {
                assert!(
                    Instant::now() < deadline && polls < 100_000,
                    "{topic}/{p}: reading {start}..{hw} incomplete after {polls} polls"
                );
                polls += 1;
                let recs = match consumer.poll().await {
                    Ok(recs) => recs,
                    Err(e) if retention && e.wire_code() == Some(ErrorCode::OffsetOutOfRange) => {
                        let pos = consumer.position(topic, p).unwrap_or(0);
                        let info = admin.describe_topic(topic).await.expect("describe");
                        let ls = info
                            .partitions
                            .iter()
                            .find(|i| i.partition == p)
                            .map(|i| i.log_start_offset)
                            .expect("partition info");
                        assert!(ls > pos, "{topic}/{p}: {e} but the log start is {ls}");
                        log_starts.insert(p, ls);
                        out.push(std::mem::replace(
                            &mut chunk,
                            Chunk {
                                partition: p,
                                start: ls,
                                recs: Vec::new(),
                            },
                        ));
                        consumer
                            .assign(topic, &[p], SeekTo::Offset(ls))
                            .await
                            .expect("assign");
                        continue;
                    }
                    Err(e) => panic!("{topic}/{p}: poll (CRC checked by the consumer): {e}"),
                };
                for r in recs {
                    if r.partition == p && r.offset < hw {
                        let v = r
                            .value
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).into_owned());
                        chunk.recs.push((r.offset, v.unwrap_or_default()));
                    }
                }
            }
        }
        out.push(chunk);
    }
    (out, log_starts)
}

/// After a (re)start: reads what is new (or everything) and checks it.
fn verify(broker: &Broker, checker: &mut Checker, full: bool) {
    for t in TOPICS {
        let cfg = broker.client_config();
        let name = t.name;
        let info = run_client(move || async move {
            let admin = corelog::client::Admin::connect(cfg).await.expect("admin");
            admin.describe_topic(name).await.expect("describe")
        });
        let mut ranges = Vec::new();
        for p in &info.partitions {
            assert!(p.high_watermark <= p.log_end_offset);
            let tp = (name.to_string(), p.partition);
            checker.saw_log_start(&tp, p.log_start_offset, p.high_watermark, true);
            let start = checker.restarted(&tp, p.high_watermark, full);
            ranges.push((p.partition, start, p.high_watermark));
        }
        let hws: HashMap<u32, u64> = ranges.iter().map(|r| (r.0, r.2)).collect();
        let ccfg = ConsumerConfig {
            max_wait_ms: 100,
            max_partition_bytes: 4 << 20,
            ..broker.consumer_config()
        };
        let (chunks, log_starts) =
            run_client(move || async move { read_range(ccfg, name, ranges).await });
        for (p, ls) in log_starts {
            checker.saw_log_start(&(name.to_string(), p), ls, hws[&p], false);
        }
        for c in chunks {
            checker.served_batch(&(name.to_string(), c.partition), c.start, &c.recs);
        }
    }
    checker.check_acks();
}

/// One producing phase; returns when every producer has stopped (the broker
/// died, or `stop` was reached).
async fn produce(
    pcfg: ProducerConfig,
    producers: Vec<(u32, &'static str, Acks)>,
    stop: Instant,
) -> ProduceReport {
    let report = Rc::new(RefCell::new(ProduceReport::default()));
    let mut tasks = Vec::new();
    for (pid, topic, acks) in producers {
        let cfg = ProducerConfig {
            acks,
            linger_ms: 2,
            // Each phase ends with the broker killed: a retrying producer
            // would wait out its delivery timeout instead of stopping, and
            // records not yet sent fail after a short delivery timeout.
            idempotence: false,
            delivery_timeout_ms: 2_000,
            ..pcfg.clone()
        };
        let report = report.clone();
        tasks.push(glommio::spawn_local(async move {
            let producer = match try_within(Duration::from_secs(10), Producer::connect(cfg)).await {
                Some(Ok(p)) => p,
                _ => return,
            };
            let parts = spec(topic).partitions;
            let failed = Rc::new(RefCell::new(false));
            let mut window = VecDeque::new();
            let mut seq = 0u64;
            let began = Instant::now();
            while !*failed.borrow() && Instant::now() < stop && seq < 1_000_000 {
                let allowed = began.elapsed().as_secs_f64() * RECORDS_PER_SEC_PER_PRODUCER;
                if seq as f64 > allowed + 64.0 {
                    corelog::timer::sleep_once(Duration::from_millis(2)).await;
                    continue;
                }
                let p = partition_of(parts, pid, seq);
                let v = payload(topic, pid, seq);
                let rec = common::record(topic, Some(p), None, &v);
                let d = match try_within(Duration::from_secs(10), producer.send(rec)).await {
                    Some(Ok(d)) => d,
                    _ => break,
                };
                seq += 1;
                report.borrow_mut().sent.insert(pid, seq);
                let report = report.clone();
                let failed = failed.clone();
                window.push_back(glommio::spawn_local(async move {
                    match try_within(Duration::from_secs(10), d).await {
                        Some(Ok(md)) => {
                            assert_eq!(md.partition, p, "acknowledged on another partition");
                            report
                                .borrow_mut()
                                .acked
                                .push((topic.to_string(), p, md.offset, v));
                        }
                        _ => *failed.borrow_mut() = true,
                    }
                }));
                if window.len() >= 128 {
                    if let Some(t) = window.pop_front() {
                        t.await;
                    }
                }
            }
            for t in window {
                t.await;
            }
            let _ = try_within(Duration::from_secs(5), producer.close()).await;
        }));
    }
    for t in tasks {
        t.await;
    }
    Rc::try_unwrap(report)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

/// Reads every segment of every partition raw: each batch passes its CRC and
/// base offsets continue across segments. Returns (segments, batches).
fn raw_scan(broker: &Broker) -> (usize, usize) {
    let (mut segs, mut nb) = (0, 0);
    for t in TOPICS {
        for p in 0..t.partitions {
            let dir = broker.partition_dir(t.name, p);
            let mut logs: Vec<_> = std::fs::read_dir(&dir)
                .expect("partition dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            let orphans = delete_watch::orphan_index_files(std::slice::from_ref(&dir));
            assert!(
                orphans.is_empty(),
                "index files without a segment: {orphans:?}"
            );
            let mut next: Option<u64> = None;
            for log in &logs {
                segs += 1;
                let data = common::read_file(log);
                for b in batches(&data) {
                    let (h, bytes) =
                        b.unwrap_or_else(|e| panic!("{}: bad batch: {e}", log.display()));
                    verify_crc(bytes).unwrap_or_else(|e| {
                        panic!(
                            "{}: batch at {} fails CRC: {e}",
                            log.display(),
                            h.base_offset
                        )
                    });
                    if let Some(n) = next {
                        assert_eq!(
                            h.base_offset,
                            n,
                            "{}: offsets not contiguous",
                            log.display()
                        );
                    }
                    next = Some(h.base_offset + h.record_count as u64);
                    nb += 1;
                }
            }
        }
    }
    (segs, nb)
}

#[test]
fn crash_cycles_lose_nothing_acknowledged() {
    let began = Instant::now();
    let cycles: u32 = std::env::var("CORELOG_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let seed: u64 = std::env::var("CORELOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash_cycles: seed {seed} (rerun with CORELOG_CRASH_SEED={seed}), {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut broker = Broker::start_with(BrokerOptions {
        config_toml: Some(format!(
            "[shard]\nretention_check_interval_ms = {RETENTION_CHECK_INTERVAL_MS}\n"
        )),
        ..BrokerOptions::default()
    });
    let retention_bytes = format!("retention_bytes={RETENTION_BYTES}");
    for t in TOPICS {
        let parts = t.partitions.to_string();
        let mut args = vec![
            "topic",
            "create",
            t.name,
            "--partitions",
            &parts,
            "--config",
            "segment_bytes=65536",
            "--config",
            "index_interval_bytes=512",
        ];
        if !t.always {
            args.extend(["--config", "flush.interval_ms=20"]);
        }
        if t.retention {
            args.extend(["--config", &retention_bytes]);
        }
        broker.cli_ok(&args, "");
    }
    // Unlinks in the retention topic's partition directories.
    let retention_dirs: Vec<_> = TOPICS
        .iter()
        .filter(|t| t.retention)
        .flat_map(|t| (0..t.partitions).map(|p| broker.partition_dir(t.name, p)))
        .collect();
    let watch = delete_watch::DeleteWatch::new(&retention_dirs).expect("inotify watch");
    let is_segment_file =
        |n: &String| n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex");

    let mut checker = Checker::default();
    let mut topic_of: HashMap<u32, String> = HashMap::new();
    let mut next_pid = 0u32;
    let mut kills_while_producing = 0u32;
    let (mut aimed, mut aimed_hits, mut near_delete, mut half_deleted) = (0u32, 0u32, 0u32, 0u32);
    let mut unlinks_seen = 0usize;
    for cycle in 0..cycles {
        assert!(
            began.elapsed() < RUN_LIMIT,
            "crash_cycles: {cycle} cycles done, over the {RUN_LIMIT:?} limit (seed {seed})"
        );
        verify(&broker, &mut checker, cycle % 10 == 0);

        let mut producers = Vec::new();
        for t in TOPICS {
            for acks in t.producers {
                producers.push((next_pid, t.name, *acks));
                topic_of.insert(next_pid, t.name.to_string());
                next_pid += 1;
            }
        }
        // Odd cycles aim at a retention delete: kill at the first unlink
        // after a random head start. Even cycles kill at a random moment:
        // while connecting, early, or well into it.
        let aim = cycle % 2 == 1;
        let delay = Duration::from_millis(if aim {
            rng.gen_range(100..500)
        } else {
            rng.gen_range(0..900)
        });
        let pcfg = ProducerConfig {
            client: corelog::client::ClientConfig {
                request_timeout_ms: 10_000,
                ..broker.client_config()
            },
            ..broker.producer_config()
        };
        let stop = Instant::now() + Duration::from_secs(30);
        watch.drain();
        let t0 = Instant::now();
        let client = std::thread::spawn(move || {
            run_client(move || async move { produce(pcfg, producers, stop).await })
        });
        let until = t0 + if aim { AIM_LIMIT } else { delay };
        let mut last_unlink: Option<Instant> = None;
        let mut hit = false;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let names = watch.wait((until - now).min(Duration::from_millis(5)));
            let n = names.iter().filter(|n| is_segment_file(n)).count();
            if n > 0 {
                unlinks_seen += n;
                last_unlink = Some(Instant::now());
                if aim && t0.elapsed() >= delay {
                    hit = true;
                    // Land anywhere from between the unlinks of one segment's
                    // files to after the directory fsync.
                    std::thread::sleep(Duration::from_micros(rng.gen_range(0..=AIM_JITTER_US)));
                    break;
                }
            }
        }
        let alive = broker.is_running();
        let near = last_unlink.is_some_and(|t| t.elapsed() <= NEAR_DELETE);
        broker.kill9();
        let report = client.join().expect("producer thread");
        if alive && !report.acked.is_empty() {
            kills_while_producing += 1;
        }
        aimed += aim as u32;
        aimed_hits += hit as u32;
        near_delete += near as u32;
        // A kill between the unlinks of one segment's files leaves index
        // files without their log (recovery removes them).
        let orphans = delete_watch::orphan_index_files(&retention_dirs).len();
        half_deleted += (orphans > 0) as u32;
        eprintln!(
            "cycle {cycle}: {} kill after {:?}{}{}{}, {} acked this cycle",
            if aim { "aimed" } else { "random" },
            t0.elapsed(),
            if hit { ", at a retention unlink" } else { "" },
            if near { ", near a delete" } else { "" },
            if orphans > 0 {
                ", segment half deleted"
            } else {
                ""
            },
            report.acked.len()
        );
        checker.take_report(&topic_of, report);
        broker.start_again();
    }
    verify(&broker, &mut checker, true);
    broker.stop();
    let (segments, nbatches) = raw_scan(&broker);
    let served: usize = checker.served.values().map(BTreeMap::len).sum();
    let dup_free: HashSet<&String> = checker.served.values().flat_map(|m| m.values()).collect();
    assert_eq!(dup_free.len(), served, "a payload is served twice");
    eprintln!(
        "crash_cycles summary: seed {seed}, {cycles} cycles ({kills_while_producing} killed with acks flowing), \
         {} acked, {} acked verified present, {} interval-topic acked lost, {} interval-topic served lost, \
         {served} records held, {} records read, {segments} segments / {nbatches} batches CRC-checked raw, {:.1?}",
        checker.acked_total,
        checker.verified_acked,
        checker.lost_interval_acked,
        checker.lost_interval_served,
        checker.records_read,
        began.elapsed()
    );
    eprintln!(
        "crash_cycles retention: {aimed} aimed kills ({aimed_hits} fired at a segment unlink), \
         {near_delete} kills within {NEAR_DELETE:?} after an unlink, {half_deleted} restarts found a half-deleted segment, \
         {unlinks_seen} segment-file unlinks seen, {} acked records deleted by retention, \
         log start went back {} time(s) (kill before the unlink), log starts now {:?}",
        checker.retention_deleted_acked,
        checker.log_start_went_back,
        checker
            .log_start
            .iter()
            .filter(|(tp, _)| spec(&tp.0).retention)
            .collect::<BTreeMap<_, _>>()
    );
    assert!(
        aimed_hits > 0,
        "no kill landed at a retention delete in {cycles} cycles"
    );
    assert!(
        checker.acked_total > 0,
        "nothing was acknowledged in {cycles} cycles"
    );
    let t = Instant::now();
    drop(checker);
    let checker_drop = t.elapsed();
    drop(broker);
    eprintln!(
        "crash_cycles: cleanup took {checker_drop:.1?} (checker) + {:.1?} (data dir)",
        t.elapsed() - checker_drop
    );
}
