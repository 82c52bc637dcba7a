//! What the CLI tells a newcomer: a peer that is not a Corelog broker, offset
//! errors that name each fact once, help that lists what it should, and
//! plurals that read right.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use common::{run_cli, Broker};

#[test]
fn a_peer_that_is_not_corelog_is_named_as_such() {
    // An HTTP server: answers anything with a 400 and closes.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_addr = http.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        for mut s in http.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = run_cli(&["--bootstrap", &http_addr, "topic", "list"], "");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&format!(
            "error: {http_addr} did not answer the Corelog handshake"
        )),
        "got:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("HTTP"),
        "says what it got:\n{}",
        out.stderr
    );

    // A silent port: accepts (the kernel's backlog does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    for cmd in [vec!["topic", "list"], vec!["consume", "t", "--count", "1"]] {
        let mut args = vec!["--bootstrap", silent_addr.as_str()];
        args.extend(cmd);
        let out = run_cli(&args, "");
        assert!(!out.status.success());
        assert!(
            out.stderr.contains(&format!(
                "error: {silent_addr} did not answer the Corelog handshake (no answer within"
            )),
            "got:\n{}",
            out.stderr
        );
    }
    drop(silent);
}

#[test]
fn offset_errors_name_each_fact_once() {
    let broker = Broker::start();
    broker.create_topic("orders", 1);
    broker.cli_ok(&["produce", "orders"], "one\n");
    let out = broker.cli(
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--offset",
            "5",
            "--count",
            "1",
        ],
        "",
    );
    assert!(!out.status.success());
    let err = out.stderr.trim();
    assert_eq!(err.matches("out of range").count(), 1, "{err}");
    assert_eq!(err.matches("orders/0").count(), 1, "{err}");
    assert_eq!(err.matches('5').count(), 1, "{err}");

    // u64 offsets beyond what the wire carries are refused as given, never
    // shown as i64::MAX.
    let max = u64::MAX.to_string();
    for args in [
        vec!["consume", "orders", "--partition", "0", "--offset", &max],
        vec![
            "topic",
            "delete-records",
            "orders",
            "--partition",
            "0",
            "--before",
            &max,
        ],
    ] {
        let out = broker.cli(&args, "");
        assert!(!out.status.success());
        assert!(out.stderr.contains(&max), "{}", out.stderr);
        assert!(
            !out.stderr.contains("9223372036854775807 is"),
            "{}",
            out.stderr
        );
    }

    // --offset needs --partition.
    let out = broker.cli(&["consume", "orders", "--offset", "0"], "");
    assert!(!out.status.success());
    assert!(out.stderr.contains("--partition"), "{}", out.stderr);
}

#[test]
fn help_lists_what_it_should() {
    let serve = run_cli(&["serve", "--help"], "");
    assert!(serve.status.success());
    for client_flag in ["--bootstrap", "--request-timeout-ms"] {
        assert!(
            !serve.stdout.contains(client_flag),
            "serve --help shows {client_flag}:\n{}",
            serve.stdout
        );
    }
    let create = run_cli(&["topic", "create", "--help"], "");
    assert!(create.status.success());
    for key in [
        "segment_bytes",
        "segment_ms",
        "index_interval_bytes",
        "flush",
        "flush.interval_ms",
        "retention_ms",
        "retention_bytes",
    ] {
        assert!(
            create.stdout.contains(key),
            "{key} missing:\n{}",
            create.stdout
        );
    }
    assert!(
        create.stdout.contains("-1 = unlimited"),
        "{}",
        create.stdout
    );
    // Client flags work after the command too.
    let out = run_cli(
        &[
            "topic",
            "list",
            "--bootstrap",
            "127.0.0.1:1",
            "--request-timeout-ms",
            "500",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.stderr);
}

#[test]
fn plurals_and_unlimited_retention_read_right() {
    let broker = Broker::start();
    let out = broker.cli_ok(
        &[
            "topic",
            "create",
            "one",
            "--partitions",
            "1",
            "--config",
            "retention_ms=-1",
            "--config",
            "flush.interval_ms=50",
        ],
        "",
    );
    assert!(out.stderr.contains("with 1 partition\n"), "{}", out.stderr);
    let out = broker.cli_ok(&["produce", "one"], "x\n");
    assert!(out.stderr.contains("produced 1 record\n"), "{}", out.stderr);
    let d = broker.cli_ok(&["topic", "describe", "one", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(&d.stdout).expect("json");
    assert_eq!(v["config"]["retention_ms"], "-1");
    assert_eq!(v["config"]["retention_bytes"], "-1");
    assert_eq!(v["config"]["flush.interval_ms"], "50");
    let out = broker.cli_ok(
        &[
            "consume",
            "one",
            "--from-beginning",
            "--count",
            "1",
            "--print-offset",
            "--print-key",
        ],
        "",
    );
    assert_eq!(out.stdout, "0\t0\t\tx\n");
}
