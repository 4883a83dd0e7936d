//! Object timestamps: by default wall-clock-free, a fixed base date plus the time elapsed on
//! tokio's clock; or the wall clock, for clusters people look at (the demo, the binary).
//!
//! Under turmoil, tokio's clock is the simulation's, so `LastModified` dates replay exactly.
//! The clock starts at its first reading, not at construction: a cluster may be built outside
//! the runtime that serves it (the simulation builds nodes before starting its hosts), and its
//! base must come from that runtime's clock.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: every mock cluster's clock starts here.
pub const BASE_UNIX_SECONDS: u64 = 1_767_225_600;

/// The mock's notion of "now" for object timestamps.
#[derive(Clone, Debug, Default)]
pub struct ModelClock {
    started: Arc<OnceLock<tokio::time::Instant>>,
    wall: bool,
}

impl ModelClock {
    /// A clock that will read the base date at its first use.
    pub fn start() -> Self {
        ModelClock::default()
    }

    /// A clock that reads the wall clock.
    pub fn wall() -> Self {
        ModelClock {
            wall: true,
            ..ModelClock::default()
        }
    }

    /// The base date plus the tokio time elapsed since the first reading (the wall clock's
    /// time for [`ModelClock::wall`]).
    pub fn now(&self) -> SystemTime {
        if self.wall {
            return SystemTime::now();
        }
        let started = self.started.get_or_init(tokio::time::Instant::now);
        UNIX_EPOCH + Duration::from_secs(BASE_UNIX_SECONDS) + started.elapsed()
    }
}
