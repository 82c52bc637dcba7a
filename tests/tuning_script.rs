//! tuning/corelog-tune in the modes that change nothing: check mode exits 0
//! and prints one row per item wherever it runs (VM, container: N/A rows),
//! `--apply --dry-run` lists a write or a manual step for every CHANGE row
//! and leaves every current value as it was, and bad usage exits 2.
//!
//! Nothing here applies a setting: every run is check mode or a dry run.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Every item the script reports, in its output order.
const ITEMS: &[&str] = &[
    "cpu-governor",
    "irq-affinity-nic",
    "irq-affinity-data-dev",
    "transparent-hugepages",
    "vm.swappiness",
    "data-dev-scheduler",
    "data-dev-nomerges",
    "fs.aio-max-nr",
    "clocksource",
    "net.core.somaxconn",
    "net.core.busy_poll",
    "net.core.busy_read",
    "kernel.io_uring_disabled",
    "memlock-ulimit",
    "memlock-systemd",
];

const STATUSES: &[&str] = &["OK", "CHANGE", "N/A"];

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tuning/corelog-tune")
}

fn run(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("run bash {}: {e}", script().display()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (item, current, status) of every table row, parsed by column position
/// from the header (the table is aligned; values may contain spaces).
fn rows(text: &str) -> Vec<(String, String, String)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("ITEM "));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no table header in:\n{text}"));
    let col = |name: &str| {
        header
            .find(name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (cur, rec, st, note) = (
        col("CURRENT"),
        col("RECOMMENDED"),
        col("STATUS"),
        col("NOTE"),
    );
    lines
        .take_while(|l| l.len() >= st && ITEMS.iter().any(|i| l.starts_with(&format!("{i} "))))
        .map(|l| {
            let item = l[..cur].trim().to_string();
            let current = l[cur..rec].trim().to_string();
            let status = l[st..note.min(l.len())].trim().to_string();
            (item, current, status)
        })
        .collect()
}

#[test]
fn check_mode_prints_every_item_and_exits_zero() {
    let out = run(&[]);
    assert!(
        out.status.success(),
        "check mode failed: {}",
        describe(&out)
    );
    let table = rows(&stdout(&out));
    let items: Vec<&str> = table.iter().map(|(i, _, _)| i.as_str()).collect();
    assert_eq!(items, ITEMS, "rows: {}", describe(&out));
    for (item, _, status) in &table {
        assert!(
            STATUSES.contains(&status.as_str()),
            "{item}: status {status:?}: {}",
            describe(&out)
        );
    }
}

#[test]
fn strict_exits_one_exactly_when_something_needs_a_change() {
    let out = run(&["--strict", "--shards-cpus", "0"]);
    let changes = rows(&stdout(&out))
        .iter()
        .filter(|(_, _, s)| s == "CHANGE")
        .count();
    let want = if changes > 0 { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{}", describe(&out));
}

#[test]
fn dry_run_plans_every_change_and_writes_nothing() {
    let args = ["--shards-cpus", "0"];
    let before = run(&args);
    assert!(before.status.success(), "{}", describe(&before));

    let dry = run(&["--apply", "--dry-run", "--shards-cpus", "0"]);
    assert!(dry.status.success(), "dry run failed: {}", describe(&dry));
    let text = stdout(&dry);
    let table = rows(&text);
    assert_eq!(table.len(), ITEMS.len(), "{}", describe(&dry));
    let planned: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("would write: ") || l.starts_with("manual: "))
        .collect();
    assert!(
        !text.lines().any(|l| l.starts_with("wrote: ")),
        "a dry run wrote: {}",
        describe(&dry)
    );
    for (item, _, status) in &table {
        if status == "CHANGE" {
            assert!(
                planned.iter().any(|l| l.contains(&format!(" {item}: "))),
                "no planned write for {item}: {}",
                describe(&dry)
            );
        }
    }
    if planned.is_empty() {
        assert!(text.contains("nothing to change"), "{}", describe(&dry));
    }

    let after = run(&args);
    let current = |o: &Output| -> Vec<(String, String)> {
        rows(&stdout(o))
            .into_iter()
            .map(|(i, c, _)| (i, c))
            .collect()
    };
    assert_eq!(
        current(&before),
        current(&after),
        "current values changed across a dry run: {}",
        describe(&dry)
    );
}

#[test]
fn bad_usage_exits_two() {
    for args in [
        &["--no-such-flag"][..],
        &["--dry-run"],
        &["--shards-cpus", "7-3"],
        &["--shards-cpus"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
}
