//! [`Disk`]: the one handle through which storage, partitions and the topic
//! registry touch the file system, and [`DiskFile`], an open direct-I/O file.
//!
//! Owns: dispatch between the real file system (glommio `DmaFile`, O_DIRECT,
//! io_uring; `std::fs` for directory work) and the simulated disk
//! ([`super::sim::SimDisk`]). Enum dispatch, not a trait object: the async
//! methods stay plain `async fn`, with no boxing and no dyn-compatibility
//! limits, and the real path costs one match.
//!
//! Invariants: every call returns the kernel's (or the simulation's)
//! `io::Error` with its errno intact (glommio's wrapper is peeled off), so
//! ENOSPC stays recognizable; writes to a [`DiskFile`] are page-aligned in
//! position and length (O_DIRECT; the simulated disk asserts it); directory
//! operations (create, rename, unlink) are durable only after
//! [`Disk::sync_dir`] on the parent directory.
//!
//! The directory operations are synchronous (blocking syscalls on the real
//! disk): run them on the blocking pool ([`Disk::blocking`]) on a shard's hot
//! path; recovery and rare operations call them inline, as before.
//!
//! Must not know: segments, batches, partitions, topics.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::GlommioError;

use super::sim::{SimDisk, SimFile};

/// The file system a shard's storage lives on. Cheap to clone, `Send`.
#[derive(Clone, Debug, Default)]
pub enum Disk {
    /// The real file system.
    #[default]
    Real,
    /// An in-memory disk that can crash (tests).
    Sim(Arc<SimDisk>),
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// The OS error inside a glommio error (its errno intact), else the
/// converted error.
pub fn os_error<T>(e: GlommioError<T>) -> io::Error {
    match e {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        e => e.into(),
    }
}

impl Disk {
    /// A simulated disk driven by `seed` (see [`SimDisk`]).
    pub fn sim(seed: u64) -> Disk {
        Disk::Sim(Arc::new(SimDisk::new(seed)))
    }

    /// The simulated disk behind this handle, if it is one.
    pub fn as_sim(&self) -> Option<&Arc<SimDisk>> {
        match self {
            Disk::Real => None,
            Disk::Sim(s) => Some(s),
        }
    }

    /// Runs blocking directory work `f` off the reactor (the blocking pool)
    /// on the real disk; inline on the simulated one (nothing blocks there,
    /// and staying on the executor keeps a seeded run deterministic).
    pub async fn blocking<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> T + Send + 'static,
    {
        match self {
            Disk::Real => {
                let disk = self.clone();
                glommio::executor().spawn_blocking(move || f(&disk)).await
            }
            Disk::Sim(_) => f(self),
        }
    }

    /// Opens `path` read-write with O_DIRECT, creating it if `create`;
    /// `truncate` empties it.
    pub async fn open(&self, path: &Path, create: bool, truncate: bool) -> io::Result<DiskFile> {
        self.open_with(path, create, truncate, false).await
    }

    /// Opens the existing `path` for write-through writes (O_DIRECT |
    /// O_DSYNC): a write on this handle is durable, data and the metadata
    /// needed to read it back, when it completes (the kernel flushes the
    /// device's cache for it), with no fdatasync. A second handle beside the
    /// file's plain one, for the writes that must be durable at once.
    pub async fn open_write_through(&self, path: &Path) -> io::Result<DiskFile> {
        self.open_with(path, false, false, true).await
    }

    async fn open_with(
        &self,
        path: &Path,
        create: bool,
        truncate: bool,
        write_through: bool,
    ) -> io::Result<DiskFile> {
        match self {
            Disk::Real => {
                let mut opts = OpenOptions::new();
                opts.read(true)
                    .write(true)
                    .create(create)
                    .truncate(truncate);
                if write_through {
                    opts.custom_flags(libc::O_DSYNC);
                }
                let file = opts.dma_open(path).await.map_err(os_error)?;
                Ok(DiskFile::Real {
                    in_memory: on_memory_fs(&file),
                    file,
                })
            }
            Disk::Sim(s) => {
                s.maybe_yield().await;
                Ok(DiskFile::Sim(s.open(
                    path,
                    create,
                    truncate,
                    write_through,
                )?))
            }
        }
    }

