//! `corelog produce` / `corelog consume` round trips: keyed lines, explicit
//! partitions, start offsets, `--count`, `--format json`, and the errors
//! (unknown topic, a line without the key separator).

mod common;

use common::Broker;
use corelog::client::partition_for_key;

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

#[test]
fn keyed_lines_round_trip_as_json() {
    let broker = Broker::start();
    broker.create_topic("keyed", 2);
    let n = 20;
    let input: String = (0..n)
        .map(|i| format!("user-{}:event {i}\n", i % 5))
        .collect();
    let out = broker.cli_ok(&["produce", "keyed", "--key-separator", ":"], &input);
    assert!(
        out.stderr.contains(&format!("produced {n} records")),
        "produce reports its count on stderr, got:\n{}",
        out.stderr
    );

    let out = broker.cli_ok(
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            "json",
        ],
        "",
    );
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), n, "--count {n} prints exactly {n} records");
    let mut seen = Vec::new();
    for r in &recs {
        for field in ["partition", "offset", "timestamp", "key", "value"] {
            assert!(r.get(field).is_some(), "json record lacks {field}: {r}");
        }
        let key = r["key"].as_str().expect("key string");
        let value = r["value"].as_str().expect("value string");
        let partition = r["partition"].as_u64().expect("partition");
        assert_eq!(
            partition,
            partition_for_key(key.as_bytes(), 2) as u64,
            "key {key} landed in the partition partition_for_key names"
        );
        assert!(r["timestamp"].as_i64().is_some_and(|t| t > 0), "{r}");
        let i: usize = value
            .strip_prefix("event ")
            .and_then(|s| s.parse().ok())
            .expect("value");
        assert_eq!(key, format!("user-{}", i % 5));
        seen.push((partition, r["offset"].as_u64().expect("offset"), i));
    }
    seen.sort();
    let mut values: Vec<usize> = seen.iter().map(|s| s.2).collect();
    values.sort();
    assert_eq!(
        values,
        (0..n).collect::<Vec<_>>(),
        "every line exactly once"
    );
    // Within a partition, offsets are 0.. in the order the lines were given.
    for p in 0..2u64 {
        let part: Vec<_> = seen.iter().filter(|s| s.0 == p).collect();
        for (j, s) in part.iter().enumerate() {
            assert_eq!(s.1, j as u64, "partition {p} offsets contiguous");
        }
        assert!(
            part.windows(2).all(|w| w[0].2 < w[1].2),
            "partition {p} keeps line order"
        );
    }
}

#[test]
fn explicit_partition_offsets_count_and_text_format() {
    let broker = Broker::start();
    broker.create_topic("plain", 2);
    broker.cli_ok(
        &["produce", "plain", "--partition", "1"],
        "alpha\nbeta\ngamma\n",
    );
    broker.cli_ok(&["produce", "plain", "--partition", "0"], "zero\n");

    let out = broker.cli_ok(
        &[
            "consume",
            "plain",
            "--partition",
            "1",
            "--from-beginning",
            "--count",
            "3",
        ],
        "",
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec!["alpha", "beta", "gamma"],
        "text format prints one value per line"
    );

    let out = broker.cli_ok(
        &[
            "consume",
            "plain",
            "--partition",
            "1",
            "--offset",
            "1",
            "--count",
            "2",
            "--format",
            "json",
        ],
        "",
    );
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["offset"], 1);
    assert_eq!(recs[0]["value"], "beta");
    assert_eq!(recs[1]["offset"], 2);
    assert_eq!(recs[1]["value"], "gamma");
    for r in &recs {
        assert_eq!(r["partition"], 1);
        assert!(r["key"].is_null(), "no key given: key is null: {r}");
    }

    let out = broker.cli_ok(
        &[
            "consume",
            "plain",
            "--partition",
            "0",
            "--from-beginning",
            "--count",
            "1",
        ],
        "",
    );
    assert_eq!(out.stdout.trim(), "zero");

    let out = broker.cli_ok(&["topic", "describe", "plain", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["partitions"][0]["log_end_offset"], 1);
    assert_eq!(v["partitions"][1]["log_end_offset"], 3);
    assert_eq!(v["partitions"][1]["high_watermark"], 3);
}

#[test]
fn produce_errors_exit_non_zero() {
    let broker = Broker::start();

    let out = broker.cli(&["produce", "nope"], "a\nb\n");
    assert!(
        !out.status.success(),
        "produce to an unknown topic must fail"
    );
    assert!(
        out.stderr.contains("error:")
            && (out.stderr.contains("nope") || out.stderr.to_lowercase().contains("unknown")),
        "should name the problem, got:\n{}",
        out.stderr
    );

    broker.create_topic("sep", 1);
    let out = broker.cli(
        &["produce", "sep", "--key-separator", ":"],
        "k:v\nno separator here\n",
    );
    assert!(!out.status.success(), "a line without the separator fails");
    assert!(
        out.stderr.contains("error:") && out.stderr.contains('2'),
        "the error names line 2, got:\n{}",
        out.stderr
    );

    let out = broker.cli(
        &[
            "consume",
            "nope",
            "--from-beginning",
            "--count",
            "1",
            "--max-wait-ms",
            "100",
        ],
        "",
    );
    assert!(
        !out.status.success(),
        "consume of an unknown topic must fail"
    );
    assert!(out.stderr.contains("error:"), "got:\n{}", out.stderr);

    let out = broker.cli(&["produce", "sep", "--partition", "7"], "x\n");
    assert!(
        !out.status.success(),
        "produce to a missing partition fails"
    );
    assert!(out.stderr.contains("error:"), "got:\n{}", out.stderr);
}
