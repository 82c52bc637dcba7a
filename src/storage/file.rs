//! The storage seam: [`LogFile`], how storage opens and uses a file on the
//! shard's [`Disk`] (real or simulated, `crate::io`).
//!
//! A narrow interface over [`DiskFile`] (O_DIRECT on the real disk): aligned
//! `write_at`, `write_through_at` (through a second, O_DSYNC handle on the
//! same file: durable on completion, no fdatasync), `write_zeros` (pages
//! made ready ahead of the appends; not data, so no faults), unaligned
//! `read_at`, `fdatasync`, `truncate`, `size`. Every data call
//! first consults the partition's [`FaultInjector`], so tests can make writes
//! fail (e.g. ENOSPC), tear writes (only a prefix reaches the file), fail or
//! skip fdatasync — through the very code path production uses, on either
//! backend. Directory work goes through [`Disk`] directly.
//!
//! Invariant: `write_at` is given a buffer from [`LogFile::alloc_buffer`] whose
//! position and length are multiples of [`super::PAGE_BYTES`]. Errors keep the
//! kernel's errno, so ENOSPC stays recognizable as "storage full"; a short
//! direct write (the kernel wrote a prefix, then ran out of space) is
//! continued, so its real error surfaces.
//!
//! Must not know: segments, batches, partitions.

use std::cell::RefCell;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::DmaBuffer;

pub use crate::io::FaultInjector;
use crate::io::{Disk, DiskFile};

use super::{StorageError, PAGE_BYTES};

/// A file handle a write goes through: the plain one, or (shared, so it can
/// be released while a write on it is in flight) the write-through one.
enum Handle<'a> {
    Plain(&'a DiskFile),
    Through(Rc<DiskFile>),
}

impl Deref for Handle<'_> {
    type Target = DiskFile;
    fn deref(&self) -> &DiskFile {
        match self {
            Handle::Plain(f) => f,
            Handle::Through(f) => f,
        }
    }
}

/// Most continuations of one short write before it counts as failed.
const MAX_WRITE_CONTINUATIONS: u32 = 16;

/// One open segment or index file.
pub struct LogFile {
    file: DiskFile,
    /// The write-through (O_DSYNC) handle on the same file, opened by
    /// [`LogFile::open_write_through`] on first use and dropped by
    /// [`LogFile::release_write_through`] (a sealed segment keeps one fd).
    write_through: RefCell<Option<Rc<DiskFile>>>,
    disk: Disk,
    path: PathBuf,
    faults: Rc<FaultInjector>,
}

