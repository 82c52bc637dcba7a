//! [`SimDisk`]: an in-memory disk that loses what a power failure loses,
//! deterministically from a seed (docs/decisions/0006-io-seam.md).
//!
//! Owns: a namespace of directories and files (inodes) and, per file, its
//! content as last fsynced (durable) and as the page cache holds it now
//! (current); per directory, its entries as last fsynced and as they are now.
//! [`SimDisk::crash`] returns the disk a power loss would leave: durable
//! entries and durable contents, plus — when the seed says so — some pages of
//! unsynced writes (torn writes at page granularity, an extending write's new
//! size kept or not). It can fail an fsync with EIO (the pages that were
//! dirty are then treated as possibly lost: a later fsync does not make them
//! durable until they are written again, as Linux marks them clean), report a
//! full disk (ENOSPC past a byte capacity), crash after a given number of
//! mutating operations (the op in flight may or may not take effect; every
//! later call fails with EIO), and yield to the executor at seeded points.
//!
//! Invariants: a crash never loses what a completed fsync (file) or directory
//! fsync (entries) made durable; direct-I/O files only see page-aligned writes
//! (asserted, as O_DIRECT requires); after [`SimDisk::crash`] or a crash
//! countdown the old disk is dead and changes nothing any more.
//!
//! Not modelled: metadata journaling order beyond the rules above (a rename is
//! durable per parent directory fsync, each side separately), sub-page tears,
//! bit rot, reordering between files, latency. A `std::sync::Mutex` guards
//! the state so the handle is `Send` like the real one (the registry's
//! blocking work carries it); this is test machinery, not the data path.
//!
//! The file and directory state and the crash/tear model are in [`state`].
//!
//! Must not know: segments, batches, partitions, topics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::disk::{DirEntry, Disk};

mod state;

pub(crate) use state::Rng;
use state::{err, torn_content, Inode, Node, Settings, State};

/// Page size of the simulated disk, in bytes (torn writes keep or lose whole
/// pages; direct writes must be aligned to it).
pub const SIM_PAGE_BYTES: usize = 4096;

/// Counters of what the disk did (for tests and failure reports).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    pub mutating_ops: u64,
    pub fsyncs: u64,
    pub dir_syncs: u64,
    pub failed_fsyncs: u64,
    pub enospc: u64,
    pub crashes: u64,
}

/// The simulated disk. Use it through [`Disk::Sim`].
#[derive(Debug)]
pub struct SimDisk {
    st: Mutex<State>,
}

