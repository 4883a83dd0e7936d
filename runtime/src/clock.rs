//! The runtime's clock, translated for core: tokio's monotonic clock (which turmoil simulates)
//! measured from the moment the proxy started.

use storefront_core::time::Instant;

/// Converts tokio instants into core instants.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: tokio::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Self {
        Clock {
            started: tokio::time::Instant::now(),
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
