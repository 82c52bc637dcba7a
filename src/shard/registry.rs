//! The topic registry on disk: `<data_dir>/topics/<topic>/topic.json`, the
//! partition→shard assignment, and the startup scan.
//!
//! Owns: the topic.json format, where topic and partition directories live,
//! the deterministic assignment `(fnv1a(topic) + partition) % shards`, and
//! the durable write (tmp + fsync + rename + fsync dir) and durable removal
//! (rename into `<data_dir>/deleted/` + fsync, then remove).
//!
//! Invariants: a topic exists on disk iff its topic.json exists (it is
//! written last on create and its directory is renamed away first on delete);
//! the startup scan never fails because of one bad topic (it warns and skips);
//! everything here is synchronous I/O through the shard's [`Disk`] (the
//! real file system or the simulated one), run on the main thread at startup
//! and on the blocking pool at runtime, never on a shard's reactor.
//!
//! Must not know: partitions' files (only their directories).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TopicConfig;
use crate::io::{Clock, Disk};
use crate::protocol::ids::validate_topic_name;
use crate::protocol::{PartitionId, ShardId};

/// Name of the registry file inside a topic directory.
pub const TOPIC_FILE: &str = "topic.json";
const TOPIC_FILE_TMP: &str = "topic.json.tmp";

/// One topic as every shard sees it. Plain data (`Send`), broadcast over the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// `assignment[p]` is the shard owning partition `p`.
    pub assignment: Vec<ShardId>,
}

impl TopicMeta {
    pub fn new(name: String, partitions: u32, config: TopicConfig, shards: usize) -> Self {
        let assignment = assign(&name, partitions, shards);
        Self {
            name,
            partitions,
            config,
            assignment,
        }
    }

    /// The shard owning `partition`, if the partition exists.
    pub fn owner(&self, partition: PartitionId) -> Option<ShardId> {
        self.assignment.get(partition as usize).copied()
    }
}

/// The on-disk form of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TopicFile {
    name: String,
    partitions: u32,
    /// Every topic setting as `key = value` (the form `TopicConfig::set` takes).
    config: BTreeMap<String, String>,
    /// Shard count the assignment was computed for.
    shard_count: usize,
    assignment: Vec<ShardId>,
}

/// 32-bit FNV-1a of a topic name: stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The owning shard of every partition of `topic`: `(fnv1a(topic) + p) % shards`.
pub fn assign(topic: &str, partitions: u32, shards: usize) -> Vec<ShardId> {
    let shards = shards.max(1) as u64;
    let h = fnv1a(topic.as_bytes()) as u64;
    (0..partitions as u64)
        .map(|p| ((h + p) % shards) as ShardId)
        .collect()
}

pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

pub fn deleted_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("deleted")
}

pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    topics_dir(data_dir).join(topic)
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: PartitionId) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.to_string())
}

fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Writes `topic.json` durably: tmp file, fsync, rename, fsync the directory.
pub fn write_topic_file(
    disk: &Disk,
    data_dir: &Path,
    meta: &TopicMeta,
    shard_count: usize,
) -> io::Result<()> {
    let dir = topic_dir(data_dir, &meta.name);
    disk.create_dir_all_durable(&dir)
        .map_err(|e| ctx(e, "cannot create", &dir))?;
    let file = TopicFile {
        name: meta.name.clone(),
        partitions: meta.partitions,
        config: meta.config.entries().into_iter().collect(),
        shard_count,
        assignment: meta.assignment.clone(),
    };
    let text = serde_json::to_vec_pretty(&file)
        .map_err(|e| io::Error::other(format!("cannot encode topic.json: {e}")))?;
    let tmp = dir.join(TOPIC_FILE_TMP);
    disk.write(&tmp, &text, true)
        .map_err(|e| ctx(e, "cannot write", &tmp))?;
    let path = dir.join(TOPIC_FILE);
    disk.rename(&tmp, &path)
        .map_err(|e| ctx(e, "cannot rename into", &path))?;
    disk.sync_dir_blocking(&dir)
        .map_err(|e| ctx(e, "cannot fsync", &dir))
}

/// Creates a new topic on disk: clears any leftover directory of that name
/// (one without a topic.json: a create that crashed before committing),
/// creates the partition directories, then commits by writing topic.json.
pub fn create_topic_on_disk(
    disk: &Disk,
    data_dir: &Path,
    meta: &TopicMeta,
    shard_count: usize,
) -> io::Result<()> {
    let dir = topic_dir(data_dir, &meta.name);
    if disk.exists(&dir.join(TOPIC_FILE)) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", dir.join(TOPIC_FILE).display()),
        ));
    }
    if disk.exists(&dir) {
        disk.remove_dir_all(&dir)
            .map_err(|e| ctx(e, "cannot clear stale", &dir))?;
    }
    let topics = topics_dir(data_dir);
    disk.create_dir_all_durable(&topics)
        .map_err(|e| ctx(e, "cannot create", &topics))?;
    for p in 0..meta.partitions {
        let pdir = partition_dir(data_dir, &meta.name, p);
        disk.create_dir_all(&pdir)
            .map_err(|e| ctx(e, "cannot create", &pdir))?;
    }
    // The partition directories' entries become durable with the topic
    // directory's fsync in write_topic_file.
    write_topic_file(disk, data_dir, meta, shard_count)?;
    disk.sync_dir_blocking(&topics)
        .map_err(|e| ctx(e, "cannot fsync", &topics))
}

