//! Integration-test harness: runs the real `corelog` binary as a broker on
//! 127.0.0.1:0 with a temporary data dir, runs CLI commands against it, and
//! runs client code on a fresh glommio executor.
//!
//! Invariants: every wait is bounded (startup, shutdown, CLI runs, client
//! code), nothing asserts on timing, and `Drop` kills the broker and removes
//! its directory. On a panicking test, `Drop` prints the broker's stderr so
//! the failure carries its diagnostics.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use corelog::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, ProducerConfig, SeekTo,
};

/// Longest a broker may take to print `listening on ...`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful shutdown (SIGTERM) may take.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one CLI invocation may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one `run_client` closure may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_corelog")
}

/// How to start a broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// `--shards N`.
    pub shards: usize,
    /// Extra TOML written to a config file passed as `--config` (the flags
    /// still override data dir, listen address and shard count).
    pub config_toml: Option<String>,
    /// Run the broker with its working directory set to the test's temp root
    /// and `--data-dir data` (relative), as a user running `corelog serve` in
    /// a directory would.
    pub relative_data_dir: bool,
    /// The broker's `RUST_LOG` (default `info`; `CORELOG_TEST_LOG`, when
    /// set, overrides it for every broker).
    pub log_filter: Option<String>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            shards: default_shards(),
            config_toml: None,
            relative_data_dir: false,
            log_filter: None,
        }
    }
}

/// Where test data dirs go: `CORELOG_TEST_TMPDIR`, else cargo's per-target
/// scratch dir (on the build disk: /tmp may be tmpfs, which can refuse
/// O_DIRECT).
pub fn test_tmp_root() -> PathBuf {
    let root = std::env::var_os("CORELOG_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    root
}

/// Two shards, or one on a single-CPU machine.
pub fn default_shards() -> usize {
    thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1)
}

/// A running `corelog serve` process on its own temporary data dir.
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    root: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    /// Length of the stderr file when the current process started.
    stderr_mark: u64,
    opts: BrokerOptions,
    starts: u32,
}

impl Broker {
    /// Starts a broker with default options (2 shards).
    pub fn start() -> Broker {
        Self::start_with(BrokerOptions::default())
    }

    pub fn start_with(opts: BrokerOptions) -> Broker {
        Self::start_in(opts, None)
    }

