//! Consumer groups through the CLI, against the real binary: `consume
//! --group` commits exactly what it printed (with `--count`, on SIGTERM) so
//! the next member continues without duplicates or gaps; `group list`,
//! `describe` (committed offsets, high watermark, lag; text and JSON),
//! `reset-offsets` (dry run, every target, clamping, refused with members),
//! `delete`; static membership; and the errors users hit.
//!
//! The broker runs with `initial_rebalance_delay_ms = 0` and a 500 ms
//! minimum session timeout so groups form at once. Every wait is a bounded
//! polling loop (time and count).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{bin, Broker, BrokerOptions, CliOutput};

const FAST_GROUPS: &str =
    "[groups]\ninitial_rebalance_delay_ms = 0\nmin_session_timeout_ms = 500\n";

fn broker() -> Broker {
    Broker::start_with(BrokerOptions {
        config_toml: Some(FAST_GROUPS.into()),
        ..BrokerOptions::default()
    })
}

/// (partition, offset, value) of `consume --format json` lines.
fn records(out: &CliOutput) -> Vec<(u32, u64, String)> {
    out.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"));
            (
                v["partition"].as_u64().expect("partition") as u32,
                v["offset"].as_u64().expect("offset"),
                v["value"].as_str().expect("value").to_string(),
            )
        })
        .collect()
}

fn consume_group(b: &Broker, topic: &str, group: &str, count: usize) -> Vec<(u32, u64, String)> {
    let out = b.cli_ok(
        &[
            "consume",
            topic,
            "--group",
            group,
            "--count",
            &count.to_string(),
            "--format",
            "json",
        ],
        "",
    );
    let got = records(&out);
    assert_eq!(
        got.len(),
        count,
        "printed exactly --count records:\n{}",
        out.stdout
    );
    got
}

fn describe(b: &Broker, group: &str) -> serde_json::Value {
    let out = b.cli_ok(&["group", "describe", group, "--format", "json"], "");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("describe --format json is not JSON ({e}):\n{}", out.stdout))
}

/// partition → (committed offset, high watermark, lag) of `topic` in a
/// describe answer (JSON nulls as None).
type Lags = BTreeMap<u32, (Option<u64>, Option<u64>, Option<u64>)>;

fn lags(v: &serde_json::Value, topic: &str) -> Lags {
    v["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| {
            (
                p["partition"].as_u64().expect("partition") as u32,
                (
                    p["committed_offset"].as_u64(),
                    p["high_watermark"].as_u64(),
                    p["lag"].as_u64(),
                ),
            )
        })
        .collect()
}

/// Committed offsets of `topic` (partitions with one).
fn committed(b: &Broker, group: &str, topic: &str) -> BTreeMap<u32, u64> {
    lags(&describe(b, group), topic)
        .into_iter()
        .filter_map(|(p, (c, _, _))| c.map(|c| (p, c)))
        .collect()
}

fn high_watermarks(b: &Broker, topic: &str) -> BTreeMap<u32, u64> {
    let out = b.cli_ok(&["topic", "describe", topic, "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().expect("p") as u32,
                p["high_watermark"].as_u64().expect("hw"),
            )
        })
        .collect()
}

/// The next offset past the records of each partition in `recs`.
fn next_offsets(recs: &[(u32, u64, String)]) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for (p, o, _) in recs {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    m
}

/// Polls `f` every 100 ms until it answers, at most `limit` and 600 times.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    for _ in 0..600 {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {limit:?}");
}

fn reset(b: &Broker, group: &str, topic: &str, to: &[&str], execute: bool) -> CliOutput {
    let mut args = vec!["group", "reset-offsets", group, "--topic", topic];
    args.extend_from_slice(to);
    if execute {
        args.push("--execute");
    }
    b.cli_ok(&args, "")
}

