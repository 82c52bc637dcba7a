//! Small checkpoint files written atomically: tmp file, fsync, rename over
//! the old one, fsync the directory; read back whole.
//!
//! Owns: the write-atomically protocol for small files in a partition
//! directory (the log-start checkpoint today), through the shard's [`Disk`].
//!
//! Invariants: after [`write_atomic`] returns Ok the new content survives a
//! crash; before that, a crash leaves the old content or the new, never a mix
//! (the tmp name is `<name>.tmp`, ignored by readers). The blocking calls run
//! on the blocking pool on the real disk.
//!
//! Must not know: what the bytes mean (callers parse them).

use std::io;
use std::path::{Path, PathBuf};

use super::StorageError;
use crate::io::Disk;

/// The temporary name `name` is written under before the rename.
pub fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Writes `bytes` as `dir/name` durably (tmp + fsync + rename + fsync dir).
pub async fn write_atomic(
    disk: &Disk,
    dir: &Path,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    let dir: PathBuf = dir.to_path_buf();
    let name = name.to_string();
    disk.blocking(move |disk| {
        let tmp = dir.join(tmp_name(&name));
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

/// The content of `dir/name`, or `None` if it does not exist.
pub async fn read(disk: &Disk, dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(name);
    disk.blocking(move |disk| match disk.read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", &path, e)),
    })
    .await
}
