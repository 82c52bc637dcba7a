//! The I/O seam: [`LogFile`], the only way storage touches a file.
//!
//! A narrow interface over glommio's `DmaFile` (O_DIRECT): aligned
//! `write_at`, unaligned `read_at`, `fdatasync`, `truncate`, `size`. Every call
//! first consults a shared [`FaultInjector`], so tests can make writes fail
//! (e.g. ENOSPC), tear writes (only a prefix reaches the file), or fail
//! fdatasync — through the very code path production uses.
//!
//! Invariant: `write_at` is given a buffer from [`LogFile::alloc_buffer`] whose
//! position and length are multiples of [`super::PAGE_BYTES`].

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{StorageError, PAGE_BYTES};

/// Faults to inject into the next I/O calls (counts are decremented as they
/// fire). All zero by default: no effect.
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// Fail this many upcoming `write_at` calls with `write_errno`.
    pub fail_writes: Cell<u32>,
    /// errno for failed writes (default ENOSPC when 0).
    pub write_errno: Cell<i32>,
    /// Fail this many upcoming `fdatasync` calls with EIO.
    pub fail_fsyncs: Cell<u32>,
    /// Tear the next write: only this many bytes (rounded down to a page) reach
    /// the file, then the write fails with EIO.
    pub tear_next_write_bytes: Cell<Option<usize>>,
}

impl FaultInjector {
    fn take(c: &Cell<u32>) -> bool {
        let n = c.get();
        if n > 0 {
            c.set(n - 1);
        }
        n > 0
    }
}

/// One open segment or index file.
pub struct LogFile {
    file: DmaFile,
    path: PathBuf,
    faults: Rc<FaultInjector>,
}

impl LogFile {
    /// Opens `path` read-write with O_DIRECT, creating it if `create`;
    /// `truncate` empties it.
    pub async fn open(
        path: &Path,
        create: bool,
        truncate: bool,
        faults: Rc<FaultInjector>,
    ) -> Result<LogFile, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(truncate)
            .dma_open(path)
            .await
            .map_err(|e| StorageError::io("open", path, e.into()))?;
        Ok(LogFile {
            file,
            path: path.to_path_buf(),
            faults,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A zeroed, page-aligned buffer of `len` bytes (rounded up to a page).
    pub fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        let len = super::align_up(len as u64) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        buf.as_bytes_mut().fill(0);
        buf
    }

    /// Writes the whole aligned `buf` at aligned `pos`; a short write is an error.
    pub async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<(), StorageError> {
        debug_assert_eq!(pos % PAGE_BYTES, 0, "unaligned write position");
        debug_assert_eq!(buf.len() as u64 % PAGE_BYTES, 0, "unaligned write length");
        if FaultInjector::take(&self.faults.fail_writes) {
            let errno = match self.faults.write_errno.get() {
                0 => libc::ENOSPC,
                e => e,
            };
            return Err(StorageError::io(
                "write",
                &self.path,
                io::Error::from_raw_os_error(errno),
            ));
        }
        if let Some(keep) = self.faults.tear_next_write_bytes.take() {
            let keep = super::align_down(keep.min(buf.len()) as u64) as usize;
            if keep > 0 {
                let mut part = self.file.alloc_dma_buffer(keep);
                part.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..keep]);
                let _ = self.file.write_at(part, pos).await;
            }
            return Err(StorageError::io(
                "write",
                &self.path,
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        let len = buf.len();
        let n = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| StorageError::io("write", &self.path, e.into()))?;
        if n != len {
            return Err(StorageError::io(
                "write",
                &self.path,
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {len} bytes"),
                ),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at any `pos` (fewer at end of file).
    pub async fn read_at(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let r = self
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("read", &self.path, e.into()))?;
        Ok(Bytes::copy_from_slice(&r))
    }

    pub async fn fdatasync(&self) -> Result<(), StorageError> {
        if FaultInjector::take(&self.faults.fail_fsyncs) {
            return Err(StorageError::io(
                "fdatasync",
                &self.path,
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &self.path, e.into()))
    }

    pub async fn truncate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| StorageError::io("truncate", &self.path, e.into()))
    }

    /// Reserves blocks for `[0, len)` without changing the file size
    /// (fallocate with FALLOC_FL_KEEP_SIZE), so later writes there do not
    /// allocate. The logical/physical size seen by recovery is unchanged.
    pub async fn pre_allocate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|e| StorageError::io("fallocate", &self.path, e.into()))
    }

    /// Physical size in bytes.
    pub async fn size(&self) -> Result<u64, StorageError> {
        self.file
            .file_size()
            .await
            .map_err(|e| StorageError::io("stat", &self.path, e.into()))
    }

    pub async fn close(self) -> Result<(), StorageError> {
        let path = self.path;
        self.file
            .close()
            .await
            .map_err(|e| StorageError::io("close", &path, e.into()))
    }
}

/// fsyncs a directory so a created or renamed entry in it is durable.
pub async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| StorageError::io("open dir", dir, e.into()))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io("fsync dir", dir, e.into()))?;
    d.close()
        .await
        .map_err(|e| StorageError::io("close dir", dir, e.into()))
}