/// Removes a topic durably: renames its directory into `<data_dir>/deleted/`
/// (atomic: after a crash the topic is either whole or gone), fsyncs, then
/// removes the files. A missing directory is not an error.
pub fn remove_topic_from_disk(
    disk: &Disk,
    clock: &Clock,
    data_dir: &Path,
    topic: &str,
) -> io::Result<()> {
    let dir = topic_dir(data_dir, topic);
    if !disk.exists(&dir) {
        return Ok(());
    }
    let graveyard = deleted_dir(data_dir);
    disk.create_dir_all_durable(&graveyard)
        .map_err(|e| ctx(e, "cannot create", &graveyard))?;
    // A unique name per deletion (a topic can be deleted, re-created and
    // deleted again before the graveyard is cleared).
    let mut target = graveyard.join(format!("{topic}-{}", clock.wall_ms()));
    let mut n = 0;
    while disk.exists(&target) {
        n += 1;
        target = graveyard.join(format!("{topic}-{}-{n}", clock.wall_ms()));
    }
    disk.rename(&dir, &target)
        .map_err(|e| ctx(e, "cannot move away", &dir))?;
    let topics = topics_dir(data_dir);
    disk.sync_dir_blocking(&topics)
        .map_err(|e| ctx(e, "cannot fsync", &topics))?;
    disk.sync_dir_blocking(&graveyard)
        .map_err(|e| ctx(e, "cannot fsync", &graveyard))?;
    disk.remove_dir_all(&target)
        .map_err(|e| ctx(e, "cannot remove", &target))
}

/// Parses one topic.json. `Err` says why it was rejected.
fn parse_topic_file(
    text: &[u8],
    dir_name: &str,
    max_partitions: u32,
) -> Result<(TopicMeta, usize), String> {
    let file: TopicFile = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if file.name != dir_name {
        return Err(format!(
            "names topic '{}' but lives in directory '{dir_name}'",
            file.name
        ));
    }
    validate_topic_name(&file.name)?;
    if file.partitions == 0 || file.partitions > max_partitions {
        return Err(format!(
            "has {} partitions (allowed 1..={max_partitions})",
            file.partitions
        ));
    }
    let mut config = TopicConfig::default();
    for (k, v) in &file.config {
        config.set(k, v).map_err(|e| e.to_string())?;
    }
    let meta = TopicMeta {
        name: file.name,
        partitions: file.partitions,
        config,
        assignment: file.assignment,
    };
    Ok((meta, file.shard_count))
}

