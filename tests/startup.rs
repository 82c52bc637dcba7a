//! `corelog serve` as a newcomer starts it: a port another broker serves,
//! more shards than CPUs, signals before `listening on`, a data dir that is
//! a file, a data dir of another format version, and one summary line for
//! many partitions.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, default_shards, test_tmp_root, Broker, SHUTDOWN_TIMEOUT, STARTUP_TIMEOUT};

/// Waits (bounded) for `child` to exit.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corelog serve did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `corelog serve ARGS` to completion (it must fail to start) and
/// returns its status and stderr.
fn serve_fails(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(bin())
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corelog serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, STARTUP_TIMEOUT);
    (status, reader.join().unwrap_or_default())
}

fn data_dir(root: &Path, name: &str) -> String {
    root.join(name).to_string_lossy().into_owned()
}

#[test]
fn a_second_broker_on_the_same_port_is_refused() {
    let broker = Broker::start();
    broker.create_topic("mine", 1);
    let root = tempfile::tempdir_in(test_tmp_root()).expect("tempdir");
    let listen = broker.addr().to_string();
    let shards = default_shards().to_string();
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &data_dir(root.path(), "other"),
        "--listen",
        &listen,
        "--shards",
        &shards,
    ]);
    assert!(!status.success(), "second broker must not start:\n{stderr}");
    let expected = format!(
        "error: cannot listen on {listen}: the address is already in use by another process"
    );
    assert!(stderr.contains(&expected), "got:\n{stderr}");
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one error line:\n{stderr}"
    );

    // Every client still lands on the first broker.
    for _ in 0..8 {
        let list = broker.cli_ok(&["topic", "list"], "");
        assert_eq!(list.stdout.trim(), "mine");
    }

    // A port held by any other process gets the same message.
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = other.local_addr().expect("addr").to_string();
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &data_dir(root.path(), "third"),
        "--listen",
        &taken,
        "--shards",
        &shards,
    ]);
    assert!(!status.success());
    let expected = format!(
        "error: cannot listen on {taken}: the address is already in use by another process"
    );
    assert!(stderr.contains(&expected), "got:\n{stderr}");
}

#[test]
fn a_broker_restarts_on_its_own_port() {
    // Connections the broker closed leave TIME_WAIT sockets on its port; the
    // port claim must not mistake them for another process.
    let mut broker = Broker::start();
    broker.create_topic("t", 1);
    broker.cli_ok(&["produce", "t"], "a\nb\n");
    let addr = broker.addr();
    broker.stop();
    let root = broker.data_dir().to_path_buf();
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(&root)
        .args([
            "--listen",
            &addr.to_string(),
            "--shards",
            &default_shards().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), format!("listening on {addr}"));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(wait_bounded(&mut child, SHUTDOWN_TIMEOUT).success());
}

#[test]
fn more_shards_than_cpus_is_refused_with_a_clear_message() {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let root = tempfile::tempdir_in(test_tmp_root()).expect("tempdir");
    let too_many = (cpus + 1).to_string();
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &data_dir(root.path(), "d"),
        "--listen",
        "127.0.0.1:0",
        "--shards",
        &too_many,
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "error: shards = {too_many} is more than the {cpus} CPUs this process may run on"
        )),
        "got:\n{stderr}"
    );
}

#[test]
fn a_data_dir_that_is_a_file_says_so() {
    let root = tempfile::tempdir_in(test_tmp_root()).expect("tempdir");
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &file.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("is a file, not a directory"),
        "got:\n{stderr}"
    );
}

/// SIGTERM right after the broker announced it is starting (before it
/// listens, with hundreds of partitions to open): it exits promptly with
/// status 0. Many partitions also log one summary per shard, not a line each.
#[test]
fn signals_stop_a_starting_broker_and_many_partitions_log_a_summary() {
    const PARTITIONS: u32 = 512;
    let mut broker = Broker::start();
    broker.create_topic("wide", PARTITIONS);
    broker.restart();
    let stderr = broker.stderr_since_start();
    assert_eq!(
        stderr.matches("recovered partition").count(),
        0,
        "clean partitions log no line each:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("opened partitions").count(),
        default_shards(),
        "one summary per shard:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{PARTITIONS} partitions")),
        "startup line counts the partitions:\n{stderr}"
    );
    let dir = broker.data_dir().to_path_buf();
    broker.stop();

    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--shards",
                &default_shards().to_string(),
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `starting` line; got:\n{}", seen.join("\n")));
            let starting = line.contains("starting");
            seen.push(line);
            if starting {
                break;
            }
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let status = wait_bounded(&mut child, SHUTDOWN_TIMEOUT);
        let rest: Vec<String> = rx.try_iter().collect();
        assert!(
            status.success(),
            "signal {sig} during startup: {status}\n{}\n{}",
            seen.join("\n"),
            rest.join("\n")
        );
    }
}

/// A data dir written by the previous batch format (topics, no
/// `format-version` file) and one from a future format are refused with a
/// message naming the version found and the one this build reads; a fresh
/// dir gets the file (docs/storage.md, "Format version").
#[test]
fn a_data_dir_of_another_format_version_is_refused() {
    let root = tempfile::tempdir_in(test_tmp_root()).expect("tempdir");
    let old = root.path().join("old");
    std::fs::create_dir_all(old.join("topics/t/0")).expect("mkdir");
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &old.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("holds format version 1")
            && stderr.contains("this build reads format version 2"),
        "got:\n{stderr}"
    );
    assert!(!old.join("format-version").exists(), "nothing written");

    let future = root.path().join("future");
    std::fs::create_dir_all(&future).expect("mkdir");
    std::fs::write(future.join("format-version"), b"3\n").expect("write");
    let (status, stderr) = serve_fails(&[
        "--data-dir",
        &future.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("holds format version 3")
            && stderr.contains("this build reads format version 2"),
        "got:\n{stderr}"
    );

    let mut broker = Broker::start();
    let version = std::fs::read_to_string(broker.data_dir().join("format-version"))
        .expect("a fresh data dir gets the version file");
    assert_eq!(version.lines().next(), Some("2"), "{version}");
    broker.restart();
    broker.stop();
}