impl SimDisk {
    /// An empty disk (only `/`), everything decided by `seed`: no capacity
    /// limit, no injected fsync failures, torn crashes on, yields at 1 in 8
    /// operations.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with_state(
            Rng(seed),
            Settings {
                capacity_bytes: None,
                fsync_failure_per_mille: 0,
                yield_per_mille: 125,
                torn_crashes: true,
                ignore_dir_syncs: false,
            },
            HashMap::new(),
            BTreeMap::new(),
            0,
            SimStats::default(),
        )
    }

    fn with_state(
        rng: Rng,
        settings: Settings,
        inodes: HashMap<u64, Inode>,
        entries: BTreeMap<(u64, String), Node>,
        next_id: u64,
        stats: SimStats,
    ) -> SimDisk {
        SimDisk {
            st: Mutex::new(State {
                rng,
                inodes,
                next_id,
                cur: entries.clone(),
                dur: entries,
                crash_in_ops: None,
                dead: false,
                settings,
                stats,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power fails during the `n`-th mutating operation from now (0: the
    /// next one); `None` cancels.
    pub fn set_crash_after_ops(&self, n: Option<u64>) {
        self.lock().crash_in_ops = n;
    }

    /// Writes that would make the files' total size exceed `bytes` fail
    /// with ENOSPC.
    pub fn set_capacity_bytes(&self, bytes: Option<u64>) {
        self.lock().settings.capacity_bytes = bytes;
    }

    /// Fails this share (per mille) of fsyncs with EIO.
    pub fn set_fsync_failure_per_mille(&self, p: u32) {
        self.lock().settings.fsync_failure_per_mille = p;
    }

    /// Whether a crash may keep some pages of unsynced writes (else it
    /// keeps exactly the durable state).
    pub fn set_torn_crashes(&self, on: bool) {
        self.lock().settings.torn_crashes = on;
    }

    /// Test hook: directory fsyncs do nothing (a missing directory fsync),
    /// to show that the crash test notices.
    pub fn set_ignore_dir_syncs(&self, on: bool) {
        self.lock().settings.ignore_dir_syncs = on;
    }

    /// True once the disk crashed (countdown or [`SimDisk::crash`]).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Power loss: this disk dies (every later call fails with EIO) and the
    /// returned disk holds what survived: durable directory entries and
    /// contents, and — if torn crashes are on and the seed says so — some
    /// pages (and possibly the new size) of writes not covered by an fsync.
    pub fn crash(&self) -> Disk {
        let mut st = self.lock();
        st.dead = true;
        let mut rng = Rng(st.rng.next());
        let torn = st.settings.torn_crashes && rng.coin();
        let mut inodes = HashMap::new();
        for node in st.dur.values() {
            let Node::File(id) = *node else { continue };
            if inodes.contains_key(&id) {
                continue;
            }
            let Some(ino) = st.inodes.get(&id) else {
                continue;
            };
            let content = if torn {
                torn_content(ino, &mut rng)
            } else {
                ino.dur.clone()
            };
            inodes.insert(
                id,
                Inode {
                    cur: content.clone(),
                    dur: content,
                    lost: BTreeSet::new(),
                    open: 0,
                },
            );
        }
        let mut stats = st.stats;
        stats.crashes += 1;
        Disk::Sim(Arc::new(SimDisk::with_state(
            rng,
            st.settings.clone(),
            inodes,
            st.dur.clone(),
            st.next_id,
            stats,
        )))
    }

    /// Seeded yield to the executor, so tasks interleave differently per seed.
    pub async fn maybe_yield(&self) {
        let y = {
            let mut st = self.lock();
            let p = st.settings.yield_per_mille;
            st.rng.per_mille(p)
        };
        if y {
            futures_lite::future::yield_now().await;
        }
    }

    /// Opens a file; with `write_through` (O_DSYNC) each write is synced
    /// as part of the write.
    pub fn open(
        self: &Arc<Self>,
        path: &Path,
        create: bool,
        truncate: bool,
        write_through: bool,
    ) -> io::Result<SimFile> {
        let mut st = self.lock();
        st.alive()?;
        let key = st.entry_key(path)?;
        let id = match st.cur.get(&key).copied() {
            Some(Node::Dir(_)) => return Err(err(libc::EISDIR)),
            Some(Node::File(id)) => {
                if truncate {
                    st.truncate(id, 0)?;
                }
                id
            }
            None if !create => return Err(err(libc::ENOENT)),
            None => {
                let id = st.new_id();
                st.ns_change(|st| {
                    st.inodes.insert(id, Inode::default());
                    st.cur.insert(key, Node::File(id));
                    Ok(())
                })?;
                id
            }
        };
        st.inode(id)?.open += 1;
        Ok(SimFile {
            disk: self.clone(),
            id,
            write_through,
        })
    }

    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let id = st.dir_id(dir)?;
        st.stats.dir_syncs += 1;
        if st.settings.ignore_dir_syncs {
            return st.begin().map(|_| ());
        }
        st.ns_change(|st| {
            let lo = (id, String::new());
            let hi = (id + 1, String::new());
            let keys: Vec<_> = st
                .dur
                .range(lo.clone()..hi.clone())
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                st.dur.remove(&k);
            }
            let now: Vec<_> = st.cur.range(lo..hi).map(|(k, n)| (k.clone(), *n)).collect();
            st.dur.extend(now);
            Ok(())
        })
    }

    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        let mut id = 0;
        for c in dir.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => {
                    let key = (id, name.to_string_lossy().into_owned());
                    id = match st.cur.get(&key).copied() {
                        Some(Node::Dir(d)) => d,
                        Some(Node::File(_)) => return Err(err(libc::EEXIST)),
                        None => {
                            let d = st.new_id();
                            st.ns_change(|st| {
                                st.cur.insert(key, Node::Dir(d));
                                Ok(())
                            })?;
                            d
                        }
                    };
                }
                _ => return Err(err(libc::EINVAL)),
            }
        }
        Ok(())
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        let st = self.lock();
        !st.dead && st.dir_id(path).is_ok()
    }

    pub fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        !st.dead && (path.parent().is_none() || st.lookup(path).is_ok())
    }

    pub fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.lock();
        st.alive()?;
        let id = st.dir_id(dir)?;
        Ok(st
            .cur
            .range((id, String::new())..(id + 1, String::new()))
            .map(|((_, name), n)| DirEntry {
                name: name.clone(),
                is_dir: matches!(n, Node::Dir(_)),
            })
            .collect())
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        let from_key = st.entry_key(from)?;
        let node = st
            .cur
            .get(&from_key)
            .copied()
            .ok_or_else(|| err(libc::ENOENT))?;
        let to_key = st.entry_key(to)?;
        if let Some(Node::Dir(_)) = st.cur.get(&to_key) {
            return Err(err(libc::EISDIR));
        }
        st.ns_change(|st| {
            st.cur.remove(&from_key);
            st.cur.insert(to_key, node);
            Ok(())
        })
    }

    /// Unlinks `path`; a directory only if `dir` (with everything in it).
    pub fn remove(&self, path: &Path, dir: bool) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        let key = st.entry_key(path)?;
        match st.cur.get(&key) {
            None => return Err(err(libc::ENOENT)),
            Some(Node::Dir(_)) if !dir => return Err(err(libc::EISDIR)),
            Some(Node::File(_)) if dir => return Err(err(libc::ENOTDIR)),
            Some(_) => {}
        }
        st.ns_change(|st| {
            st.cur.remove(&key);
            Ok(())
        })
    }

    pub fn read_whole(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        st.alive()?;
        match st.lookup(path)? {
            Node::File(id) => Ok(st.inode(id)?.cur.clone()),
            Node::Dir(_) => Err(err(libc::EISDIR)),
        }
    }

    /// Buffered whole-file write (create/truncate, write, optional fsync).
    pub fn write_whole(self: &Arc<Self>, path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
        let f = self.open(path, true, true, false)?;
        let mut st = self.lock();
        st.write(f.id, 0, bytes)?;
        if sync {
            st.fsync(f.id)?;
        }
        Ok(())
    }

    /// The current content of a file, for tests (`None` if absent).
    pub fn file_content(&self, path: &Path) -> Option<Vec<u8>> {
        self.read_whole(path).ok()
    }
}

