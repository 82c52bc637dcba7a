//! The process's allocator policy: glibc malloc with a fixed mmap threshold.
//!
//! glibc raises its mmap threshold each time a mapped chunk is freed, up to
//! 32 MiB, so after one large frame (a hostile client may send
//! `max_frame_bytes` frames) every buffer below that size comes from the
//! heap arenas, where a mix of large and small request buffers fragments
//! them: `tests/flood.rs` saw resident memory grow by 50-110 MiB per flood
//! round without bound (95, 146, 233, 281, 296, 408 MiB over six rounds).
//! Fixing the threshold stops the adjustment (and keeps the trim threshold
//! at its default, so freed heap tops go back to the kernel): buffers up to
//! [`MMAP_THRESHOLD_BYTES`] stay in the arenas and are reused without page
//! faults, and larger ones are mapped and given back whole when freed. With
//! it the same rounds stay at 30-37 MiB. The value sits above the largest
//! buffer the hot paths allocate per request: a fetch's disk read
//! (`partition::fetch::MAX_FETCH_READ_BYTES`, 4 MiB, plus alignment) and
//! 1 MiB batches with their frame. At 4 MiB every 4 MiB catch-up read was
//! mapped, faulted in and unmapped: 640 MB/s at 0.95 broker cores against
//! 960 MB/s at 0.63 with 8 MiB. A fixed 32 MiB let the flood grow again
//! (118 to 248 MiB over five rounds)
//! (docs/decisions/0016-malloc-mmap-threshold.md).
//!
//! Applied by `corelog serve` only, before any thread is spawned: client
//! commands and the load generator stand for client applications and keep
//! glibc's defaults (a consumer's 8+ MiB fetch responses would otherwise be
//! mapped and faulted in one by one). An explicit `MALLOC_MMAP_THRESHOLD_`
//! in the environment wins (a `GLIBC_TUNABLES` threshold does not).

/// Allocations at or above this size are mapped by glibc, in bytes.
pub const MMAP_THRESHOLD_BYTES: usize = 8 << 20;

// A fetch's read buffer (plus a page of alignment each side) stays in the
// arenas.
const _: () = assert!(crate::partition::fetch::MAX_FETCH_READ_BYTES + 8192 < MMAP_THRESHOLD_BYTES);

/// Applies the policy (a no-op where the C library is not glibc).
///
/// # Safety
/// No other thread may exist yet: glibc's `mallopt` must not race with
/// allocations on other threads.
pub unsafe fn apply() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return;
        }
        // SAFETY: mallopt only sets allocator parameters; the caller
        // guarantees that no other thread exists yet.
        let ok =
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) };
        debug_assert_eq!(ok, 1, "glibc refused M_MMAP_THRESHOLD");
    }
}
