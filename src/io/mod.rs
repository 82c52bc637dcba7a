//! The I/O seam: everything the storage, partition and registry layers do
//! to a disk, and the time they decide by, goes through this module.
//!
//! Owns: [`disk::Disk`] (real file system or [`sim::SimDisk`]), its open
//! direct-I/O file [`disk::DiskFile`], [`clock::Clock`] (real or simulated),
//! the test [`faults::FaultInjector`], and [`Io`], the bundle a shard hands
//! down to each partition it opens.
//!
//! Invariants: the layers above never call `std::fs`, glommio's file API or
//! the system clock for behaviour (only for measurements and logs); the real
//! backend adds no locks or allocations on the data path (one `match`).
//!
//! Must not know: anything above it (storage formats, partitions, shards).
//! It is the lowest layer next to `config` and `protocol`.

pub mod clock;
pub mod disk;
pub mod faults;
pub mod sim;

use std::rc::Rc;

pub use clock::Clock;
pub use disk::{DirEntry, Disk, DiskFile};
pub use faults::FaultInjector;
pub use sim::SimDisk;

/// What one partition's storage does I/O and reads time through: the
/// shard's disk and clock, and a fault injector of its own (tests).
#[derive(Clone, Debug, Default)]
pub struct Io {
    pub disk: Disk,
    pub clock: Clock,
    pub faults: Rc<FaultInjector>,
}

impl Io {
    /// The real disk and clock, no faults.
    pub fn real() -> Io {
        Io::default()
    }

    /// `disk` and `clock` with a fresh fault injector.
    pub fn new(disk: Disk, clock: Clock) -> Io {
        Io {
            disk,
            clock,
            faults: Rc::default(),
        }
    }
}