/// Loads every topic under `<data_dir>/topics`, (re)computing assignments
/// for `shards` and rewriting topic.json where the stored one differs.
/// Unreadable or invalid topics are skipped with a warning. Also clears
/// leftovers of interrupted deletes.
pub fn load_topics(
    disk: &Disk,
    data_dir: &Path,
    shards: usize,
    max_partitions: u32,
) -> io::Result<Vec<TopicMeta>> {
    let graveyard = deleted_dir(data_dir);
    if disk.exists(&graveyard) {
        if let Err(e) = disk.remove_dir_all(&graveyard) {
            tracing::warn!("cannot clear {}: {e}", graveyard.display());
        }
    }
    let topics = topics_dir(data_dir);
    disk.create_dir_all_durable(&topics)
        .map_err(|e| ctx(e, "cannot create", &topics))?;
    let mut out = Vec::new();
    let entries = disk
        .list_dir(&topics)
        .map_err(|e| ctx(e, "cannot list", &topics))?;
    for entry in entries {
        let dir = topics.join(&entry.name);
        if !entry.is_dir {
            continue;
        }
        let dir_name = entry.name;
        let file = dir.join(TOPIC_FILE);
        let text = match disk.read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    "skipping {}: no {TOPIC_FILE} (an interrupted create?)",
                    dir.display()
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    "skipping topic {dir_name}: cannot read {}: {e}",
                    file.display()
                );
                continue;
            }
        };
        let (mut meta, stored_shards) = match parse_topic_file(&text, &dir_name, max_partitions) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("skipping topic {dir_name}: {}: {e}", file.display());
                continue;
            }
        };
        let expected = assign(&meta.name, meta.partitions, shards);
        if stored_shards != shards || meta.assignment != expected {
            if stored_shards != shards {
                tracing::info!(
                    "topic {}: shard count changed {stored_shards} -> {shards}; reassigning partitions",
                    meta.name
                );
            }
            meta.assignment = expected;
            if let Err(e) = write_topic_file(disk, data_dir, &meta, shards) {
                tracing::warn!(
                    "topic {}: cannot rewrite {}: {e}",
                    meta.name,
                    file.display()
                );
            }
        }
        out.push(meta);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const REAL: Disk = Disk::Real;

    #[test]
    fn assignment_is_deterministic_and_spread() {
        let a = assign("orders", 8, 3);
        assert_eq!(a, assign("orders", 8, 3));
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|s| *s < 3));
        // consecutive partitions land on consecutive shards
        for w in a.windows(2) {
            assert_eq!((w[0] + 1) % 3, w[1]);
        }
        // a known value: pins the hash so it never changes silently
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(assign("x", 1, 1), vec![0]);
        assert_eq!(assign("x", 2, 0), vec![0, 0]);
    }

    #[test]
    fn registry_round_trip_and_reassign() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = TopicConfig::default();
        cfg.set("flush.interval_ms", "25").expect("set");
        let meta = TopicMeta::new("orders".into(), 5, cfg, 2);
        create_topic_on_disk(&REAL, dir.path(), &meta, 2).expect("create");
        assert!(partition_dir(dir.path(), "orders", 4).is_dir());
        assert!(create_topic_on_disk(&REAL, dir.path(), &meta, 2).is_err());

        let loaded = load_topics(&REAL, dir.path(), 2, 100).expect("load");
        assert_eq!(loaded, vec![meta.clone()]);

        // a different shard count recomputes and rewrites
        let loaded = load_topics(&REAL, dir.path(), 3, 100).expect("load");
        assert_eq!(loaded[0].assignment, assign("orders", 5, 3));
        let text = fs::read(topic_dir(dir.path(), "orders").join(TOPIC_FILE)).expect("read");
        let (m, n) = parse_topic_file(&text, "orders", 100).expect("parse");
        assert_eq!(n, 3);
        assert_eq!(m.assignment, assign("orders", 5, 3));
        assert_eq!(m.config, meta.config);

        remove_topic_from_disk(&REAL, &Clock::Real, dir.path(), "orders").expect("remove");
        assert!(!topic_dir(dir.path(), "orders").exists());
        assert!(load_topics(&REAL, dir.path(), 3, 100)
            .expect("load")
            .is_empty());
    }

    #[test]
    fn bad_topic_files_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = TopicMeta::new("good".into(), 1, TopicConfig::default(), 1);
        create_topic_on_disk(&REAL, dir.path(), &good, 1).expect("create");
        let bad = topic_dir(dir.path(), "bad");
        fs::create_dir_all(&bad).expect("mkdir");
        fs::write(bad.join(TOPIC_FILE), b"{not json").expect("write");
        let wrong = topic_dir(dir.path(), "wrong");
        fs::create_dir_all(&wrong).expect("mkdir");
        fs::write(
            wrong.join(TOPIC_FILE),
            br#"{"name":"other","partitions":1,"config":{},"shard_count":1,"assignment":[0]}"#,
        )
        .expect("write");
        let too_many = topic_dir(dir.path(), "many");
        fs::create_dir_all(&too_many).expect("mkdir");
        fs::write(
            too_many.join(TOPIC_FILE),
            br#"{"name":"many","partitions":1000,"config":{},"shard_count":1,"assignment":[]}"#,
        )
        .expect("write");
        fs::create_dir_all(topic_dir(dir.path(), "nofile")).expect("mkdir");
        let loaded = load_topics(&REAL, dir.path(), 1, 100).expect("load");
        assert_eq!(loaded, vec![good]);
    }

    /// topic.json on the simulated disk: a crash at any point of a create,
    /// an alter (rewrite) or a delete leaves the topic whole (old or new
    /// settings) or absent, never unreadable; once a call returned Ok, its
    /// effect survives.
    #[test]
    fn topic_file_writes_survive_crashes_at_any_point() {
        let data = Path::new("/data");
        let mut altered = TopicConfig::default();
        altered.set("flush.interval_ms", "25").expect("set");
        for seed in 0..300u64 {
            let disk = Disk::sim(seed);
            let sim = disk.as_sim().expect("sim").clone();
            let clock = Clock::sim(0);
            let meta = TopicMeta::new("t".into(), 2, TopicConfig::default(), 1);
            let mut new_meta = meta.clone();
            new_meta.config = altered.clone();
            sim.set_crash_after_ops(Some(seed % 40));
            // Which calls completed before the crash.
            let created = create_topic_on_disk(&disk, data, &meta, 1).is_ok();
            let altered_ok = created && write_topic_file(&disk, data, &new_meta, 1).is_ok();
            let deleted = altered_ok && remove_topic_from_disk(&disk, &clock, data, "t").is_ok();
            let after = sim.crash();
            let loaded = load_topics(&after, data, 1, 100).expect("load after crash");
            match loaded.as_slice() {
                // A delete that was under way may have taken effect.
                [] => assert!(
                    !created || altered_ok,
                    "seed {seed}: a created topic vanished"
                ),
                [m] => {
                    assert!(!deleted, "seed {seed}: a deleted topic came back");
                    assert!(*m == meta || *m == new_meta, "seed {seed}: {m:?}");
                    if altered_ok {
                        assert_eq!(*m, new_meta, "seed {seed}: an acknowledged alter was lost");
                    }
                    assert!(after.is_dir(&partition_dir(data, "t", 1)), "seed {seed}");
                }
                more => panic!("seed {seed}: {more:?}"),
            }
        }
    }
}
