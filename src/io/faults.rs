//! [`FaultInjector`]: faults a test asks for on the next I/O calls of one
//! partition's files, on either disk backend.
//!
//! Invariants: all counters zero (the default) means no effect at all; each
//! fault fires once per count and decrements it.
//!
//! Must not know: storage formats or partitions (the storage seam,
//! `storage::file::LogFile`, consults it before every call).

use std::cell::Cell;

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
    /// Report this many upcoming `fdatasync` calls as done without syncing:
    /// a lost fsync, visible only on the simulated disk after a crash (used to
    /// show that the crash test catches a missing fsync).
    pub skip_fsyncs: Cell<u32>,
}

impl FaultInjector {
    /// True (and one count used) if `c` is non-zero.
    pub fn take(c: &Cell<u32>) -> bool {
        let n = c.get();
        if n > 0 {
            c.set(n - 1);
        }
        n > 0
    }
}
