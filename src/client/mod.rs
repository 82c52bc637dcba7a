//! Async Rust client (runs on a glommio executor): Producer, Consumer, Admin.
//! TODO(helper: protocol+client).
