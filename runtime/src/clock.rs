//! The runtime's clocks: tokio's monotonic clock (which turmoil simulates) measured from the
//! moment the proxy started, translated for core; and the wall clock that signatures, their
//! verification and session expiries read. Both are injected here so that the simulation runs
//! on simulated time throughout: its wall clock is a fixed epoch plus simulated time elapsed.

use storefront_core::time::Instant;

/// Converts tokio instants into core instants.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: tokio::time::Instant,
    /// The wall time at `started`, for a simulated wall clock; `None`: the system's.
    wall_epoch: Option<std::time::SystemTime>,
}

impl Clock {
    /// A clock whose epoch is now, reading the system's wall clock.
    pub fn start() -> Self {
        Clock {
            started: tokio::time::Instant::now(),
            wall_epoch: None,
        }
    }

    /// A clock whose epoch is now and whose wall time is `wall_epoch` then, advancing with
    /// tokio's (simulated) time: the same seed replays the same signatures and expiries.
    pub fn simulated(wall_epoch: std::time::SystemTime) -> Self {
        Clock {
            started: tokio::time::Instant::now(),
            wall_epoch: Some(wall_epoch),
        }
    }

    /// The wall time now (for SigV4 signing and verification, and session expiry).
    pub fn wall(&self) -> std::time::SystemTime {
        match self.wall_epoch {
            Some(epoch) => epoch + tokio::time::Instant::now().saturating_duration_since(self.started),
            None => std::time::SystemTime::now(),
        }
    }

    /// Now, as core sees it.
    pub fn now(&self) -> Instant {
        self.at(tokio::time::Instant::now())
    }

    /// A tokio instant, as core sees it.
    pub fn at(&self, instant: tokio::time::Instant) -> Instant {
        Instant::from_since_epoch(instant.saturating_duration_since(self.started))
    }

    /// A core instant, as tokio sees it.
    pub fn to_tokio(&self, instant: Instant) -> tokio::time::Instant {
        self.started + instant.since_epoch()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::Clock;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_wall_clock_advances_with_tokio_time_only() {
        // Proves that the simulation's wall clock is its epoch plus (simulated) tokio time, so a
        // signature or an expiry computed from it replays; the monotonic side agrees with it.
        let epoch = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let clock = Clock::simulated(epoch);
        assert_eq!(clock.wall(), epoch);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.wall(), epoch + Duration::from_secs(90));
        assert_eq!(clock.now().since_epoch(), Duration::from_secs(90));
    }
}