#[test]
fn group_consumers_continue_where_the_last_one_stopped() {
    let b = broker();
    b.create_topic("events", 3);
    let lines: String = (0..30).map(|i| format!("e{i}\n")).collect();
    b.cli_ok(&["produce", "events"], &lines);
    let hw = high_watermarks(&b, "events");
    assert_eq!(hw.values().sum::<u64>(), 30, "{hw:?}");

    // Three members one after the other, each --count N: together they
    // print every record exactly once, and after each the committed offsets
    // are exactly past what was printed so far.
    let mut seen: Vec<(u32, u64, String)> = Vec::new();
    for count in [4, 13, 13] {
        seen.extend(consume_group(&b, "events", "g", count));
        assert_eq!(
            committed(&b, "g", "events"),
            next_offsets(&seen),
            "committed offsets after {} records: {seen:?}",
            seen.len()
        );
    }
    let unique: BTreeSet<(u32, u64)> = seen.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(unique.len(), 30, "no duplicates: {seen:?}");
    let values: BTreeSet<&str> = seen.iter().map(|(_, _, v)| v.as_str()).collect();
    assert_eq!(values.len(), 30, "every record, once: {values:?}");
    for (p, end) in &hw {
        let offsets: Vec<u64> = seen
            .iter()
            .filter(|(q, _, _)| q == p)
            .map(|(_, o, _)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..*end).collect::<Vec<_>>(),
            "partition {p}: in order, no gaps"
        );
    }

    // group list: the group, Empty now that its members left.
    let list = b.cli_ok(&["group", "list"], "");
    assert!(
        list.stdout.lines().any(|l| l == "g\tEmpty"),
        "group list:\n{}",
        list.stdout
    );
    let list = b.cli_ok(&["group", "list", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(list.stdout.trim()).expect("json");
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .any(|g| g["group"] == "g" && g["state"] == "Empty"),
        "{v}"
    );

    // More records: describe shows lag = high watermark - committed.
    let more: String = (30..40).map(|i| format!("e{i}\n")).collect();
    b.cli_ok(&["produce", "events", "--partition", "1"], &more);
    let hw = high_watermarks(&b, "events");
    let d = describe(&b, "g");
    assert_eq!(d["state"], "Empty");
    assert_eq!(d["members"].as_array().map(|m| m.len()), Some(0));
    let l = lags(&d, "events");
    assert_eq!(l.len(), 3, "{d}");
    for (p, (c, h, lag)) in &l {
        let end = hw[p];
        let want_committed = if *p == 1 { end - 10 } else { end };
        assert_eq!(*c, Some(want_committed), "partition {p}: {d}");
        assert_eq!(*h, Some(end), "partition {p}: {d}");
        assert_eq!(*lag, Some(end - want_committed), "partition {p}: {d}");
    }
    let text = b.cli_ok(&["group", "describe", "g"], "");
    assert!(text.stdout.contains("state: Empty\n"), "{}", text.stdout);
    for (p, end) in &hw {
        let c = if *p == 1 { end - 10 } else { *end };
        let line = format!(
            "partition events/{p}: committed_offset={c} high_watermark={end} lag={} member=-",
            end - c
        );
        assert!(
            text.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            text.stdout
        );
    }

    // The next member prints exactly the 10 new ones.
    let tail = consume_group(&b, "events", "g", 10);
    let values: Vec<&str> = tail.iter().map(|(_, _, v)| v.as_str()).collect();
    let want: Vec<String> = (30..40).map(|i| format!("e{i}")).collect();
    assert_eq!(values, want);
    for (_, lag) in lags(&describe(&b, "g"), "events")
        .into_iter()
        .map(|(p, (_, _, lag))| (p, lag))
    {
        assert_eq!(lag, Some(0));
    }
}

