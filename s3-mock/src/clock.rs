//! Wall-clock-free timestamps: a fixed base date plus the time elapsed on tokio's clock.
//!
//! Under turmoil, tokio's clock is the simulation's, so `LastModified` dates replay exactly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: every mock cluster's clock starts here.
pub const BASE_UNIX_SECONDS: u64 = 1_767_225_600;

/// The mock's notion of "now" for object timestamps.
#[derive(Clone, Copy, Debug)]
pub struct ModelClock {
    started: tokio::time::Instant,
}

impl ModelClock {
    /// A clock that reads the base date now.
    pub fn start() -> Self {
        ModelClock {
            started: tokio::time::Instant::now(),
        }
    }

    /// The base date plus the tokio time elapsed since `start`.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(BASE_UNIX_SECONDS) + self.started.elapsed()
    }
}