    /// fsyncs directory `dir`, making the creates, renames and unlinks in it
    /// durable.
    pub async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Disk::Real => {
                let d = glommio::io::Directory::open(dir).await.map_err(os_error)?;
                d.sync().await.map_err(os_error)?;
                d.close().await.map_err(os_error)
            }
            Disk::Sim(s) => {
                s.maybe_yield().await;
                s.sync_dir(dir)
            }
        }
    }

    /// [`Disk::sync_dir`] for blocking contexts.
    pub fn sync_dir_blocking(&self, dir: &Path) -> io::Result<()> {
        match self {
            Disk::Real => std::fs::File::open(dir)?.sync_all(),
            Disk::Sim(s) => s.sync_dir(dir),
        }
    }

    /// Creates `dir` and any missing parents; returns the directories whose
    /// fsync makes the new ones durable (the parent of each, outermost
    /// first; empty if nothing was created).
    fn create_missing(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut parents = Vec::new();
        let mut created = false;
        let mut at = dir;
        while !self.is_dir(at) {
            created = true;
            match at.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) => {
                    parents.push(p.to_path_buf());
                    at = p;
                }
                None => break,
            }
        }
        if created {
            self.create_dir_all(dir)?;
        }
        parents.reverse();
        Ok(parents)
    }

    /// Creates `dir` and any missing parents, and fsyncs the parent of each
    /// directory it created, so the new directories survive a crash
    /// (blocking). Returns whether anything was created.
    pub fn create_dir_all_durable(&self, dir: &Path) -> io::Result<bool> {
        let parents = self.create_missing(dir)?;
        for p in &parents {
            self.sync_dir_blocking(p)?;
        }
        Ok(!parents.is_empty())
    }

    /// [`Disk::create_dir_all_durable`] with the directory fsyncs through
    /// the executor (for a shard's reactor).
    pub async fn create_dir_all_synced(&self, dir: &Path) -> io::Result<bool> {
        let parents = self.create_missing(dir)?;
        for p in &parents {
            self.sync_dir(p).await?;
        }
        Ok(!parents.is_empty())
    }

    /// Creates `dir` and any missing parents (not durable by itself).
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Disk::Real => std::fs::create_dir_all(dir),
            Disk::Sim(s) => s.create_dir_all(dir),
        }
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        match self {
            Disk::Real => path.is_dir(),
            Disk::Sim(s) => s.is_dir(path),
        }
    }

    pub fn exists(&self, path: &Path) -> bool {
        match self {
            Disk::Real => path.exists(),
            Disk::Sim(s) => s.exists(path),
        }
    }

    /// The entries of `dir` (names only; `.` and `..` left out).
    pub fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        match self {
            Disk::Real => {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    out.push(DirEntry {
                        name: entry.file_name().to_string_lossy().into_owned(),
                        is_dir,
                    });
                }
                Ok(out)
            }
            Disk::Sim(s) => s.list_dir(dir),
        }
    }

    /// Renames `from` to `to` (replacing a file at `to`).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            Disk::Real => std::fs::rename(from, to),
            Disk::Sim(s) => s.rename(from, to),
        }
    }

    /// Unlinks a file.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            Disk::Real => std::fs::remove_file(path),
            Disk::Sim(s) => s.remove(path, false),
        }
    }

    /// Removes a directory and everything in it.
    pub fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match self {
            Disk::Real => std::fs::remove_dir_all(path),
            Disk::Sim(s) => s.remove(path, true),
        }
    }

    /// The whole content of a small file.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self {
            Disk::Real => std::fs::read(path),
            Disk::Sim(s) => s.read_whole(path),
        }
    }

    /// Creates or truncates `path`, writes `bytes` and, if `sync`, fsyncs the
    /// file (buffered I/O: for small files such as checkpoints).
    pub fn write(&self, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
        match self {
            Disk::Real => {
                use std::io::Write;
                let mut f = std::fs::File::create(path)?;
                f.write_all(bytes)?;
                if sync {
                    f.sync_all()?;
                }
                Ok(())
            }
            Disk::Sim(s) => s.write_whole(path, bytes, sync),
        }
    }
}

/// Whether `file` lives on tmpfs/ramfs (fstatfs; false if that fails).
fn on_memory_fs(file: &DmaFile) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs only writes into the zeroed struct we pass; the fd is
    // open for as long as `file` lives.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    const RAMFS_MAGIC: i64 = 0x858458f6;
    let kind = st.f_type as i64;
    rc == 0 && (kind == libc::TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

/// One open direct-I/O file on a [`Disk`].
pub enum DiskFile {
    Real {
        file: DmaFile,
        /// On a memory file system (tmpfs) there are no blocks to reserve,
        /// and fallocate there walks every page: `pre_allocate` skips it.
        in_memory: bool,
    },
    Sim(SimFile),
}

impl DiskFile {
    /// A page-aligned buffer of `len` bytes for direct writes to this file
    /// (its content is not zeroed).
    pub fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        match self {
            DiskFile::Real { file, .. } => file.alloc_dma_buffer(len),
            DiskFile::Sim(_) => glommio::allocate_dma_buffer(len),
        }
    }

    /// One write of the aligned `buf` at aligned `pos`; returns the bytes
    /// written (a direct write may be short when the device fills up).
    pub async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        match self {
            DiskFile::Real { file, .. } => file.write_rc_at(buf, pos).await.map_err(os_error),
            DiskFile::Sim(f) => f.write_at(buf.as_bytes(), pos).await,
        }
    }

    /// Reads up to `len` bytes at any `pos` (fewer at end of file).
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            DiskFile::Real { file, .. } => {
                let r = file.read_at(pos, len).await.map_err(os_error)?;
                Ok(Bytes::copy_from_slice(&r))
            }
            DiskFile::Sim(f) => f.read_at(pos, len).await,
        }
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        match self {
            DiskFile::Real { file, .. } => file.fdatasync().await.map_err(os_error),
            DiskFile::Sim(f) => f.fdatasync().await,
        }
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            DiskFile::Real { file, .. } => file.truncate(len).await.map_err(os_error),
            DiskFile::Sim(f) => f.truncate(len).await,
        }
    }

    /// Reserves blocks for `[0, len)` without changing the size
    /// (fallocate KEEP_SIZE); a no-op on tmpfs and on the simulated disk.
    pub async fn pre_allocate(&self, len: u64) -> io::Result<()> {
        match self {
            DiskFile::Real {
                in_memory: true, ..
            } => Ok(()),
            DiskFile::Real { file, .. } => file.pre_allocate(len, true).await.map_err(os_error),
            DiskFile::Sim(f) => f.check_alive(),
        }
    }

    /// Size in bytes.
    pub async fn size(&self) -> io::Result<u64> {
        match self {
            DiskFile::Real { file, .. } => file.file_size().await.map_err(os_error),
            DiskFile::Sim(f) => f.size(),
        }
    }

    pub async fn close(self) -> io::Result<()> {
        match self {
            DiskFile::Real { file, .. } => file.close().await.map_err(os_error),
            DiskFile::Sim(_) => Ok(()),
        }
    }
}
