//! The I/O seam: [`LogFile`], the only way storage touches a file.
//!
//! A narrow interface over glommio's `DmaFile` (O_DIRECT): aligned
//! `write_at`, unaligned `read_at`, `fdatasync`, `truncate`, `size`. Every call
//! first consults a shared [`FaultInjector`], so tests can make writes fail
//! (e.g. ENOSPC), tear writes (only a prefix reaches the file), or fail
//! fdatasync — through the very code path production uses.
//!
//! Invariant: `write_at` is given a buffer from [`LogFile::alloc_buffer`] whose
//! position and length are multiples of [`super::PAGE_BYTES`]. Errors keep the
//! kernel's errno (glommio's wrapper is peeled off), so ENOSPC stays
//! recognizable as "storage full"; a short direct write (the kernel wrote a
//! prefix, then ran out of space) is continued, so its real error surfaces.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::GlommioError;

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
    /// Make the next write short, as the kernel does when it runs out of
    /// space part way: only this many bytes (rounded down to a page) are
    /// written and reported written; the rest is written by a continuation
    /// (which `fail_writes` can then fail).
    pub short_next_write_bytes: Cell<Option<usize>>,
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

/// The OS error inside a glommio error (its errno intact), else the
/// converted error.
fn os_error<T>(e: GlommioError<T>) -> io::Error {
    match e {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        e => e.into(),
    }
}

/// Most continuations of one short write before it counts as failed.
const MAX_WRITE_CONTINUATIONS: u32 = 16;

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
            .map_err(|e| StorageError::io("open", path, os_error(e)))?;
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

    /// Writes the whole aligned `buf` at aligned `pos`. A short write is
    /// continued from where it stopped (so a disk that filled up part way
    /// reports ENOSPC, not "short write"); no progress is an error.
    pub async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<(), StorageError> {
        debug_assert_eq!(pos % PAGE_BYTES, 0, "unaligned write position");
        debug_assert_eq!(buf.len() as u64 % PAGE_BYTES, 0, "unaligned write length");
        if self.faults.fail_writes.get() == 0 {
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
        }
        let len = buf.len();
        let buf = Rc::new(buf);
        let mut n = self.write_once(buf.clone(), pos).await?;
        // A direct write that ran out of space part way returns the bytes it
        // wrote (whole blocks); writing the rest gets the real error (ENOSPC).
        let mut continuations = 0;
        while n < len
            && n > 0
            && (n as u64).is_multiple_of(PAGE_BYTES)
            && continuations < MAX_WRITE_CONTINUATIONS
        {
            continuations += 1;
            let mut rest = self.file.alloc_dma_buffer(len - n);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[n..]);
            n += self.write_once(Rc::new(rest), pos + n as u64).await?;
        }
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

    /// One write call (fault injection first); returns the bytes written.
    async fn write_once(&self, buf: Rc<DmaBuffer>, pos: u64) -> Result<usize, StorageError> {
        if let Some(keep) = self.faults.short_next_write_bytes.take() {
            let keep = super::align_down(keep.min(buf.len()) as u64) as usize;
            if keep > 0 && keep < buf.len() {
                let mut part = self.file.alloc_dma_buffer(keep);
                part.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..keep]);
                return self
                    .file
                    .write_at(part, pos)
                    .await
                    .map_err(|e| StorageError::io("write", &self.path, os_error(e)));
            }
        }
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
        self.file
            .write_rc_at(buf, pos)
            .await
            .map_err(|e| StorageError::io("write", &self.path, os_error(e)))
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
            .map_err(|e| StorageError::io("read", &self.path, os_error(e)))?;
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
            .map_err(|e| StorageError::io("fdatasync", &self.path, os_error(e)))
    }

    pub async fn truncate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| StorageError::io("truncate", &self.path, os_error(e)))
    }

    /// Reserves blocks for `[0, len)` without changing the file size
    /// (fallocate with FALLOC_FL_KEEP_SIZE), so later writes there do not
    /// allocate. The logical/physical size seen by recovery is unchanged.
    pub async fn pre_allocate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|e| StorageError::io("fallocate", &self.path, os_error(e)))
    }

    /// Physical size in bytes.
    pub async fn size(&self) -> Result<u64, StorageError> {
        self.file
            .file_size()
            .await
            .map_err(|e| StorageError::io("stat", &self.path, os_error(e)))
    }

    pub async fn close(self) -> Result<(), StorageError> {
        let path = self.path;
        self.file
            .close()
            .await
            .map_err(|e| StorageError::io("close", &path, os_error(e)))
    }
}

/// fsyncs a directory so a created or renamed entry in it is durable.
pub async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| StorageError::io("open dir", dir, os_error(e)))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io("fsync dir", dir, os_error(e)))?;
    d.close()
        .await
        .map_err(|e| StorageError::io("close dir", dir, os_error(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<Fut: std::future::Future<Output = ()> + 'static>(f: fn() -> Fut) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(f)
            .expect("spawn executor")
            .join()
            .expect("executor thread");
    }

    async fn pages(f: &LogFile, n: usize, byte: u8) -> DmaBuffer {
        let mut b = f.alloc_buffer(n * PAGE_BYTES as usize);
        b.as_bytes_mut().fill(byte);
        b
    }

    #[test]
    fn short_write_is_continued() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let faults = Rc::new(FaultInjector::default());
            let path = dir.path().join("f.log");
            let f = LogFile::open(&path, true, true, faults.clone())
                .await
                .expect("open");
            faults.short_next_write_bytes.set(Some(4096 + 100));
            f.write_at(pages(&f, 3, b'a').await, 0)
                .await
                .expect("a short write is continued");
            assert_eq!(f.size().await.expect("size"), 3 * PAGE_BYTES);
            let back = f.read_at(0, 3 * PAGE_BYTES as usize).await.expect("read");
            assert!(back.iter().all(|&b| b == b'a'));

            // Short, then the continuation finds the disk full: the error is
            // ENOSPC ("storage full"), not a generic short write.
            faults.short_next_write_bytes.set(Some(4096));
            faults.fail_writes.set(1);
            let e = f
                .write_at(pages(&f, 3, b'b').await, 0)
                .await
                .expect_err("out of space");
            assert!(e.is_storage_full(), "{e}");
            f.close().await.expect("close");
        });
    }

    #[test]
    fn errors_keep_their_errno() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let missing = dir.path().join("no").join("such.log");
            let faults = Rc::new(FaultInjector::default());
            let Err(e) = LogFile::open(&missing, false, false, faults).await else {
                panic!("opening a missing file must fail");
            };
            match e {
                StorageError::Io { source, .. } => {
                    assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source}")
                }
                other => panic!("unexpected {other}"),
            }
        });
    }
}