    /// Like `start_with`, but with the data dir at `data_dir` (e.g. on a
    /// file system made for the test) instead of inside the temp root; the
    /// caller removes it. Stderr and the config file stay in the temp root.
    pub fn start_in(opts: BrokerOptions, data_dir: Option<PathBuf>) -> Broker {
        let root = tempfile::Builder::new()
            .prefix("corelog-test-")
            .tempdir_in(test_tmp_root())
            .expect("create temp dir");
        let data_dir = data_dir.unwrap_or_else(|| root.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let stderr_path = root.path().join("broker.stderr");
        let mut b = Broker {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root: Some(root),
            data_dir,
            stderr_path,
            stderr_mark: 0,
            opts,
            starts: 0,
        };
        b.spawn();
        b
    }

    /// Address the broker listens on (changes across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `HOST:PORT`, the form `--bootstrap` and `ClientConfig` take.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    /// True while the broker process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything every broker process of this test wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the current (latest) broker process wrote to stderr.
    pub fn stderr_since_start(&self) -> String {
        let all = std::fs::read(&self.stderr_path).unwrap_or_default();
        let from = (self.stderr_mark as usize).min(all.len());
        String::from_utf8_lossy(&all[from..]).into_owned()
    }

    fn config_path(&self) -> PathBuf {
        self.root
            .as_ref()
            .expect("root")
            .path()
            .join("corelog-test.toml")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let stderr_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr file");
        self.stderr_mark = stderr_file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(bin());
        cmd.arg("serve");
        if let Some(toml) = &self.opts.config_toml {
            let path = self.config_path();
            std::fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(path);
        }
        if self.opts.relative_data_dir {
            let root = self.data_dir.parent().expect("data dir has a parent");
            cmd.current_dir(root).arg("--data-dir").arg("data");
        } else {
            cmd.arg("--data-dir").arg(&self.data_dir);
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--shards")
            .arg(self.opts.shards.to_string())
            .env(
                "RUST_LOG",
                std::env::var("CORELOG_TEST_LOG").unwrap_or_else(|_| {
                    self.opts
                        .log_filter
                        .clone()
                        .unwrap_or_else(|| "info".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file));
        let mut child = cmd.spawn().expect("spawn corelog serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Reads stdout for the whole life of the process so it never blocks on
        // a full pipe; forwards lines until the receiver is gone.
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        match rest.trim().parse::<SocketAddr>() {
                            Ok(a) => {
                                self.addr = a;
                                return;
                            }
                            Err(e) => self.fail(&format!("bad listen line {line:?}: {e}")),
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !self.is_running() {
                        self.fail("broker exited before printing `listening on`");
                    }
                    if Instant::now() >= deadline {
                        self.fail(&format!(
                            "broker did not print `listening on` within {STARTUP_TIMEOUT:?}"
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting.
                    let _ = self.wait_exit(Duration::from_secs(10));
                    self.fail("broker closed stdout before printing `listening on`");
                }
            }
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        panic!(
            "{why}\n--- broker stderr ---\n{}\n--- end ---",
            self.stderr_since_start()
        );
    }

    /// Waits (bounded) for the current process to exit; reaps it.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return Some(st);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Graceful stop: SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.pid();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        match self.wait_exit(SHUTDOWN_TIMEOUT) {
            Some(st) => st,
            None => self.fail(&format!(
                "broker did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM"
            )),
        }
    }

    /// Graceful restart on the same data dir; the port may change.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.success(),
            "broker exited with {st} on SIGTERM\n--- stderr ---\n{}",
            self.stderr_since_start()
        );
        self.spawn();
    }

    /// SIGKILL (if still alive) and reap. `start_again` brings it back.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again after `kill9` (or after it died).
    pub fn start_again(&mut self) {
        if self.child.is_some() && !self.is_running() {
            self.child = None;
        }
        self.spawn();
    }

    /// A client config pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            bootstrap: self.bootstrap(),
            client_id: "corelog-tests".into(),
            request_timeout_ms: 30_000,
            ..ClientConfig::default()
        }
    }

    pub fn producer_config(&self) -> ProducerConfig {
        ProducerConfig {
            client: self.client_config(),
            ..ProducerConfig::default()
        }
    }

    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            client: self.client_config(),
            max_wait_ms: 200,
            ..ConsumerConfig::default()
        }
    }

    /// Runs `corelog --bootstrap ADDR <args>` with `stdin` as input.
    pub fn cli(&self, args: &[&str], stdin: &str) -> CliOutput {
        let mut full = vec!["--bootstrap".to_string(), self.bootstrap()];
        full.extend(args.iter().map(|s| s.to_string()));
        run_cli(&full, stdin)
    }

    /// Like `cli`, but panics unless it exits 0.
    pub fn cli_ok(&self, args: &[&str], stdin: &str) -> CliOutput {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "corelog {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out
    }

    /// Creates a topic through the CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.cli_ok(
            &[
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ],
            "",
        );
    }

    /// Directory of one partition on disk.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.data_dir
            .join("topics")
            .join(topic)
            .join(partition.to_string())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- broker stderr ({} start(s), data dir {}) ---\n{}\n--- end ---",
                self.starts,
                self.data_dir.display(),
                tail(&self.stderr(), 200)
            );
        }
        // TempDir removes the data dir when `root` drops.
        let _ = self.root.take();
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `corelog <args>` feeding `stdin`, bounded by [`CLI_TIMEOUT`].
pub fn run_cli<S: AsRef<str>>(args: &[S], stdin: &str) -> CliOutput {
    let mut child = Command::new(bin())
        .args(args.iter().map(|s| s.as_ref()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corelog");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.as_bytes().to_vec();
    let writer = thread::spawn(move || {
        // A broken pipe just means the CLI exited early; its status tells why.
        let _ = input.write_all(&data);
    });
    let out = reader_thread(child.stdout.take().expect("stdout"));
    let err = reader_thread(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                panic!(
                    "corelog {:?} did not finish within {CLI_TIMEOUT:?}\nstderr:\n{stderr}",
                    args.iter().map(|s| s.as_ref()).collect::<Vec<_>>()
                );
            }
        }
    };
    let _ = writer.join();
    CliOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs async client code on a fresh glommio executor thread and returns its
/// output; panics if it panics or takes longer than [`CLIENT_TIMEOUT`].
pub fn run_client<G, F, T>(fut_gen: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    run_client_within(CLIENT_TIMEOUT, fut_gen)
}

pub fn run_client_within<G, F, T>(limit: Duration, fut_gen: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = glommio::LocalExecutorBuilder::default()
        .name("test-client")
        .io_memory(256 << 10)
        .spawn(fut_gen)
        .expect("spawn glommio executor");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("client executor failed (a panic inside it?): {e}"),
        Err(_) => panic!("client code did not finish within {limit:?}"),
    }
}

