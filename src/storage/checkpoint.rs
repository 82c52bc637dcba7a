//! Small checkpoint files of a partition directory: the one place their
//! bytes reach the disk (docs/storage.md, "Checkpoint files").
//!
//! Owns: [`write_atomic`] (tmp + fsync + rename + fsync(dir), so a reader sees
//! the old or the new content, never a mix) and [`read`] (the content, or
//! `None` when the file does not exist); the names of the partition's
//! checkpoint files ([`RECOVERY_POINT`], [`LEADER_EPOCH`], [`LOG_START`], the
//! producer-state snapshots `<offset:020>.snapshot`: [`snapshot_name`]) and
//! their `.tmp` companions ([`is_checkpoint_file`]), and the two small text
//! formats ([`encode_offset`]/[`parse_offset`], [`encode_epochs`]/
//! [`parse_epochs`]).
//!
//! Invariants: a checkpoint is durable when `write_atomic` returns (file data
//! and the directory entry); callers serialize writes of one file (the `.tmp`
//! name is shared). Blocking file-system work runs on glommio's blocking pool,
//! never on the reactor; all of it goes through the shard's [`Disk`]
//! (the I/O seam), so the simulated disk sees it.
//!
//! Must not know: what the values mean (recovery, retention and epochs decide
//! that) or anything about segments.

use std::io;
use std::path::{Path, PathBuf};

use super::StorageError;
use crate::io::Disk;

/// The recovery point: every batch below this offset was fdatasynced
/// (decimal offset + newline, like Kafka's recovery-point-offset-checkpoint).
pub const RECOVERY_POINT: &str = "recovery-point-offset";
/// The leader-epoch checkpoint: epoch → first offset (Kafka's
/// leader-epoch-checkpoint text format).
pub const LEADER_EPOCH: &str = "leader-epoch-checkpoint";
/// The durable log start (delete-records), owned by `partition::retention`.
pub const LOG_START: &str = "log-start-offset";

const TMP_SUFFIX: &str = ".tmp";

/// Extension of a producer-state snapshot (its content is the partition's
/// business: `partition::producers`).
const SNAPSHOT_EXT: &str = "snapshot";

/// Whether `name` is one of the checkpoint files or its temporary companion
/// (recovery does not call them stray).
pub fn is_checkpoint_file(name: &str) -> bool {
    let base = name.strip_suffix(TMP_SUFFIX).unwrap_or(name);
    [RECOVERY_POINT, LEADER_EPOCH, LOG_START].contains(&base) || parse_snapshot_name(base).is_some()
}

/// The name of the producer-state snapshot taken at `offset`.
pub fn snapshot_name(offset: u64) -> String {
    format!("{offset:020}.{SNAPSHOT_EXT}")
}

/// The offset of a producer-state snapshot named `name` (no `.tmp`).
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    match super::parse_segment_file_name(name) {
        Some((offset, SNAPSHOT_EXT)) => Some(offset),
        _ => None,
    }
}

/// Replaces `dir/name` with `bytes` durably through `disk`: written to
/// `name.tmp` and fsynced, renamed over `name`, directory fsynced.
pub async fn write_atomic(
    disk: &Disk,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let (dir, name, bytes): (PathBuf, String, Vec<u8>) =
        (dir.to_path_buf(), name.to_string(), bytes.to_vec());
    disk.blocking(move |disk| {
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = dir.join(&name);
        disk.write(&tmp, &bytes, true)
            .map_err(|e| StorageError::io("write", &tmp, e))?;
        disk.rename(&tmp, &path)
            .map_err(|e| StorageError::io("rename", &path, e))?;
        disk.sync_dir_blocking(&dir)
            .map_err(|e| StorageError::io("fsync dir", &dir, e))
    })
    .await
}

/// The content of `dir/name`, `None` if it does not exist.
pub async fn read(disk: &Disk, dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(name);
    disk.blocking(move |disk| match disk.read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", &path, e)),
    })
    .await
}

/// An offset checkpoint's content: the offset in decimal and a newline.
pub fn encode_offset(offset: u64) -> Vec<u8> {
    format!("{offset}\n").into_bytes()
}

/// Parses [`encode_offset`]'s format; `None` if it is not one offset.
pub fn parse_offset(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Version line of the leader-epoch checkpoint format.
const EPOCHS_VERSION: u32 = 0;

/// The leader-epoch checkpoint: a version line (0), a count line, then one
/// `epoch start_offset` line per entry (Kafka's format).
pub fn encode_epochs(entries: &[(u32, u64)]) -> Vec<u8> {
    let mut s = format!("{EPOCHS_VERSION}\n{}\n", entries.len());
    for (epoch, start) in entries {
        s.push_str(&format!("{epoch} {start}\n"));
    }
    s.into_bytes()
}

/// Parses [`encode_epochs`]'s format; an error names what is wrong.
pub fn parse_epochs(bytes: &[u8]) -> Result<Vec<(u32, u64)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let version: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("missing version line")?;
    if version != EPOCHS_VERSION {
        return Err(format!("unknown version {version}"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("missing count line")?;
    let mut out = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut it = line.split_whitespace();
        let (Some(e), Some(o), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("bad entry line {line:?}"));
        };
        let e = e.parse().map_err(|_| format!("bad epoch in {line:?}"))?;
        let o = o.parse().map_err(|_| format!("bad offset in {line:?}"))?;
        out.push((e, o));
    }
    if out.len() != count {
        return Err(format!(
            "{} entries where {count} were announced",
            out.len()
        ));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("trailing lines".into());
    }
    if out.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1) {
        return Err("entries not increasing".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_refuse_junk() {
        assert_eq!(parse_offset(&encode_offset(42)), Some(42));
        assert_eq!(parse_offset(b"x\n"), None);
        let e = vec![(0, 0), (3, 100), (7, 250)];
        assert_eq!(parse_epochs(&encode_epochs(&e)), Ok(e));
        assert_eq!(parse_epochs(&encode_epochs(&[])), Ok(vec![]));
        assert!(parse_epochs(b"0\n2\n1 5\n").is_err(), "short");
        assert!(parse_epochs(b"1\n0\n").is_err(), "version");
        assert!(parse_epochs(b"0\n2\n3 5\n2 9\n").is_err(), "order");
        assert!(is_checkpoint_file("recovery-point-offset.tmp"));
        assert!(is_checkpoint_file(LOG_START));
        assert!(!is_checkpoint_file("00000000000000000000.log"));
        assert_eq!(parse_snapshot_name(&snapshot_name(42)), Some(42));
        assert!(is_checkpoint_file("00000000000000000042.snapshot.tmp"));
        assert_eq!(parse_snapshot_name("00000000000000000042.log"), None);
    }

    #[test]
    fn write_atomic_replaces_and_read_sees_it() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                let disk = Disk::Real;
                assert_eq!(
                    read(&disk, dir.path(), RECOVERY_POINT).await.expect("read"),
                    None
                );
                write_atomic(&disk, dir.path(), RECOVERY_POINT, b"1\n")
                    .await
                    .expect("write");
                write_atomic(&disk, dir.path(), RECOVERY_POINT, b"22\n")
                    .await
                    .expect("write");
                let got = read(&disk, dir.path(), RECOVERY_POINT).await.expect("read");
                assert_eq!(got.as_deref(), Some(&b"22\n"[..]));
                assert!(!dir.path().join("recovery-point-offset.tmp").exists());
            })
            .expect("spawn")
            .join()
            .expect("join");
    }
}