/// An open file on a [`SimDisk`] (keeps its inode alive after an unlink).
#[derive(Debug)]
pub struct SimFile {
    disk: Arc<SimDisk>,
    id: u64,
    /// O_DSYNC: a write is followed by a sync of the file in the same step.
    write_through: bool,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.disk.lock();
        if let Some(ino) = st.inodes.get_mut(&self.id) {
            ino.open = ino.open.saturating_sub(1);
        }
    }
}

impl SimFile {
    /// Direct write of `bytes` at `pos`: both must be page-aligned.
    pub async fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<usize> {
        assert_eq!(
            pos % SIM_PAGE_BYTES as u64,
            0,
            "O_DIRECT write at an unaligned position"
        );
        assert_eq!(
            bytes.len() % SIM_PAGE_BYTES,
            0,
            "O_DIRECT write of an unaligned length"
        );
        self.disk.maybe_yield().await;
        let pos = usize::try_from(pos).map_err(|_| err(libc::EFBIG))?;
        let mut st = self.disk.lock();
        let n = st.write(self.id, pos, bytes)?;
        if self.write_through {
            // As O_DSYNC on O_DIRECT: the device cache is flushed for the
            // write, which makes the file's completed writes durable.
            st.fsync(self.id)?;
        }
        Ok(n)
    }

    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.disk.maybe_yield().await;
        let mut st = self.disk.lock();
        st.alive()?;
        let cur = &st.inode(self.id)?.cur;
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(cur.len());
        let end = start.saturating_add(len).min(cur.len());
        Ok(Bytes::copy_from_slice(&cur[start..end]))
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        self.disk.maybe_yield().await;
        self.disk.lock().fsync(self.id)
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.maybe_yield().await;
        let len = usize::try_from(len).map_err(|_| err(libc::EFBIG))?;
        self.disk.lock().truncate(self.id, len)
    }

    pub fn size(&self) -> io::Result<u64> {
        let mut st = self.disk.lock();
        st.alive()?;
        Ok(st.inode(self.id)?.cur.len() as u64)
    }

    /// Ok unless the disk is dead.
    pub fn check_alive(&self) -> io::Result<()> {
        self.disk.lock().alive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(d: &Disk) -> &Arc<SimDisk> {
        d.as_sim().expect("sim")
    }

    fn page(b: u8) -> Vec<u8> {
        vec![b; SIM_PAGE_BYTES]
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn a_write_through_write_survives_a_crash_without_fdatasync() {
        let d = Disk::sim(3);
        let s = sim(&d);
        s.set_torn_crashes(false);
        d.create_dir_all_durable(Path::new("/a")).expect("mkdir");
        let f = s.open(Path::new("/a/f"), true, false, false).expect("open");
        block_on(f.fdatasync()).expect("fsync");
        d.sync_dir_blocking(Path::new("/a")).expect("sync dir");
        let through = s
            .open(Path::new("/a/f"), false, false, true)
            .expect("open O_DSYNC");
        block_on(through.write_at(&page(7), 0)).expect("write-through");
        block_on(f.write_at(&page(8), 4096)).expect("plain write");
        let after = sim(&s.crash()).read_whole(Path::new("/a/f")).expect("file");
        assert_eq!(
            &after[..4096],
            &page(7)[..],
            "the write-through page is durable"
        );
        assert_eq!(after.len(), 4096, "the later plain write is not");
    }

    #[test]
    fn unsynced_writes_and_entries_are_lost_synced_ones_kept() {
        let d = Disk::sim(1);
        let s = sim(&d);
        s.set_torn_crashes(false);
        d.create_dir_all_durable(Path::new("/a/b")).expect("mkdir");
        let f = s
            .open(Path::new("/a/b/f"), true, false, false)
            .expect("open");
        block_on(f.write_at(&page(1), 0)).expect("write");
        block_on(f.fdatasync()).expect("fsync");
        block_on(f.write_at(&page(2), 4096)).expect("write");
        // The file's entry is not durable yet: everything is lost.
        let after = s.crash();
        assert!(!after.exists(Path::new("/a/b/f")));
        assert!(
            after.is_dir(Path::new("/a/b")),
            "synced directories survive"
        );

        let d = Disk::sim(2);
        let s = sim(&d);
        s.set_torn_crashes(false);
        d.create_dir_all_durable(Path::new("/a")).expect("mkdir");
        let f = s.open(Path::new("/a/f"), true, false, false).expect("open");
        block_on(f.write_at(&page(1), 0)).expect("write");
        block_on(f.fdatasync()).expect("fsync");
        d.sync_dir_blocking(Path::new("/a")).expect("sync dir");
        block_on(f.write_at(&page(2), 4096)).expect("write");
        let after = s.crash();
        assert!(s.is_dead());
        assert_eq!(after.read(Path::new("/a/f")).expect("read"), page(1));
        assert!(
            d.read(Path::new("/a/f")).is_err(),
            "the crashed disk is dead"
        );
    }

    #[test]
    fn a_failed_fsync_loses_the_dirty_pages_for_good() {
        let d = Disk::sim(3);
        let s = sim(&d);
        s.set_torn_crashes(false);
        d.create_dir_all_durable(Path::new("/a")).expect("mkdir");
        let f = s.open(Path::new("/a/f"), true, false, false).expect("open");
        d.sync_dir_blocking(Path::new("/a")).expect("sync dir");
        block_on(f.write_at(&page(7), 0)).expect("write");
        s.set_fsync_failure_per_mille(1000);
        assert!(block_on(f.fdatasync()).is_err());
        s.set_fsync_failure_per_mille(0);
        block_on(f.fdatasync()).expect("a retried fsync succeeds ...");
        let after = s.crash();
        assert_eq!(
            after.read(Path::new("/a/f")).expect("read"),
            vec![0; SIM_PAGE_BYTES],
            "... but does not make the pages of the failed one durable"
        );
    }

    #[test]
    fn renames_are_durable_per_parent_and_torn_crashes_keep_whole_pages() {
        let d = Disk::sim(4);
        let s = sim(&d);
        d.create_dir_all_durable(Path::new("/x/y")).expect("mkdir");
        d.write(Path::new("/x/y/t.tmp"), b"hello", true)
            .expect("write");
        d.rename(Path::new("/x/y/t.tmp"), Path::new("/x/y/t"))
            .expect("rename");
        d.sync_dir_blocking(Path::new("/x/y")).expect("sync");
        let names: Vec<String> = d
            .list_dir(Path::new("/x/y"))
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["t".to_string()]);
        let f = s
            .open(Path::new("/x/y/t2"), true, false, false)
            .expect("open");
        d.sync_dir_blocking(Path::new("/x/y")).expect("sync");
        let mut w = page(1);
        w.extend(page(2));
        block_on(f.write_at(&w, 0)).expect("write");
        // Over many seeds every page is either written or not: never a mix
        // inside a page.
        for _ in 0..20 {
            let after = sim(&d).crash();
            assert_eq!(after.read(Path::new("/x/y/t")).expect("read"), b"hello");
            let c = after.read(Path::new("/x/y/t2")).expect("read");
            for chunk in c.chunks(SIM_PAGE_BYTES) {
                assert!(chunk.iter().all(|&b| b == chunk[0]), "torn inside a page");
            }
        }
    }

    #[test]
    fn crash_countdown_kills_the_disk_and_enospc_past_capacity() {
        let d = Disk::sim(5);
        let s = sim(&d);
        d.create_dir_all(Path::new("/a")).expect("mkdir");
        s.set_capacity_bytes(Some(2 * SIM_PAGE_BYTES as u64));
        let f = s.open(Path::new("/a/f"), true, false, false).expect("open");
        block_on(f.write_at(&page(1), 0)).expect("fits");
        let e = block_on(f.write_at(&[page(1), page(1)].concat(), 4096)).expect_err("full");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        s.set_crash_after_ops(Some(1));
        block_on(f.fdatasync()).expect("one more op");
        assert!(block_on(f.fdatasync()).is_err(), "the crash op fails");
        assert!(s.is_dead());
        assert!(
            block_on(f.read_at(0, 10)).is_err(),
            "a dead disk fails reads"
        );
    }

    #[test]
    #[should_panic(expected = "O_DIRECT")]
    fn unaligned_direct_writes_are_refused() {
        let d = Disk::sim(6);
        let f = sim(&d)
            .open(Path::new("/f"), true, false, false)
            .expect("open");
        let _ = block_on(f.write_at(&[1, 2, 3], 0));
    }
}
