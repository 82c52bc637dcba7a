//! The state behind a [`SimDisk`](super::SimDisk) and its crash model
//! (split out of [`super`]): inodes with their durable and current contents,
//! directory entries as last fsynced and as they are now, the seeded
//! generator, the fate of each mutating operation (crash countdown), fsync
//! failures that lose the dirty pages for good, ENOSPC past a byte capacity,
//! and the torn content a crash leaves (page granularity).
//!
//! Invariants: a crash never loses what a completed fsync (file) or directory
//! fsync (entries) made durable; after a crash countdown the state is dead
//! and changes nothing any more.
//!
//! Must not know: segments, batches, partitions, topics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path};

use super::{SimStats, SIM_PAGE_BYTES};

/// SplitMix64: a tiny, well-known deterministic generator (the simulation
/// must not depend on a dev-only crate).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub(super) fn per_mille(&mut self, p: u32) -> bool {
        p > 0 && self.below(1000) < p as u64
    }
    pub(super) fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    Dir(u64),
    File(u64),
}

#[derive(Debug, Default, Clone)]
pub(super) struct Inode {
    pub(super) cur: Vec<u8>,
    pub(super) dur: Vec<u8>,
    /// Pages that were dirty when an fsync failed and not written since.
    pub(super) lost: BTreeSet<usize>,
    pub(super) open: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) capacity_bytes: Option<u64>,
    pub(super) fsync_failure_per_mille: u32,
    pub(super) yield_per_mille: u32,
    pub(super) torn_crashes: bool,
    pub(super) ignore_dir_syncs: bool,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) rng: Rng,
    pub(super) inodes: HashMap<u64, Inode>,
    pub(super) next_id: u64,
    /// Directory entries now: (directory id, name) → node. Root is id 0.
    pub(super) cur: BTreeMap<(u64, String), Node>,
    /// Directory entries as last fsynced.
    pub(super) dur: BTreeMap<(u64, String), Node>,
    pub(super) crash_in_ops: Option<u64>,
    pub(super) dead: bool,
    pub(super) settings: Settings,
    pub(super) stats: SimStats,
}

pub(super) fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// What the operation being started must do.
#[derive(PartialEq, Eq)]
pub(super) enum Fate {
    Run,
    /// Power fails during this op: it may or may not take effect, then EIO.
    Crash,
}

impl State {
    pub(super) fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(err(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Starts a mutating operation (counts down to a scheduled crash).
    pub(super) fn begin(&mut self) -> io::Result<Fate> {
        self.alive()?;
        self.stats.mutating_ops += 1;
        match self.crash_in_ops {
            Some(0) => {
                self.dead = true;
                self.crash_in_ops = None;
                Ok(Fate::Crash)
            }
            Some(n) => {
                self.crash_in_ops = Some(n - 1);
                Ok(Fate::Run)
            }
            None => Ok(Fate::Run),
        }
    }

    /// The id of directory `path` (current namespace).
    pub(super) fn dir_id(&self, path: &Path) -> io::Result<u64> {
        let mut id = 0;
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => {
                    let key = (id, name.to_string_lossy().into_owned());
                    match self.cur.get(&key) {
                        Some(Node::Dir(d)) => id = *d,
                        Some(Node::File(_)) => return Err(err(libc::ENOTDIR)),
                        None => return Err(err(libc::ENOENT)),
                    }
                }
                _ => return Err(err(libc::EINVAL)),
            }
        }
        Ok(id)
    }

    /// (parent directory id, name) of `path`.
    pub(super) fn entry_key(&self, path: &Path) -> io::Result<(u64, String)> {
        let name = path
            .file_name()
            .ok_or_else(|| err(libc::EINVAL))?
            .to_string_lossy()
            .into_owned();
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((self.dir_id(parent)?, name))
    }

    pub(super) fn lookup(&self, path: &Path) -> io::Result<Node> {
        let key = self.entry_key(path)?;
        self.cur.get(&key).copied().ok_or_else(|| err(libc::ENOENT))
    }

    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn used_bytes(&self) -> u64 {
        let linked: BTreeSet<u64> = self
            .cur
            .values()
            .filter_map(|n| match n {
                Node::File(i) => Some(*i),
                Node::Dir(_) => None,
            })
            .collect();
        self.inodes
            .iter()
            .filter(|(id, ino)| ino.open > 0 || linked.contains(id))
            .map(|(_, ino)| ino.cur.len().div_ceil(SIM_PAGE_BYTES) as u64 * SIM_PAGE_BYTES as u64)
            .sum()
    }

