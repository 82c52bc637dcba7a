//! Smoke test of `corelog-bench` against the real broker, so the harness
//! never rots: starts `corelog serve` on 127.0.0.1:0 with a temporary data
//! dir, runs a tiny `e2e` (about 2 s) and `consume`, a small `limits`, and
//! `plot` over the results, and checks the JSON has the required keys and
//! that messages went through. No timing assertions; every wait is bounded.
//!
//! The broker binary is another package's, so `CARGO_BIN_EXE_corelog` is not
//! available here: it is looked up next to the bench binary
//! (`target/<profile>/corelog`, present after `cargo test --workspace`) and
//! built with `cargo build -p corelog --bin corelog` (same profile) when
//! missing, so `cargo test -p corelog-bench` on a fresh clone works too.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest the broker may take to print `listening on`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one corelog-bench run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a `cargo build` of the broker may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corelog-bench"))
}

/// Runs `cmd` to completion within `limit`; kills it after.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not finish within {limit:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&err.join().unwrap_or_default())
                );
            }
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The `corelog` broker binary of this build (see the module header).
fn broker_bin() -> PathBuf {
    let bench = bench_bin();
    let dir = bench.parent().expect("bench binary has a directory");
    let broker = dir.join(format!("corelog{}", std::env::consts::EXE_SUFFIX));
    if broker.is_file() {
        return broker;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "corelog", "--bin", "corelog"]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => {}
    }
    let out = run_bounded(cmd, BUILD_TIMEOUT, "cargo build --bin corelog");
    assert!(
        out.status.success() && broker.is_file(),
        "building the broker failed ({}), or it is not at {}:\n{}",
        out.status,
        broker.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    broker
}

/// A running broker; killed and its data dir removed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(data_dir: &Path) -> Broker {
        let mut child = Command::new(broker_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--shards", "1"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn corelog serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Drains stdout for the broker's whole life (never blocks it).
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.trim().strip_prefix("listening on ") {
                        let addr = a.trim().parse().expect("listen address");
                        return Broker { child, addr };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("broker did not print `listening on` within {STARTUP_TIMEOUT:?}");
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench(args: &[&str], what: &str) -> Output {
    let mut cmd = Command::new(bench_bin());
    cmd.args(args);
    let out = run_bounded(cmd, RUN_TIMEOUT, what);
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur
            .get(k)
            .unwrap_or_else(|| panic!("result has no `{path}` (missing `{k}`)"));
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("`{path}` is not a number: {cur}"))
}

fn assert_latency_keys(v: &Value, name: &str) {
    for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        num(v, &format!("{name}.{k}"));
    }
}

/// One CPU the load generator may use (the first of the affinity).
fn a_cpu() -> String {
    corelog::shard::startup::available_cpus()
        .first()
        .copied()
        .unwrap_or(0)
        .to_string()
}

