//! The wire protocol: frames, FlatBuffers messages, record batches, ids and
//! error codes. Pure data: no I/O, no sockets, no files.
//!
//! Invariants: a FlatBuffer is verified exactly once, in `codec::decode_*`,
//! with the limits of `codec::DecodeLimits`; a record batch is validated by
//! `batch::validate` (length, magic, CRC32C, record framing; compressed
//! records decompressed within a bound by `compression`) before any layer
//! stores or serves it.

pub mod batch;
pub mod codec;
pub mod compression;
pub mod error;
pub mod frame;
pub mod ids;
pub mod messages;
pub mod records;

#[allow(clippy::all, unused_imports, dead_code, non_camel_case_types, unsafe_op_in_unsafe_fn, mismatched_lifetime_syntaxes)]
#[rustfmt::skip]
pub mod generated;

pub use error::{ErrorCode, WireError};
pub use ids::*;
