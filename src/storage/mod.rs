//! Segmented append-only logs on direct I/O.
//! TODO(helper: storage): segments, sparse offset/time indexes, aligned
//! buffers, recovery, the I/O seam.
