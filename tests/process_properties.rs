//! What the running broker process looks like from /proc: segment files open
//! with O_DIRECT, and one shard thread group per shard, each pinned to
//! exactly one CPU, distinct across shards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{default_shards, Broker, BrokerOptions};

/// (fd, target) of every open file of `pid` whose path ends in `.log`.
fn open_segments(pid: u32) -> Vec<(String, String)> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let Ok(e) = e else { continue };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target.ends_with(".log") {
            out.push((e.file_name().to_string_lossy().into_owned(), target));
        }
    }
    out
}

/// The `flags:` field of /proc/<pid>/fdinfo/<fd>, parsed as octal.
fn fd_flags(pid: u32, fd: &str) -> i32 {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or_else(|| panic!("no flags in {path}:\n{text}"));
    i32::from_str_radix(line.trim(), 8).unwrap_or_else(|e| panic!("flags {line:?}: {e}"))
}

/// CPUs in a `Cpus_allowed_list` value such as `0-2,5`.
fn parse_cpu_list(s: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().expect("cpu"));
            }
        }
    }
    out
}

/// comm -> allowed CPUs of every thread with that comm, for `shard-*` threads.
fn shard_threads(pid: u32) -> BTreeMap<String, Vec<BTreeSet<usize>>> {
    let mut out: BTreeMap<String, Vec<BTreeSet<usize>>> = BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let Ok(e) = e else { continue };
        let task = e.path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("shard-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.join("status")) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(parse_cpu_list)
            .unwrap_or_default();
        out.entry(comm).or_default().push(cpus);
    }
    out
}

#[test]
fn segments_use_o_direct_and_shards_are_pinned() {
    assert!(
        Path::new("/proc/self/fdinfo").exists(),
        "this test reads /proc (Linux only)"
    );
    let shards = default_shards();
    let broker = Broker::start_with(BrokerOptions {
        shards,
        ..BrokerOptions::default()
    });
    // Enough partitions that every shard owns some, and data in each.
    broker.create_topic("direct", 4);
    let input: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    broker.cli_ok(&["produce", "direct", "--key-separator", ":"], &input);

    let pid = broker.pid();
    let segs = open_segments(pid);
    assert!(
        !segs.is_empty(),
        "the broker holds no .log segment open while serving"
    );
    for (fd, target) in &segs {
        let flags = fd_flags(pid, fd);
        assert_ne!(
            flags & libc::O_DIRECT,
            0,
            "segment {target} (fd {fd}) is open without O_DIRECT (flags {flags:o})"
        );
    }

    // Each shard executor thread (comm `shard-<i>-<id>`; threads it spawns
    // inherit the name) is pinned to exactly one CPU, distinct per shard.
    let threads = shard_threads(pid);
    assert_eq!(
        threads.len(),
        shards,
        "one shard thread group per shard: {threads:?}"
    );
    let mut used = BTreeSet::new();
    for (comm, sets) in &threads {
        let first = sets[0].clone();
        assert_eq!(first.len(), 1, "{comm} is pinned to one CPU, got {first:?}");
        for s in sets {
            assert_eq!(s, &first, "every {comm} thread is on the shard's CPU");
        }
        let cpu = *first.iter().next().expect("cpu");
        assert!(
            used.insert(cpu),
            "CPU {cpu} pinned by two shards: {threads:?}"
        );
    }
}
