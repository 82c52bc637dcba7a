//! Topic administration through the CLI: create, list, describe, delete, and
//! the errors users hit (duplicate create, unknown topic, invalid name).

mod common;

use common::Broker;

#[test]
fn topic_create_describe_list_delete() {
    let broker = Broker::start();

    broker.cli_ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention_ms=3600000",
        ],
        "",
    );

    let list = broker.cli_ok(&["topic", "list"], "");
    assert!(
        list.stdout.lines().any(|l| l.trim() == "orders"),
        "topic list should name 'orders', got:\n{}",
        list.stdout
    );

    let json = broker.cli_ok(&["topic", "describe", "orders", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim())
        .unwrap_or_else(|e| panic!("describe --format json is not JSON ({e}):\n{}", json.stdout));
    assert_eq!(v["name"], "orders");
    let parts = v["partitions"].as_array().expect("partitions array");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i as u64, "partitions listed in order");
        for field in [
            "leader_node",
            "leader_shard",
            "log_start_offset",
            "log_end_offset",
            "high_watermark",
        ] {
            assert!(
                p[field].is_u64() || p[field].is_i64(),
                "missing {field} in {p}"
            );
        }
        assert_eq!(p["log_end_offset"], 0);
        assert_eq!(p["high_watermark"], 0);
    }
    assert_eq!(
        v["config"]["retention_ms"], "3600000",
        "the --config override is stored with the topic: {v}"
    );

    let text = broker.cli_ok(&["topic", "describe", "orders"], "");
    assert!(
        text.stdout.contains("orders"),
        "text describe names the topic:\n{}",
        text.stdout
    );

    broker.cli_ok(&["topic", "delete", "orders"], "");
    let list = broker.cli_ok(&["topic", "list"], "");
    assert!(
        !list.stdout.lines().any(|l| l.trim() == "orders"),
        "deleted topic still listed:\n{}",
        list.stdout
    );
    assert!(
        !broker.data_dir().join("topics").join("orders").exists(),
        "deleted topic's directory is removed"
    );

    // The name is free again.
    broker.cli_ok(&["topic", "create", "orders", "--partitions", "1"], "");
    let json = broker.cli_ok(&["topic", "describe", "orders", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(v["partitions"].as_array().map(|a| a.len()), Some(1));
}

#[test]
fn topic_errors_exit_non_zero_with_a_clear_message() {
    let broker = Broker::start();
    broker.cli_ok(&["topic", "create", "dup", "--partitions", "2"], "");

    let again = broker.cli(&["topic", "create", "dup", "--partitions", "2"], "");
    assert!(!again.status.success(), "duplicate create must fail");
    assert!(
        again.stderr.contains("error:") && again.stderr.to_lowercase().contains("exists"),
        "duplicate create should say the topic exists, got:\n{}",
        again.stderr
    );

    let unknown = broker.cli(&["topic", "describe", "no-such-topic"], "");
    assert!(
        !unknown.status.success(),
        "describe of unknown topic must fail"
    );
    assert!(
        unknown.stderr.contains("error:")
            && (unknown.stderr.contains("no-such-topic")
                || unknown.stderr.to_lowercase().contains("unknown")),
        "describe of unknown topic should say so, got:\n{}",
        unknown.stderr
    );

    let del = broker.cli(&["topic", "delete", "no-such-topic"], "");
    assert!(!del.status.success(), "delete of unknown topic must fail");
    assert!(del.stderr.contains("error:"), "got:\n{}", del.stderr);

    for bad in ["bad/name", "..", "has space", &"x".repeat(250)] {
        let out = broker.cli(&["topic", "create", bad, "--partitions", "1"], "");
        assert!(
            !out.status.success(),
            "invalid name {bad:?} must be refused"
        );
        assert!(
            out.stderr.contains("error:") && out.stderr.contains("topic name"),
            "invalid name {bad:?} should be explained, got:\n{}",
            out.stderr
        );
    }

    let zero = broker.cli(&["topic", "create", "zero", "--partitions", "0"], "");
    assert!(!zero.status.success(), "0 partitions must be refused");
    assert!(zero.stderr.contains("error:"), "got:\n{}", zero.stderr);

    let bad_cfg = broker.cli(
        &[
            "topic",
            "create",
            "badcfg",
            "--partitions",
            "1",
            "--config",
            "no_such_key=1",
        ],
        "",
    );
    assert!(
        !bad_cfg.status.success(),
        "unknown config key must be refused"
    );
    assert!(
        bad_cfg.stderr.contains("no_such_key"),
        "got:\n{}",
        bad_cfg.stderr
    );

    // None of this hurt the broker.
    let list = broker.cli_ok(&["topic", "list"], "");
    assert_eq!(
        list.stdout.lines().map(str::trim).collect::<Vec<_>>(),
        vec!["dup"],
        "only the valid topic exists"
    );
}

/// `corelog serve` run from a directory with a relative data dir (the
/// embedded default is `./corelog-data`) must create, serve and recover
/// topics just like an absolute one.
#[test]
fn relative_data_dir_works() {
    let mut broker = Broker::start_with(common::BrokerOptions {
        relative_data_dir: true,
        ..common::BrokerOptions::default()
    });
    broker.cli_ok(&["topic", "create", "rel", "--partitions", "2"], "");
    broker.cli_ok(
        &["produce", "rel", "--key-separator", ":"],
        "a:1\nb:2\nc:3\n",
    );
    assert!(
        broker.data_dir().join("topics/rel/0").is_dir(),
        "partition directory under the relative data dir"
    );
    broker.restart();
    let out = broker.cli_ok(&["consume", "rel", "--from-beginning", "--count", "3"], "");
    let mut values: Vec<&str> = out.stdout.lines().collect();
    values.sort_unstable();
    assert_eq!(values, ["1", "2", "3"]);
}
