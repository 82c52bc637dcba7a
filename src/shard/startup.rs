//! Process-level startup: the data-dir lock, RLIMIT_MEMLOCK, signal
//! blocking and the choice of CPUs for the shards.
//!
//! Owns: `<data_dir>/.lock` (an exclusive flock held for the broker's
//! lifetime), the shard count and the shard → CPU placement (at most one
//! shard per CPU: pinned executors sharing a CPU starve each other, and 48
//! of them on 2 CPUs never finished starting), and reading the startup
//! signals.
//!
//! Invariants: runs on the main thread before any executor exists (so the
//! blocked signal mask is inherited by every shard thread); nothing here
//! panics: every failure is a [`ShardError::Startup`] with a message naming
//! what went wrong, except raising RLIMIT_MEMLOCK, which is best effort.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::ShardError;

/// An exclusive flock on `<data_dir>/.lock`, released when dropped (or when
/// the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates `data_dir` if needed and takes its lock.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, ShardError> {
    if let Ok(meta) = fs::metadata(data_dir) {
        if !meta.is_dir() {
            return Err(ShardError::Startup(format!(
                "data dir {} is a file, not a directory",
                data_dir.display()
            )));
        }
    }
    fs::create_dir_all(data_dir).map_err(|e| {
        ShardError::Startup(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| ShardError::Startup(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(ShardError::Startup(
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                format!(
                    "data dir {} is in use by another broker (lock {} is held)",
                    data_dir.display(),
                    path.display()
                )
            } else {
                format!("cannot lock {}: {err}", path.display())
            },
        ));
    }
    Ok(DataDirLock { _file: file })
}

/// Least RLIMIT_MEMLOCK glommio starts an executor with, in bytes.
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Raises RLIMIT_MEMLOCK as far as allowed (io_uring registers DMA memory
/// against it). Below `needed_bytes` is one warning line (io_uring then runs
/// without registered buffers); below [`MIN_MEMLOCK_BYTES`] no executor can
/// start, which is one clear error.
pub fn raise_memlock(needed_bytes: u64) -> Result<(), ShardError> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to stack values.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) != 0 {
            tracing::warn!(
                "cannot read RLIMIT_MEMLOCK: {}",
                std::io::Error::last_os_error()
            );
            return Ok(());
        }
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return Ok(());
        }
        if cur.rlim_cur < cur.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: cur.rlim_max,
                rlim_max: cur.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) == 0 {
                cur = raised;
            }
        }
    }
    if cur.rlim_cur != libc::RLIM_INFINITY && cur.rlim_cur < MIN_MEMLOCK_BYTES {
        return Err(ShardError::Startup(format!(
            "RLIMIT_MEMLOCK is {} bytes, below the {MIN_MEMLOCK_BYTES} bytes io_uring needs \
             per shard; raise it (ulimit -l, or LimitMEMLOCK= in a systemd unit)",
            cur.rlim_cur
        )));
    }
    if cur.rlim_cur != libc::RLIM_INFINITY && cur.rlim_cur < needed_bytes {
        tracing::warn!(
            "RLIMIT_MEMLOCK is {} bytes, below the {needed_bytes} bytes the shards' io_memory needs: \
             io_uring runs without registered buffers (slower); raise it (ulimit -l, or \
             LimitMEMLOCK= in a systemd unit) or lower shard.io_memory_bytes",
            cur.rlim_cur
        );
    }
    Ok(())
}

/// One clear line for an executor that could not be created (glommio's own
/// message for a low RLIMIT_MEMLOCK is a debug dump).
pub fn describe_executor_error(message: &str) -> String {
    if message.contains("MemLockLimit") {
        "RLIMIT_MEMLOCK is too low for io_uring (glommio needs at least 512 KiB per shard); \
         raise it (ulimit -l, or LimitMEMLOCK= in a systemd unit)"
            .into()
    } else {
        message.to_string()
    }
}

/// A SIGINT or SIGTERM pending for the process, taken (so it is handled
/// once), or None. Only meaningful while both are blocked ([`block_signals`]).
pub fn take_pending_signal() -> Option<i32> {
    // SAFETY: sigset operations on a zeroed stack value; sigtimedwait with a
    // zero timeout only writes the stack siginfo.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigtimedwait(&set, &mut info, &zero);
        (sig > 0).then_some(sig)
    }
}

/// Blocks SIGINT and SIGTERM on the calling thread; threads spawned after
/// inherit the mask, and shard 0 reads them from a signalfd.
pub fn block_signals() -> Result<(), ShardError> {
    glommio::signal::block(&[libc::SIGINT, libc::SIGTERM])
        .map_err(|e| ShardError::Startup(format!("cannot block SIGINT/SIGTERM: {e}")))
}

/// The CPUs this process may run on (its affinity mask), sorted, no repeats.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPU each shard is pinned to: `requested` shards (None or 0: one per
/// CPU this process may run on), one per CPU; more shards than CPUs are
/// refused.
pub fn shard_cpus(requested: Option<usize>) -> Result<Vec<usize>, ShardError> {
    let cpus = available_cpus();
    if cpus.is_empty() {
        return Err(ShardError::Startup(
            "cannot determine the CPUs this process may run on".into(),
        ));
    }
    let n = match requested {
        Some(n) if n > 0 => n,
        _ => cpus.len(),
    };
    if n > cpus.len() {
        return Err(ShardError::Startup(format!(
            "shards = {n} is more than the {} CPUs this process may run on; \
             use at most {} (0 = one per CPU)",
            cpus.len(),
            cpus.len()
        )));
    }
    assert!(n <= cpus.len());
    Ok(cpus[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_clear_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = lock_data_dir(dir.path()).expect("first lock");
        let err = lock_data_dir(dir.path()).expect_err("second lock must fail");
        assert!(
            err.to_string().contains("in use by another broker"),
            "{err}"
        );
        drop(first);
        lock_data_dir(dir.path()).expect("lock after release");
    }

    #[test]
    fn cpus_for_shards() {
        let all = shard_cpus(None).expect("cpus");
        assert!(!all.is_empty());
        assert_eq!(shard_cpus(Some(0)).expect("cpus"), all);
        let one = shard_cpus(Some(1)).expect("cpus");
        assert_eq!(one, vec![all[0]]);
        let err = shard_cpus(Some(all.len() + 1)).expect_err("more shards than CPUs");
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("data");
        std::fs::write(&file, b"x").expect("write");
        let err = lock_data_dir(&file).expect_err("a file is no data dir");
        assert!(
            err.to_string().contains("is a file, not a directory"),
            "{err}"
        );
    }
}
