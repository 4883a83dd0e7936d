//! Time as core sees it: a point on the driver's monotonic clock.
//!
//! Core never reads a clock. The driver (the tokio runtime, or the turmoil simulation, or a
//! property test) owns one, picks an arbitrary epoch, and hands every call an [`Instant`]: the
//! time elapsed since that epoch. Using our own type instead of `std::time::Instant` has two
//! reasons: a test can build any instant out of thin air (`Instant::from_nanos(5)`), and the
//! simulation's clock (tokio's, advanced by turmoil) can never be mixed by accident with the
//! real one, which would break replay.
//!
//! The rule, as in quinn-proto: time never goes backwards across calls into one state machine.
//! Machines `debug_assert!` it and otherwise treat an earlier `now` as equal to the last one.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the driver's monotonic clock, measured from an epoch the driver chose.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    since_epoch: Duration,
}

impl Instant {
    /// The driver's epoch itself.
    pub const EPOCH: Instant = Instant {
        since_epoch: Duration::ZERO,
    };

    /// The instant `since_epoch` after the driver's epoch.
    pub const fn from_since_epoch(since_epoch: Duration) -> Self {
        Instant { since_epoch }
    }

    /// The instant `nanos` nanoseconds after the epoch (handy in tests).
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant {
            since_epoch: Duration::from_nanos(nanos),
        }
    }

    /// The instant `millis` milliseconds after the epoch (handy in tests).
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            since_epoch: Duration::from_millis(millis),
        }
    }

    /// Time elapsed since the epoch.
    pub const fn since_epoch(self) -> Duration {
        self.since_epoch
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is in fact later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.since_epoch.saturating_sub(earlier.since_epoch)
    }

    /// `self + duration`, saturating at the far future instead of overflowing.
    pub fn saturating_add(self, duration: Duration) -> Instant {
        Instant {
            since_epoch: self.since_epoch.saturating_add(duration),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an `earlier` that is later gives zero (see the module's time rule).
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:?}", self.since_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        // Proves that a `now` from the past, or a huge duration, cannot panic a state machine.
        let early = Instant::from_millis(5);
        let late = Instant::from_millis(9);
        assert_eq!(late - early, Duration::from_millis(4));
        assert_eq!(early - late, Duration::ZERO);
        let far = Instant::from_since_epoch(Duration::MAX) + Duration::from_secs(1);
        assert_eq!(far.since_epoch(), Duration::MAX);
    }
}
