//! Segmented append-only logs on direct I/O (docs/storage.md).
//!
//! Owns: the on-disk layout of one partition directory — segments named by
//! base offset (`{base_offset:020}.log`), their sparse offset and time indexes
//! (`.index`, `.timeindex`), the page-aligned write path, recovery at open,
//! small atomic checkpoint files ([`checkpoint`]), and [`file::LogFile`]. Every
//! file, directory and fsync goes through the shard's `crate::io::Disk`
//! (carried in a `crate::io::Io` with the clock), never `std::fs` or glommio's
//! file API directly.
//!
//! Must not know: partitions, high watermarks, topics, shards.
//!
//! Invariants: a segment's logical size only grows by whole batches; bytes past
//! the logical size are never served; offsets inside a segment are contiguous
//! from its base offset; index positions are monotonic and below the logical
//! size. Single-threaded: everything is `!Send` and lives on one shard.

pub mod checkpoint;
pub mod file;
pub mod format_version;
pub mod index;
pub mod log;
pub mod scan;
pub mod segment;

use std::io;
use std::path::{Path, PathBuf};

/// Alignment of every direct-I/O write, in bytes (a multiple of any device's
/// logical block size we support).
pub const PAGE_BYTES: u64 = 4096;

/// Rounds `v` up to a multiple of [`PAGE_BYTES`].
pub fn align_up(v: u64) -> u64 {
    v.div_ceil(PAGE_BYTES) * PAGE_BYTES
}

/// Rounds `v` down to a multiple of [`PAGE_BYTES`].
pub fn align_down(v: u64) -> u64 {
    v - v % PAGE_BYTES
}

/// Errors of the storage layer. Input never causes them: they mean the disk
/// failed or the stored bytes are not what we wrote.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A stored batch of a format this build does not read: the partition
    /// is not opened (nothing is truncated or rewritten).
    #[error("{} holds a batch of an unknown format (magic {magic}, this build reads magic {}) at byte {position}: refusing to open the partition; the file is left as it is", file.display(), crate::protocol::batch::MAGIC)]
    UnknownFormat {
        file: PathBuf,
        position: u64,
        magic: u8,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the device is out of space (ENOSPC / EDQUOT).
    pub fn is_storage_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            StorageError::Corrupt { .. } | StorageError::UnknownFormat { .. } => false,
        }
    }
}

/// File name of segment `base_offset`'s log, offset index or time index.
pub fn segment_file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `{base_offset:020}.{ext}`; `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}