impl LogFile {
    /// Opens `path` on `disk` read-write (O_DIRECT on the real disk),
    /// creating it if `create`; `truncate` empties it.
    pub async fn open(
        disk: &Disk,
        path: &Path,
        create: bool,
        truncate: bool,
        faults: Rc<FaultInjector>,
    ) -> Result<LogFile, StorageError> {
        let file = disk
            .open(path, create, truncate)
            .await
            .map_err(|e| StorageError::io("open", path, e))?;
        Ok(LogFile {
            file,
            write_through: RefCell::new(None),
            disk: disk.clone(),
            path: path.to_path_buf(),
            faults,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A zeroed, page-aligned buffer of `len` bytes (rounded up to a page).
    pub fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        self.alloc_buffer_zeroed_from(len, 0)
    }

    /// A page-aligned buffer of `len` bytes (rounded up to a page) whose
    /// bytes from `zero_from` on are zero; the caller overwrites the rest
    /// (saves a memset of the data part on the append path).
    pub fn alloc_buffer_zeroed_from(&self, len: usize, zero_from: usize) -> DmaBuffer {
        let len = super::align_up(len as u64) as usize;
        let mut buf = self.file.alloc_buffer(len);
        let bytes = buf.as_bytes_mut();
        let from = zero_from.min(bytes.len());
        bytes[from..].fill(0);
        buf
    }

    fn io_err(&self, op: &'static str, e: io::Error) -> StorageError {
        StorageError::io(op, &self.path, e)
    }

    /// A write that stopped after `n` of `len` bytes.
    fn short_write(&self, op: &'static str, n: usize, len: usize) -> StorageError {
        self.io_err(
            op,
            io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes"),
            ),
        )
    }

    /// Opens the write-through handle if it is not open yet; false if it
    /// cannot be opened (the caller then writes and syncs as before).
    pub async fn open_write_through(&self) -> bool {
        if self.write_through.borrow().is_some() {
            return true;
        }
        match self.disk.open_write_through(&self.path).await {
            Ok(f) => {
                *self.write_through.borrow_mut() = Some(Rc::new(f));
                true
            }
            Err(e) => {
                tracing::debug!(file = %self.path.display(), error = %e,
                    "no write-through handle; writing and syncing separately");
                false
            }
        }
    }

    /// [`LogFile::write_at`] through the write-through handle (opened by
    /// [`LogFile::open_write_through`]): the bytes are durable when it
    /// returns Ok, with no fdatasync. The injector's fsync faults apply to
    /// the sync inside the write: `fail_fsyncs` writes the bytes and fails
    /// with EIO, `skip_fsyncs` writes them without the sync.
    pub async fn write_through_at(&self, buf: DmaBuffer, pos: u64) -> Result<(), StorageError> {
        assert!(
            self.write_through.borrow().is_some(),
            "write-through write before the handle was opened"
        );
        if FaultInjector::take(&self.faults.fail_fsyncs) {
            let _ = self.write_with(buf, pos, false).await;
            return Err(self.io_err("write (O_DSYNC)", io::Error::from_raw_os_error(libc::EIO)));
        }
        if FaultInjector::take(&self.faults.skip_fsyncs) {
            return self.write_with(buf, pos, false).await;
        }
        self.write_with(buf, pos, true).await
    }

    /// Writes the whole aligned `buf` at aligned `pos`. A short write is
    /// continued from where it stopped (so a disk that filled up part way
    /// reports ENOSPC, not "short write"); no progress is an error.
    pub async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<(), StorageError> {
        self.write_with(buf, pos, false).await
    }

    /// Drops the write-through handle (its fd closes once no write is in
    /// flight on it); a later write-through write opens it again.
    pub fn release_write_through(&self) {
        self.write_through.borrow_mut().take();
    }

    /// Whether the write-through handle is open (tests).
    #[cfg(test)]
    pub fn has_write_through(&self) -> bool {
        self.write_through.borrow().is_some()
    }

    /// The handle a write goes through.
    fn handle(&self, through: bool) -> Handle<'_> {
        match self.write_through.borrow().as_ref() {
            Some(f) if through => Handle::Through(f.clone()),
            _ => Handle::Plain(&self.file),
        }
    }

