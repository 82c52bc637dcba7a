//! An inotify watch for file deletions in a set of directories, and a
//! finder for what an interrupted segment delete leaves (used by
//! tests/crash_cycles.rs to aim SIGKILLs at retention deletes).
//!
//! Invariants: the fd is non-blocking and closed on drop; every wait is
//! bounded by its timeout; only `IN_DELETE` events of the watched
//! directories are reported.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

pub struct DeleteWatch {
    fd: i32,
}

impl DeleteWatch {
    /// Watches `dirs` for deletions; `None` (with the reason) if inotify is
    /// unavailable.
    pub fn new(dirs: &[PathBuf]) -> Result<DeleteWatch, String> {
        // SAFETY: plain syscalls; the fd is owned by the returned value.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "inotify_init1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let w = DeleteWatch { fd };
        for d in dirs {
            let c = CString::new(d.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: valid fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_DELETE) };
            if wd < 0 {
                return Err(format!(
                    "inotify_add_watch {}: {}",
                    d.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(w)
    }

    /// Reads pending events; returns the names of deleted files.
    fn read_events(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return names;
            }
            let n = n as usize;
            let mut at = 0;
            // struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }
            while at + 16 <= n {
                let len =
                    u32::from_ne_bytes([buf[at + 12], buf[at + 13], buf[at + 14], buf[at + 15]])
                        as usize;
                let end = (at + 16 + len).min(n);
                let name = &buf[at + 16..end];
                let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                names.push(String::from_utf8_lossy(name).into_owned());
                at = end;
            }
        }
    }

    /// Forgets deletions that already happened.
    pub fn drain(&self) {
        let _ = self.read_events();
    }

    /// Waits up to `timeout` for deletions; returns the deleted names (empty
    /// on timeout).
    pub fn wait(&self, timeout: Duration) -> Vec<String> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return Vec::new();
        }
        self.read_events()
    }
}

impl Drop for DeleteWatch {
    fn drop(&mut self) {
        // SAFETY: closing the fd this value owns.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// `.index`/`.timeindex` files in `dirs` whose segment `.log` is gone: what
/// a kill between the unlinks of one segment's files leaves behind.
pub fn orphan_index_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "index" || x == "timeindex")
                && !p.with_extension("log").exists()
        })
        .collect()
}