#[test]
fn bench_harness_smoke() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).expect("create CARGO_TARGET_TMPDIR");
    let tmp = tempfile::Builder::new()
        .prefix("corelog-bench-smoke-")
        .tempdir_in(root)
        .expect("temp dir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let broker = Broker::start(&data);
    let addr = broker.addr.to_string();
    let cpu = a_cpu();
    let e2e_json = tmp.path().join("e2e.json");
    let hdr = tmp.path().join("e2e.hlog");
    let workload = tmp.path().join("w.toml");
    std::fs::write(
        &workload,
        "message_bytes = \"100..300\"\nkeys = \"uniform\"\nkey_space = 50\nrate_mb_s = 0.5\n",
    )
    .expect("workload file");

    // e2e: 1 s warm-up, 2 s measured, open loop, keyed, from a workload file.
    let out = bench(
        &[
            "e2e",
            "--bootstrap",
            &addr,
            "--topic",
            "smoke",
            "--create-partitions",
            "2",
            "--topic-config",
            "flush.interval_ms=5",
            "--workload",
            workload.to_str().expect("utf-8 path"),
            "--duration-s",
            "2",
            "--warmup-s",
            "1",
            "--drain-s",
            "3",
            "--linger-ms",
            "1",
            "--batch-bytes",
            "16384",
            "--cpus",
            &cpu,
            "--json",
            e2e_json.to_str().expect("utf-8 path"),
            "--hdr-log",
            hdr.to_str().expect("utf-8 path"),
        ],
        "corelog-bench e2e",
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("p99.9"), "no latency table:\n{table}");
    let r = read_json(&e2e_json);
    assert!(
        num(&r, "throughput.msgs_per_s") > 0.0,
        "no message acknowledged: {r}"
    );
    assert!(num(&r, "throughput.mb_per_s") > 0.0);
    assert!(
        num(&r, "consume_throughput.msgs_per_s") > 0.0,
        "nothing consumed"
    );
    assert_latency_keys(&r, "publish_latency_us");
    assert_latency_keys(&r, "e2e_latency_us");
    assert!(num(&r, "publish_latency_us.count") > 0.0);
    assert!(
        num(&r, "e2e_latency_us.count") > 0.0,
        "no e2e latency recorded"
    );
    assert_eq!(num(&r, "errors"), 0.0, "errors: {}", r["error_detail"]);
    assert!(r["series"].as_array().is_some_and(|s| s.len() >= 3));
    assert_eq!(
        r["workload"]["message_bytes"], "100..300",
        "file setting kept"
    );
    assert_eq!(r["workload"]["keys"], "uniform");
    assert!(r["machine"]["cpu_model"].is_string());
    let log = std::fs::read_to_string(&hdr).expect("hdr log");
    assert!(log.contains("Tag=publish") && log.contains("Tag=e2e"));

    // consume: reads what e2e wrote, from the earliest offset.
    let consume_json = tmp.path().join("consume.json");
    bench(
        &[
            "consume",
            "--bootstrap",
            &addr,
            "--topic",
            "smoke",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
            "--cpus",
            &cpu,
            "--quiet",
            "--json",
            consume_json.to_str().expect("utf-8 path"),
        ],
        "corelog-bench consume",
    );
    let c = read_json(&consume_json);
    assert!(
        num(&c, "throughput.msgs") > 0.0,
        "consume read nothing: {c}"
    );

    // limits on a small size, then a report against it.
    let limits_json = tmp.path().join("limits.json");
    bench(
        &[
            "limits",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--write-mib",
            "8",
            "--fsyncs",
            "20",
            "--tcp-s",
            "0.3",
            "--strategy-ms",
            "50",
            "--floor-ms",
            "100",
            "--json",
            limits_json.to_str().expect("utf-8 path"),
        ],
        "corelog-bench limits",
    );
    let l = read_json(&limits_json);
    assert!(num(&l, "disk_write_mb_s") > 0.0);
    assert!(num(&l, "disk_read_mb_s") > 0.0);
    let strategies = l["write_strategies"]
        .as_array()
        .expect("write_strategies is an array");
    assert_eq!(strategies.len(), 6, "three layouts x two syncs: {l}");
    for s in strategies {
        assert!(num(s, "durable_write_us.count") > 0.0, "no writes: {s}");
    }
    num(&l, "fdatasync_us.p50");
    num(&l, "fdatasync_us.p99");
    assert!(num(&l, "loopback_tcp_mb_s") > 0.0);
    let floor = l["request_floor"]
        .as_array()
        .expect("request_floor is an array");
    assert_eq!(floor.len(), 2, "echo and durable: {l}");
    for f in floor {
        assert!(num(f, "requests") > 0.0, "no requests: {f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("read data dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".corelog-bench")
        })
        .collect();
    assert!(leftovers.is_empty(), "limits left files behind");

    // plot: both results overlaid.
    let svg = tmp.path().join("plot.svg");
    bench(
        &[
            "plot",
            "--out",
            svg.to_str().expect("utf-8 path"),
            e2e_json.to_str().expect("utf-8 path"),
            consume_json.to_str().expect("utf-8 path"),
        ],
        "corelog-bench plot",
    );
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(text.contains("<svg") && text.contains("</svg>"));

    // Bad input is an error message, not a panic.
    let mut cmd = Command::new(bench_bin());
    cmd.args(["produce", "--acks", "sometimes"]);
    let out = run_bounded(cmd, RUN_TIMEOUT, "corelog-bench with a bad flag");
    assert_eq!(out.status.code(), Some(2), "clap usage error expected");
    let mut cmd = Command::new(bench_bin());
    cmd.args(["plot", "--out"])
        .arg(tmp.path().join("x.svg"))
        .arg(&workload);
    let out = run_bounded(cmd, RUN_TIMEOUT, "corelog-bench plot of a non-result");
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    drop(broker);
}