#[test]
fn reset_offsets_plans_executes_and_clamps() {
    let b = broker();
    b.create_topic("r", 2);
    for p in ["0", "1"] {
        let first: String = (0..5).map(|i| format!("{p}-{i}\n")).collect();
        b.cli_ok(&["produce", "r", "--partition", p], &first);
    }
    // Records produced from now on have timestamps >= cut (same clock).
    let cut = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for p in ["0", "1"] {
        let second: String = (5..10).map(|i| format!("{p}-{i}\n")).collect();
        b.cli_ok(&["produce", "r", "--partition", p], &second);
    }
    consume_group(&b, "r", "rg", 20);
    let all = BTreeMap::from([(0, 10), (1, 10)]);
    assert_eq!(committed(&b, "rg", "r"), all);

    // A dry run prints the plan and changes nothing.
    let out = reset(&b, "rg", "r", &["--to-earliest"], false);
    assert!(
        out.stderr
            .contains("dry run: nothing changed (add --execute)"),
        "{}",
        out.stderr
    );
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![vec!["0", "10", "0"], vec!["1", "10", "0"]],
        "{}",
        out.stdout
    );
    assert_eq!(committed(&b, "rg", "r"), all, "a dry run changes nothing");

    // --execute --to-earliest: describe shows it, and the next member
    // starts from the beginning.
    reset(&b, "rg", "r", &["--to-earliest"], true);
    assert_eq!(committed(&b, "rg", "r"), BTreeMap::from([(0, 0), (1, 0)]));
    let again = consume_group(&b, "r", "rg", 20);
    let offsets: BTreeSet<(u32, u64)> = again.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(offsets.len(), 20, "everything again, once: {again:?}");
    assert_eq!(committed(&b, "rg", "r"), all);

    let cases: Vec<(Vec<&str>, BTreeMap<u32, u64>)> = vec![
        (vec!["--shift-by", "-2"], BTreeMap::from([(0, 8), (1, 8)])),
        (vec!["--shift-by", "1"], BTreeMap::from([(0, 9), (1, 9)])),
        // Clamped to the high watermark and the log start.
        (vec!["--shift-by", "5"], all.clone()),
        (vec!["--shift-by", "-50"], BTreeMap::from([(0, 0), (1, 0)])),
        (vec!["--to-offset", "3"], BTreeMap::from([(0, 3), (1, 3)])),
        (vec!["--to-offset", "100"], all.clone()),
        (vec!["--to-latest"], all.clone()),
    ];
    for (to, want) in cases {
        let out = reset(&b, "rg", "r", &to, true);
        assert!(!out.stderr.contains("dry run"), "{}", out.stderr);
        assert_eq!(committed(&b, "rg", "r"), want, "after {to:?}");
    }

    // --to-timestamp: the first record at or after the cut (the broker's
    // ListOffsets answer, checked against the records' own timestamps).
    let stamps = b.cli_ok(
        &[
            "consume",
            "r",
            "--from-beginning",
            "--count",
            "20",
            "--format",
            "json",
        ],
        "",
    );
    let mut want = BTreeMap::new();
    for l in stamps.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        let (p, o, ts) = (
            v["partition"].as_u64().expect("p") as u32,
            v["offset"].as_u64().expect("o"),
            v["timestamp"].as_i64().expect("ts"),
        );
        if ts >= cut {
            let e = want.entry(p).or_insert(o);
            *e = (*e).min(o);
        }
    }
    for p in [0, 1] {
        assert!(
            want.get(&p).is_some_and(|o| *o <= 5),
            "partition {p}: the second produce is after the cut: {want:?}"
        );
    }
    let out = reset(&b, "rg", "r", &["--to-timestamp", &cut.to_string()], true);
    assert_eq!(committed(&b, "rg", "r"), want, "{}", out.stdout);
    // Past every record: the high watermark.
    let future = (cut + 3_600_000).to_string();
    reset(&b, "rg", "r", &["--to-timestamp", &future], true);
    assert_eq!(committed(&b, "rg", "r"), all);

    // The JSON plan.
    let out = reset(
        &b,
        "rg",
        "r",
        &["--to-offset", "4", "--format", "json"],
        false,
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["group"], "rg");
    assert_eq!(v["topic"], "r");
    assert_eq!(v["partitions"][1]["partition"], 1);
    assert_eq!(v["partitions"][1]["current_offset"], 10);
    assert_eq!(v["partitions"][1]["new_offset"], 4);

    // Errors: an unknown topic; no target, or two; shifting without a
    // committed offset.
    let out = b.cli(
        &[
            "group",
            "reset-offsets",
            "rg",
            "--topic",
            "nope",
            "--to-earliest",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("nope"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    for bad in [
        vec!["group", "reset-offsets", "rg", "--topic", "r"],
        vec![
            "group",
            "reset-offsets",
            "rg",
            "--topic",
            "r",
            "--to-earliest",
            "--to-latest",
        ],
    ] {
        let out = b.cli(&bad, "");
        assert!(!out.status.success(), "{bad:?} must be refused");
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
    }
    let out = b.cli(
        &[
            "group",
            "reset-offsets",
            "fresh",
            "--topic",
            "r",
            "--shift-by",
            "1",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("no committed offset"), "{}", out.stderr);

    // delete: offsets gone, the group Dead and no longer listed.
    let out = b.cli_ok(&["group", "delete", "rg"], "");
    assert!(out.stderr.contains("deleted group rg"), "{}", out.stderr);
    let d = describe(&b, "rg");
    assert_eq!(d["state"], "Dead", "{d}");
    assert_eq!(d["partitions"].as_array().map(|p| p.len()), Some(0), "{d}");
    let list = b.cli_ok(&["group", "list"], "");
    assert!(
        !list.stdout.lines().any(|l| l.starts_with("rg\t")),
        "{}",
        list.stdout
    );
    let out = b.cli(&["group", "delete", "rg"], "");
    assert!(!out.status.success(), "deleting it again fails");
    assert!(out.stderr.contains("rg"), "{}", out.stderr);
}

/// A child process killed (and reaped) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_live_member_blocks_delete_and_reset_until_it_leaves_on_sigterm() {
    let b = broker();
    b.create_topic("live", 2);
    b.cli_ok(&["produce", "live"], "a\nb\nc\nd\n");
    let mut child = Command::new(bin())
        .args([
            "--bootstrap",
            &b.bootstrap(),
            "consume",
            "live",
            "--group",
            "lg",
            "--print-offset",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corelog consume");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mut child = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let err_reader = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // It joins: Stable, one member owning both partitions.
    let member = wait_for("the member joins", Duration::from_secs(60), || {
        let d = describe(&b, "lg");
        let members = d["members"].as_array()?;
        (d["state"] == "Stable"
            && members.len() == 1
            && members[0]["partitions"].as_array()?.len() == 2)
            .then(|| members[0]["member_id"].as_str().map(str::to_string))
            .flatten()
    });
    let text = b.cli_ok(&["group", "describe", "lg"], "");
    assert!(text.stdout.contains("state: Stable\n"), "{}", text.stdout);
    assert!(
        text.stdout.contains(&format!(
            "member {member}: client_id=corelog-cli host=127.0.0.1 "
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("partitions=live/0,live/1\n"),
        "{}",
        text.stdout
    );

    // It prints (and commits) the four records, then what is produced next.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.len() < 4 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    assert_eq!(lines.len(), 4, "{lines:?}");
    b.cli_ok(&["produce", "live", "--partition", "0"], "e\n");
    let l = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the member prints a new record");
    assert!(l.ends_with("\te"), "{l:?}");

    // Delete and an executed reset are refused while it is a member; a dry
    // run is allowed.
    for args in [
        vec!["group", "delete", "lg"],
        vec![
            "group",
            "reset-offsets",
            "lg",
            "--topic",
            "live",
            "--to-earliest",
            "--execute",
        ],
    ] {
        let out = b.cli(&args, "");
        assert!(!out.status.success(), "{args:?} must be refused");
        assert_eq!(
            out.stderr.trim(),
            "error: group lg has 1 active member; stop them first",
            "{args:?}"
        );
    }
    reset(&b, "lg", "live", &["--to-earliest"], false);

    // SIGTERM: it commits what it printed, leaves, and exits 0.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_for("consume exits on SIGTERM", Duration::from_secs(60), || {
        child.0.try_wait().expect("try_wait")
    });
    let err = err_reader.join().unwrap_or_default();
    assert!(status.success(), "exit {status}; stderr:\n{err}");
    assert!(!err.contains("error:"), "{err}");
    let d = describe(&b, "lg");
    assert_eq!(d["state"], "Empty", "left the group at once: {d}");
    let hw = high_watermarks(&b, "live");
    let l = lags(&d, "live");
    for (p, end) in &hw {
        assert_eq!(
            l[p],
            (Some(*end), Some(*end), Some(0)),
            "partition {p}: {d}"
        );
    }
    b.cli_ok(&["group", "delete", "lg"], "");
    assert_eq!(describe(&b, "lg")["state"], "Dead");
}

#[test]
fn a_static_member_keeps_its_place_until_its_session_times_out() {
    let b = broker();
    b.create_topic("st", 1);
    b.cli_ok(&["produce", "st"], "x\ny\n");
    let out = b.cli_ok(
        &[
            "consume",
            "st",
            "--group",
            "sg",
            "--group-instance-id",
            "worker-1",
            "--session-timeout-ms",
            "5000",
            "--count",
            "1",
        ],
        "",
    );
    assert_eq!(out.stdout, "x\n");
    // A static member does not leave on exit: it is still there right
    // after, and gone once its session (5 s) has passed without heartbeats.
    let d = describe(&b, "sg");
    let members = d["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{d}");
    assert_eq!(members[0]["group_instance_id"], "worker-1", "{d}");
    assert_eq!(lags(&d, "st")[&0].0, Some(1), "{d}");
    wait_for(
        "the static member's session expires",
        Duration::from_secs(60),
        || (describe(&b, "sg")["state"] == "Empty").then_some(()),
    );
    let out = b.cli_ok(&["consume", "st", "--group", "sg", "--count", "1"], "");
    assert_eq!(out.stdout, "y\n");
}

#[test]
fn group_errors_exit_non_zero_with_one_line() {
    let b = broker();
    b.create_topic("t", 1);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["consume", "missing", "--group", "g", "--count", "1"],
            "missing",
        ),
        (vec!["group", "delete", "never-was"], "never-was"),
        (
            vec!["consume", "t", "--group", "g", "--partition", "0"],
            "--partition",
        ),
        (vec!["consume", "t", "--group-instance-id", "i"], "--group"),
        (
            vec![
                "consume",
                "t",
                "--group",
                "g",
                "--session-timeout-ms",
                "10",
                "--count",
                "1",
            ],
            "session",
        ),
    ];
    for (args, mention) in cases {
        let out = b.cli(&args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains(mention),
            "{args:?} should say {mention:?}:\n{}",
            out.stderr
        );
    }
    // describe of a group nobody used: Dead, nothing committed.
    let d = describe(&b, "nobody");
    assert_eq!(d["state"], "Dead");
    assert_eq!(d["members"].as_array().map(|m| m.len()), Some(0));
    assert_eq!(d["partitions"].as_array().map(|m| m.len()), Some(0));
}