    pub(super) fn inode(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&id).ok_or_else(|| err(libc::EBADF))
    }

    pub(super) fn write(&mut self, id: u64, pos: usize, bytes: &[u8]) -> io::Result<usize> {
        let fate = self.begin()?;
        if let Some(cap) = self.settings.capacity_bytes {
            let old = self.inode(id)?.cur.len();
            let new_len = old.max(pos + bytes.len());
            let page = SIM_PAGE_BYTES as u64;
            let grow = (new_len as u64).div_ceil(page) * page - (old as u64).div_ceil(page) * page;
            if self.used_bytes() + grow > cap {
                self.stats.enospc += 1;
                return Err(err(libc::ENOSPC));
            }
        }
        let ino = self.inode(id)?;
        if ino.cur.len() < pos + bytes.len() {
            ino.cur.resize(pos + bytes.len(), 0);
        }
        ino.cur[pos..pos + bytes.len()].copy_from_slice(bytes);
        let first = pos / SIM_PAGE_BYTES;
        let end = (pos + bytes.len()).div_ceil(SIM_PAGE_BYTES);
        let rewritten: Vec<usize> = ino.lost.range(first..end).copied().collect();
        for p in rewritten {
            ino.lost.remove(&p);
        }
        if fate == Fate::Crash {
            // The write was under way: crash() decides which pages made it.
            return Err(err(libc::EIO));
        }
        Ok(bytes.len())
    }

    pub(super) fn fsync(&mut self, id: u64) -> io::Result<()> {
        let fate = self.begin()?;
        self.stats.fsyncs += 1;
        let fail = fate == Fate::Crash && self.rng.coin();
        let fail_injected =
            fate == Fate::Run && self.rng.per_mille(self.settings.fsync_failure_per_mille);
        let ino = self.inode(id)?;
        if fail || fail_injected {
            // Linux marks the dirty pages clean after a failed writeback:
            // a later fsync will not write them again.
            let pages = ino.cur.len().max(ino.dur.len()).div_ceil(SIM_PAGE_BYTES);
            for p in 0..pages {
                if page_of(&ino.cur, p) != page_of(&ino.dur, p) {
                    ino.lost.insert(p);
                }
            }
            self.stats.failed_fsyncs += 1;
            return Err(err(libc::EIO));
        }
        let mut dur = ino.cur.clone();
        for &p in &ino.lost {
            let start = p * SIM_PAGE_BYTES;
            if start >= dur.len() {
                break;
            }
            let end = (start + SIM_PAGE_BYTES).min(dur.len());
            let old = page_of(&ino.dur, p);
            for (i, b) in dur[start..end].iter_mut().enumerate() {
                *b = old.get(i).copied().unwrap_or(0);
            }
        }
        ino.dur = dur;
        if fate == Fate::Crash {
            return Err(err(libc::EIO));
        }
        Ok(())
    }

    pub(super) fn truncate(&mut self, id: u64, len: usize) -> io::Result<()> {
        let fate = self.begin()?;
        if fate == Fate::Crash && self.rng.coin() {
            return Err(err(libc::EIO));
        }
        let ino = self.inode(id)?;
        ino.cur.resize(len, 0);
        let keep_pages = len.div_ceil(SIM_PAGE_BYTES);
        ino.lost.retain(|&p| p < keep_pages);
        if fate == Fate::Crash {
            return Err(err(libc::EIO));
        }
        Ok(())
    }

    /// Applies a namespace change unless the crash in flight drops it.
    pub(super) fn ns_change(
        &mut self,
        f: impl FnOnce(&mut State) -> io::Result<()>,
    ) -> io::Result<()> {
        let fate = self.begin()?;
        if fate == Fate::Crash {
            if self.rng.coin() {
                let _ = f(self);
            }
            return Err(err(libc::EIO));
        }
        f(self)
    }
}

/// Page `p` of `v` (shorter or empty past the end).
pub(super) fn page_of(v: &[u8], p: usize) -> &[u8] {
    let start = (p * SIM_PAGE_BYTES).min(v.len());
    let end = (start + SIM_PAGE_BYTES).min(v.len());
    &v[start..end]
}

/// Content of `ino` after a crash that tears unsynced writes: per page,
/// the current or the durable version; the size is the durable one, the
/// current one, or a page boundary in between.
pub(super) fn torn_content(ino: &Inode, rng: &mut Rng) -> Vec<u8> {
    if ino.cur == ino.dur {
        return ino.dur.clone();
    }
    let (lo, hi) = (
        ino.cur.len().min(ino.dur.len()),
        ino.cur.len().max(ino.dur.len()),
    );
    let len = match rng.below(3) {
        0 => ino.dur.len(),
        1 => ino.cur.len(),
        _ => {
            let pages = (hi - lo).div_ceil(SIM_PAGE_BYTES) as u64;
            (lo + rng.below(pages + 1) as usize * SIM_PAGE_BYTES).min(hi)
        }
    };
    let mut out = vec![0u8; len];
    for p in 0..len.div_ceil(SIM_PAGE_BYTES) {
        let src = if rng.coin() { &ino.cur } else { &ino.dur };
        let page = page_of(src, p);
        let start = p * SIM_PAGE_BYTES;
        let n = page.len().min(len - start);
        out[start..start + n].copy_from_slice(&page[..n]);
    }
    out
}
