//! The README's CLI examples, run in the order written against an empty
//! broker: every one must succeed, so the README cannot rot.
//!
//! Each line of the first ```sh block under "## CLI" runs through `sh -c`
//! with `corelog` defined as the real binary pointed at the test broker
//! (`--bootstrap`); comment lines are skipped. A line marked "follows until
//! Ctrl-C" is started in the background; the test produces records to its
//! topic until it prints one, then interrupts it.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{bin, Broker, CLI_TIMEOUT};

/// The README's first ```sh block after `## CLI`, one command per item.
fn cli_examples() -> Vec<String> {
    let readme = include_str!("../README.md");
    let cli = readme
        .split_once("\n## CLI\n")
        .expect("README has a `## CLI` section")
        .1;
    let block = cli
        .split_once("```sh\n")
        .expect("the CLI section has a ```sh block")
        .1
        .split_once("\n```")
        .expect("the block is closed")
        .0;
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn shell(broker: &Broker, line: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "corelog() {{ \"$CORELOG_BIN\" --bootstrap \"$CORELOG_ADDR\" \"$@\"; }}\n{line}"
        ))
        .env("CORELOG_BIN", bin())
        .env("CORELOG_ADDR", broker.bootstrap())
        .env("RUST_LOG", "warn")
        // Its own process group, so that the corelog under `sh` is stopped
        // with it.
        .process_group(0);
    cmd
}

/// Interrupts (Ctrl-C) the whole process group of `child`, then reaps it.
fn interrupt(child: &mut Child) {
    // SAFETY: kill(2) on the process group we created for our own child.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGINT);
    }
    let _ = child.wait();
}

fn run_ok(broker: &Broker, line: &str) -> String {
    let mut child = shell(broker, line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        let out = std::io::read_to_string(stdout).unwrap_or_default();
        let err = std::io::read_to_string(stderr).unwrap_or_default();
        let _ = tx.send((out, err));
    });
    let (out, err) = match rx.recv_timeout(CLI_TIMEOUT) {
        Ok(o) => o,
        Err(_) => {
            interrupt(&mut child);
            panic!("README example `{line}` did not finish within {CLI_TIMEOUT:?}");
        }
    };
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "README example `{line}` failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// A follower: runs until it prints a record, fed by produces to `topic`.
fn run_follower(broker: &Broker, line: &str, topic: &str) {
    let mut child = shell(broker, line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    // The follower starts at the end it finds when it connects, so keep
    // producing (a bounded number of times) until it prints one.
    let mut printed = None;
    for i in 0..100 {
        run_ok(
            broker,
            &format!("echo follow-{i} | corelog produce {topic} --partition 0"),
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            printed = Some(l);
            break;
        }
    }
    interrupt(&mut child);
    let printed = printed.unwrap_or_else(|| panic!("README example `{line}` printed nothing"));
    assert!(
        printed.starts_with("follow-"),
        "follower printed {printed:?}"
    );
}

#[test]
fn readme_cli_examples_run_in_order() {
    let broker = Broker::start();
    let examples = cli_examples();
    assert!(
        examples.len() >= 10,
        "the README's CLI block was not found whole: {examples:?}"
    );
    for line in &examples {
        if line.contains("follows until Ctrl-C") {
            let topic = line
                .split_whitespace()
                .nth(2)
                .expect("`corelog consume TOPIC`");
            run_follower(&broker, line, topic);
        } else {
            run_ok(&broker, line);
        }
    }
    // The block ends by deleting its topic: the broker is empty again (but
    // for the internal topic the group examples made the broker create).
    let list = broker.cli_ok(&["topic", "list"], "");
    let left: Vec<&str> = list
        .stdout
        .lines()
        .filter(|t| *t != "__consumer_offsets")
        .collect();
    assert!(
        left.is_empty(),
        "README examples leave no topic behind: {left:?}"
    );
}

#[test]
fn readme_says_how_to_get_corelog_on_the_path_before_using_it() {
    let readme = include_str!("../README.md");
    let install = readme
        .find("cargo install --path .")
        .expect("README says `cargo install --path .`");
    let first_use = readme
        .find("corelog topic")
        .expect("README uses `corelog topic`");
    assert!(install < first_use, "install instructions come first");
}
