//! Retention and log management end to end through the CLI: `topic alter`
//! persists across a restart, `topic delete-records` moves the log start
//! (consumers start there, reads below it fail naming the valid range), and
//! `retention_bytes` deletes sealed segments on a live broker. Every wait is
//! bounded in time and count; nothing asserts on timing.

mod common;

use std::time::Duration;

use common::{topic_name, Broker, BrokerOptions};

fn describe(broker: &Broker, topic: &str) -> serde_json::Value {
    let out = broker.cli_ok(&["topic", "describe", topic, "--format", "json"], "");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("describe is not JSON ({e}):\n{}", out.stdout))
}

fn lines(n: usize, value_bytes: usize) -> String {
    (0..n)
        .map(|i| {
            let mut s = format!("v{i}-");
            while s.len() < value_bytes {
                s.push('x');
            }
            s + "\n"
        })
        .collect()
}

fn log_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn topic_alter_survives_restart() {
    let mut broker = Broker::start();
    let t = topic_name("alter");
    broker.create_topic(&t, 2);
    broker.cli_ok(
        &[
            "topic",
            "alter",
            &t,
            "--config",
            "retention_ms=123456",
            "--config",
            "segment_bytes=65536",
            "--config",
            "flush.interval_ms=20",
        ],
        "",
    );
    let check = |v: &serde_json::Value| {
        assert_eq!(v["config"]["retention_ms"], "123456", "{v}");
        assert_eq!(v["config"]["segment_bytes"], "65536", "{v}");
        assert_eq!(v["config"]["flush.interval_ms"], "20", "{v}");
    };
    check(&describe(&broker, &t));
    // The live topic still takes writes under the new settings.
    broker.cli_ok(&["produce", &t], &lines(20, 10));
    broker.restart();
    check(&describe(&broker, &t));

    let bad = broker.cli(&["topic", "alter", &t, "--config", "segment_bytes=0"], "");
    assert!(!bad.status.success(), "invalid value accepted");
    assert!(bad.stderr.contains("error:"), "{}", bad.stderr);
    let unknown = broker.cli(
        &[
            "topic",
            "alter",
            "no-such-topic",
            "--config",
            "retention_ms=1",
        ],
        "",
    );
    assert!(!unknown.status.success());
    assert!(
        unknown.stderr.contains("no-such-topic"),
        "{}",
        unknown.stderr
    );
    check(&describe(&broker, &t));
}

#[test]
fn delete_records_moves_the_log_start() {
    let mut broker = Broker::start();
    let t = topic_name("delrec");
    broker.cli_ok(
        &[
            "topic",
            "create",
            &t,
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
        ],
        "",
    );
    broker.cli_ok(
        &["produce", &t, "--partition", "0", "--batch-bytes", "8192"],
        &lines(1000, 200),
    );
    let out = broker.cli_ok(
        &[
            "topic",
            "delete-records",
            &t,
            "--partition",
            "0",
            "--before",
            "400",
        ],
        "",
    );
    assert!(out.stderr.contains("400"), "{}", out.stderr);
    assert_eq!(
        describe(&broker, &t)["partitions"][0]["log_start_offset"],
        400
    );

    // Above the high watermark: refused.
    let past = broker.cli(
        &[
            "topic",
            "delete-records",
            &t,
            "--partition",
            "0",
            "--before",
            "1001",
        ],
        "",
    );
    assert!(!past.status.success());
    assert!(past.stderr.contains("error:"), "{}", past.stderr);

    let first_offset = |broker: &Broker| {
        let out = broker.cli_ok(
            &[
                "consume",
                &t,
                "--partition",
                "0",
                "--from-beginning",
                "--count",
                "3",
                "--format",
                "json",
                "--max-wait-ms",
                "200",
            ],
            "",
        );
        let first = out.stdout.lines().next().expect("a record").to_string();
        let v: serde_json::Value = serde_json::from_str(&first).expect("json line");
        let offset = v["offset"].as_u64().expect("offset");
        let value = v["value"].as_str().expect("value").to_string();
        assert!(value.starts_with(&format!("v{offset}-")), "{value}");
        offset
    };
    assert_eq!(first_offset(&broker), 400);

    let below = broker.cli(
        &[
            "consume",
            &t,
            "--partition",
            "0",
            "--offset",
            "5",
            "--count",
            "1",
            "--max-wait-ms",
            "200",
        ],
        "",
    );
    assert!(
        !below.status.success(),
        "read below the log start succeeded"
    );
    assert!(
        below.stderr.contains("[400, 1000]"),
        "names the valid range: {}",
        below.stderr
    );

    // Durable across a restart; whole segments below the start are gone.
    broker.restart();
    assert_eq!(
        describe(&broker, &t)["partitions"][0]["log_start_offset"],
        400
    );
    assert_eq!(first_offset(&broker), 400);
    let dir = broker.partition_dir(&t, 0);
    assert!(dir.join("log-start-offset").is_file());
    let bases: Vec<u64> = std::fs::read_dir(&dir)
        .expect("partition dir")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".log").and_then(|b| b.parse().ok())
        })
        .collect();
    let min = bases.iter().copied().min().expect("segments");
    assert!(
        min > 0 && min <= 400,
        "segments wholly below the start are deleted, the one holding it stays: {bases:?}"
    );
}

#[test]
fn retention_bytes_deletes_segments_on_a_live_broker() {
    let broker = Broker::start_with(BrokerOptions {
        config_toml: Some("[shard]\nretention_check_interval_ms = 50\n".into()),
        ..BrokerOptions::default()
    });
    let t = topic_name("retbytes");
    broker.cli_ok(
        &[
            "topic",
            "create",
            &t,
            "--partitions",
            "1",
            "--config",
            "segment_bytes=65536",
            "--config",
            "retention_bytes=131072",
        ],
        "",
    );
    broker.cli_ok(
        &["produce", &t, "--partition", "0", "--batch-bytes", "8192"],
        &lines(2000, 200),
    );
    let dir = broker.partition_dir(&t, 0);
    let mut start = 0u64;
    for _ in 0..400 {
        start = describe(&broker, &t)["partitions"][0]["log_start_offset"]
            .as_u64()
            .expect("log_start_offset");
        if start > 0 && log_files(&dir) <= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start > 0, "retention never advanced the log start");
    let files = log_files(&dir);
    assert!(
        files <= 4,
        "{files} segments left for 128 KiB of retention at 64 KiB segments"
    );
    let out = broker.cli_ok(
        &[
            "consume",
            &t,
            "--partition",
            "0",
            "--from-beginning",
            "--count",
            "1",
            "--format",
            "json",
            "--max-wait-ms",
            "200",
        ],
        "",
    );
    let v: serde_json::Value =
        serde_json::from_str(out.stdout.lines().next().expect("a record")).expect("json");
    assert!(v["offset"].as_u64().expect("offset") >= start);
    assert!(
        broker.stderr().contains("deleting segment"),
        "retention logs deletions"
    );
}
