//! The data directory's format version: `<data_dir>/format-version`, one
//! decimal number and a comment line (docs/storage.md, "Format version").
//!
//! Owns: [`check_or_create`], run once at startup before any topic is
//! loaded: a fresh data dir gets the file (written like a checkpoint: tmp +
//! fsync + rename + fsync dir, through the I/O seam); a data dir of another
//! version is refused with a message naming the version found and the one
//! this build reads, so nothing silently misreads old or newer data.
//!
//! Versions: 1 = Corelog's first batch format (Kafka's v2 layout in
//! little-endian, magic 1; it wrote no version file, so a data dir with
//! topics and no file is version 1); 2 = Kafka's RecordBatch v2 byte for
//! byte ([`CURRENT`]).
//!
//! Must not know: topics' contents, segments, partitions.

use std::io;
use std::path::{Path, PathBuf};

use crate::io::Disk;

/// The file's name in the data dir.
pub const FILE: &str = "format-version";
/// The data-dir format this build reads and writes.
pub const CURRENT: u32 = 2;
/// The version of a data dir that holds topics but no version file.
pub const UNVERSIONED: u32 = 1;

/// Why a data dir was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatVersionError {
    #[error("data dir {} holds format version {found} ({}), this build reads format version {CURRENT} ({}): refusing to start rather than misread it; move the data dir away or use a matching build", dir.display(), describe(*found), describe(CURRENT))]
    Mismatch { dir: PathBuf, found: u32 },
    #[error("{} does not start with a format version number: refusing to start", path.display())]
    Unreadable { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn describe(version: u32) -> &'static str {
    match version {
        1 => "Corelog's little-endian batches, magic 1",
        2 => "Kafka's RecordBatch v2, magic 2",
        _ => "unknown to this build",
    }
}

/// The file's content for `version`.
pub fn encode(version: u32) -> String {
    format!(
        "{version}\n# Corelog data-dir format version ({}); docs/storage.md\n",
        describe(version)
    )
}

/// The version in a file's content: the first line's number.
pub fn parse(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Checks the data dir's format version, writing the file if the dir holds
/// no data yet. Refuses a dir of another version and a dir with topics but
/// no file (version 1).
pub fn check_or_create(disk: &Disk, data_dir: &Path) -> Result<(), FormatVersionError> {
    let path = data_dir.join(FILE);
    let io_err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| FormatVersionError::Io { op, path, source }
    };
    match disk.read(&path) {
        Ok(bytes) => {
            let found = parse(&bytes).ok_or(FormatVersionError::Unreadable { path })?;
            if found != CURRENT {
                return Err(FormatVersionError::Mismatch {
                    dir: data_dir.to_path_buf(),
                    found,
                });
            }
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read", &path)(e)),
    }
    let topics = data_dir.join("topics");
    if disk.is_dir(&topics) {
        let entries = disk.list_dir(&topics).map_err(io_err("list", &topics))?;
        if !entries.is_empty() {
            return Err(FormatVersionError::Mismatch {
                dir: data_dir.to_path_buf(),
                found: UNVERSIONED,
            });
        }
    }
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    disk.write(&tmp, encode(CURRENT).as_bytes(), true)
        .map_err(io_err("write", &tmp))?;
    disk.rename(&tmp, &path).map_err(io_err("rename", &path))?;
    disk.sync_dir_blocking(data_dir)
        .map_err(io_err("fsync dir", data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_dir_gets_the_file_and_opens_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        check_or_create(&Disk::Real, dir.path()).expect("fresh");
        let got = std::fs::read(dir.path().join(FILE)).expect("written");
        assert_eq!(parse(&got), Some(CURRENT));
        assert!(String::from_utf8_lossy(&got).contains("# Corelog"));
        std::fs::create_dir_all(dir.path().join("topics/t")).expect("mkdir");
        check_or_create(&Disk::Real, dir.path()).expect("same version opens");
    }

    #[test]
    fn old_format_dir_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("topics/t")).expect("mkdir");
        let e = check_or_create(&Disk::Real, dir.path()).expect_err("old format");
        let msg = e.to_string();
        assert!(
            msg.contains("format version 1") && msg.contains("format version 2"),
            "{msg}"
        );
        assert!(!dir.path().join(FILE).exists(), "nothing written");
    }

    #[test]
    fn future_and_garbage_versions_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), encode(3)).expect("write");
        let msg = check_or_create(&Disk::Real, dir.path())
            .expect_err("future")
            .to_string();
        assert!(
            msg.contains("format version 3") && msg.contains("format version 2"),
            "{msg}"
        );
        std::fs::write(dir.path().join(FILE), b"two\n").expect("write");
        assert!(matches!(
            check_or_create(&Disk::Real, dir.path()),
            Err(FormatVersionError::Unreadable { .. })
        ));
    }
}