    async fn write_with(
        &self,
        buf: DmaBuffer,
        pos: u64,
        through: bool,
    ) -> Result<(), StorageError> {
        debug_assert_eq!(pos % PAGE_BYTES, 0, "unaligned write position");
        debug_assert_eq!(buf.len() as u64 % PAGE_BYTES, 0, "unaligned write length");
        if self.faults.fail_writes.get() == 0 {
            if let Some(keep) = self.faults.tear_next_write_bytes.take() {
                let keep = super::align_down(keep.min(buf.len()) as u64) as usize;
                if keep > 0 {
                    let mut part = self.file.alloc_buffer(keep);
                    part.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..keep]);
                    let _ = self.handle(through).write_at(Rc::new(part), pos).await;
                }
                return Err(self.io_err("write", io::Error::from_raw_os_error(libc::EIO)));
            }
        }
        let len = buf.len();
        let buf = Rc::new(buf);
        let mut n = self.write_once(buf.clone(), pos, through).await?;
        // A direct write that ran out of space part way returns the bytes it
        // wrote (whole blocks); writing the rest gets the real error (ENOSPC).
        let mut continuations = 0;
        while n < len
            && n > 0
            && (n as u64).is_multiple_of(PAGE_BYTES)
            && continuations < MAX_WRITE_CONTINUATIONS
        {
            continuations += 1;
            let mut rest = self.file.alloc_buffer(len - n);
            rest.as_bytes_mut().copy_from_slice(&buf.as_bytes()[n..]);
            n += self
                .write_once(Rc::new(rest), pos + n as u64, through)
                .await?;
        }
        if n != len {
            return Err(self.short_write("write", n, len));
        }
        Ok(())
    }

    /// Writes `len` zero bytes at aligned `pos` (aligned `len`): blocks made
    /// ready ahead of the appends, so that an append overwrites instead of
    /// extending the file (see `segment`). Preparation, not data: the fault
    /// injector is not consulted (its faults are aimed at data writes), and
    /// a caller treats a failure as "not prepared", never as lost data.
    pub async fn write_zeros(&self, pos: u64, len: usize) -> Result<(), StorageError> {
        debug_assert_eq!(pos % PAGE_BYTES, 0, "unaligned zeroing position");
        debug_assert_eq!(len as u64 % PAGE_BYTES, 0, "unaligned zeroing length");
        let buf = Rc::new(self.alloc_buffer(len));
        let n = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| self.io_err("write zeros", e))?;
        if n != len {
            return Err(self.short_write("write zeros", n, len));
        }
        Ok(())
    }

    /// One write call (fault injection first); returns the bytes written.
    async fn write_once(
        &self,
        buf: Rc<DmaBuffer>,
        pos: u64,
        through: bool,
    ) -> Result<usize, StorageError> {
        if let Some(keep) = self.faults.short_next_write_bytes.take() {
            let keep = super::align_down(keep.min(buf.len()) as u64) as usize;
            if keep > 0 && keep < buf.len() {
                let mut part = self.file.alloc_buffer(keep);
                part.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..keep]);
                return self
                    .handle(through)
                    .write_at(Rc::new(part), pos)
                    .await
                    .map_err(|e| self.io_err("write", e));
            }
        }
        if FaultInjector::take(&self.faults.fail_writes) {
            let errno = match self.faults.write_errno.get() {
                0 => libc::ENOSPC,
                e => e,
            };
            return Err(self.io_err("write", io::Error::from_raw_os_error(errno)));
        }
        self.handle(through)
            .write_at(buf, pos)
            .await
            .map_err(|e| self.io_err("write", e))
    }

    /// Reads up to `len` bytes at any `pos` (fewer at end of file).
    pub async fn read_at(&self, pos: u64, len: usize) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.file
            .read_at(pos, len)
            .await
            .map_err(|e| self.io_err("read", e))
    }

    pub async fn fdatasync(&self) -> Result<(), StorageError> {
        if FaultInjector::take(&self.faults.fail_fsyncs) {
            return Err(self.io_err("fdatasync", io::Error::from_raw_os_error(libc::EIO)));
        }
        if FaultInjector::take(&self.faults.skip_fsyncs) {
            return Ok(());
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| self.io_err("fdatasync", e))
    }

    pub async fn truncate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| self.io_err("truncate", e))
    }

    /// Reserves blocks for `[0, len)` without changing the file size
    /// (fallocate with FALLOC_FL_KEEP_SIZE), so later writes there do not
    /// allocate. The logical/physical size seen by recovery is unchanged.
    pub async fn pre_allocate(&self, len: u64) -> Result<(), StorageError> {
        self.file
            .pre_allocate(len)
            .await
            .map_err(|e| self.io_err("fallocate", e))
    }

    /// Physical size in bytes.
    pub async fn size(&self) -> Result<u64, StorageError> {
        self.file.size().await.map_err(|e| self.io_err("stat", e))
    }

    pub async fn close(self) -> Result<(), StorageError> {
        let path = self.path;
        if let Some(f) = self.write_through.into_inner().and_then(Rc::into_inner) {
            f.close()
                .await
                .map_err(|e| StorageError::io("close", &path, e))?;
        }
        self.file
            .close()
            .await
            .map_err(|e| StorageError::io("close", &path, e))
    }
}

/// fsyncs a directory so a created or renamed entry in it is durable.
pub async fn sync_dir(disk: &Disk, dir: &Path) -> Result<(), StorageError> {
    disk.sync_dir(dir)
        .await
        .map_err(|e| StorageError::io("fsync dir", dir, e))
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
            let f = LogFile::open(&Disk::Real, &path, true, true, faults.clone())
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
            let Err(e) = LogFile::open(&Disk::Real, &missing, false, false, faults).await else {
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