/// Awaits `fut` for at most `limit` inside an executor; panics naming `what`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    let res = futures_lite::future::or(async { Some(fut.await) }, async {
        corelog::timer::sleep_once(limit).await;
        None
    })
    .await;
    match res {
        Some(v) => v,
        None => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Like `within`, but returns `None` on timeout instead of panicking.
pub async fn try_within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        corelog::timer::sleep_once(limit).await;
        None
    })
    .await
}

/// High watermark of every partition of `topic`, via Admin::describe_topic.
pub async fn high_watermarks(cfg: ClientConfig, topic: &str) -> BTreeMap<u32, u64> {
    let admin = Admin::connect(cfg).await.expect("admin connect");
    let info = admin.describe_topic(topic).await.expect("describe topic");
    info.partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect()
}

/// Reads every partition of `topic` from the earliest offset up to the high
/// watermark it had when called. Bounded by `limit` and by a poll count.
pub async fn consume_all(
    consumer_cfg: ConsumerConfig,
    topic: &str,
    limit: Duration,
) -> BTreeMap<u32, Vec<ConsumerRecord>> {
    let hw = high_watermarks(consumer_cfg.client.clone(), topic).await;
    let partitions: Vec<u32> = hw.keys().copied().collect();
    let mut consumer = Consumer::connect(consumer_cfg)
        .await
        .expect("consumer connect");
    consumer
        .assign(topic, &partitions, SeekTo::Earliest)
        .await
        .expect("assign");
    let mut out: BTreeMap<u32, Vec<ConsumerRecord>> =
        partitions.iter().map(|p| (*p, Vec::new())).collect();
    let deadline = Instant::now() + limit;
    let mut polls = 0u64;
    loop {
        let done = hw
            .iter()
            .all(|(p, end)| consumer.position(topic, *p).unwrap_or(0) >= *end);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline && polls < 1_000_000,
            "consume_all({topic}) incomplete after {polls} polls: positions {:?}, want {hw:?}",
            partitions
                .iter()
                .map(|p| (*p, consumer.position(topic, *p)))
                .collect::<Vec<_>>()
        );
        polls += 1;
        for r in consumer.poll().await.expect("poll") {
            if r.offset < hw[&r.partition] {
                out.entry(r.partition).or_default().push(r);
            }
        }
    }
    out
}

/// Asserts that each partition's records have offsets 0, 1, 2, ... in order.
pub fn assert_contiguous(records: &BTreeMap<u32, Vec<ConsumerRecord>>) {
    for (p, recs) in records {
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(
                r.offset, i as u64,
                "partition {p}: record #{i} has offset {} (offsets must be contiguous from 0)",
                r.offset
            );
            assert_eq!(r.partition, *p);
        }
    }
}

/// Value of a record as UTF-8 (panics on a missing value).
pub fn value_str(r: &ConsumerRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().expect("record has a value")).into_owned()
}

pub fn key_str(r: &ConsumerRecord) -> String {
    String::from_utf8_lossy(r.key.as_deref().expect("record has a key")).into_owned()
}

/// The active (highest base offset) segment file of a partition.
pub fn active_segment(partition_dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", partition_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop()
        .unwrap_or_else(|| panic!("no .log segment in {}", partition_dir.display()))
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    v
}

/// A unique topic name for a test.
pub fn topic_name(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A record for `topic` built from its public fields (one place to adapt if
/// the constructor changes).
pub fn record(
    topic: &str,
    partition: Option<u32>,
    key: Option<&str>,
    value: &str,
) -> corelog::client::ProducerRecord {
    corelog::client::ProducerRecord {
        topic: topic.to_string(),
        partition,
        key: key.map(|k| bytes::Bytes::from(k.to_string())),
        value: Some(bytes::Bytes::from(value.to_string())),
        timestamp_ms: None,
        headers: Vec::new(),
    }
}
