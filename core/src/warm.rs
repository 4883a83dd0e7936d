//! Warm connection pools: how many connections each backend should have open before requests
//! need them.
//!
//! A request that finds no idle connection to its backend dials one, and pays the dial (and,
//! with TLS, the handshake) in its time to first byte; a burst of such requests is a storm of
//! dials at a node. A pool may keep a minimum of idle connections per backend (`min_idle`), and
//! grow its connections ahead of a rising load (`warm_ahead`): from the pool's arrival rate
//! over the last half second, extrapolated one step along its trend from the second and a half
//! before, times the pool's typical latency (Little's law: the connections busy at once), over
//! its available backends, with headroom. The runtime opens what is missing at a bounded rate
//! per backend and keeps it idle; core only decides how many.

use std::time::Duration;

use crate::config::ConnectionsSection;
use crate::time::Instant;

/// One arrival bucket's length.
const BUCKET: Duration = Duration::from_millis(100);
/// Buckets kept: two seconds.
const BUCKETS: usize = 20;
/// Buckets of the recent rate (the last half second, the current bucket included).
const RECENT: usize = 5;
/// Connections per expected concurrent request: room for the bursts within a bucket.
const HEADROOM: f64 = 2.0;

/// How a pool warms its backends' connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WarmParameters {
    /// Idle connections kept per available backend.
    pub min_idle: usize,
    /// Grow ahead of the arrival rate's trend.
    pub ahead: bool,
    /// At most this many per backend (its connection limit).
    pub max: usize,
}

impl WarmParameters {
    /// The parameters of a pool's `[pools.connections]`.
    pub fn from_section(section: &ConnectionsSection) -> Self {
        WarmParameters {
            min_idle: section.min_idle,
            ahead: section.warm_ahead,
            max: section.max_per_backend,
        }
    }

    /// True when the pool warms at all.
    pub fn enabled(&self) -> bool {
        self.min_idle > 0 || self.ahead
    }
}

/// A pool's arrivals per 100-ms bucket over the last two seconds.
#[derive(Clone, Debug, Default)]
pub struct Arrivals {
    counts: [u32; BUCKETS],
    /// The bucket-length period of each slot.
    periods: [u64; BUCKETS],
}

impl Arrivals {
    /// Count one request arriving at `now`.
    pub fn record(&mut self, now: Instant) {
        let period = period(now);
        let slot = (period % BUCKETS as u64) as usize;
        if self.periods[slot] != period {
            self.periods[slot] = period;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Requests per second over the last half second, and over the second and a half before.
    pub fn rates(&self, now: Instant) -> (f64, f64) {
        let current = period(now);
        let count = |back: std::ops::Range<u64>| -> u64 {
            back.filter_map(|age| current.checked_sub(age))
                .map(|period| {
                    let slot = (period % BUCKETS as u64) as usize;
                    if self.periods[slot] == period {
                        u64::from(self.counts[slot])
                    } else {
                        0
                    }
                })
                .sum()
        };
        let bucket = BUCKET.as_secs_f64();
        let recent = count(0..RECENT as u64) as f64 / (RECENT as f64 * bucket);
        let before = count(RECENT as u64..BUCKETS as u64) as f64 / ((BUCKETS - RECENT) as f64 * bucket);
        (recent, before)
    }
}

fn period(now: Instant) -> u64 {
    let nanos = u64::try_from(now.since_epoch().as_nanos()).unwrap_or(u64::MAX);
    nanos / BUCKET.as_nanos() as u64
}

/// Connections each of `backends` available backends should have open: at least `min_idle`;
/// ahead of the load, the concurrency the extrapolated rate brings at `latency` each, with
/// headroom; never more than the backend's limit.
pub fn wanted(parameters: &WarmParameters, rates: (f64, f64), latency: Duration, backends: usize) -> usize {
    if backends == 0 {
        return 0;
    }
    let ahead = if parameters.ahead {
        let (recent, before) = rates;
        let forecast = recent + (recent - before).max(0.0);
        (forecast * latency.as_secs_f64() * HEADROOM / backends as f64).ceil() as usize
    } else {
        0
    };
    parameters.min_idle.max(ahead).min(parameters.max)
}

/// A backend's connections as core wants them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmTarget {
    /// Its address.
    pub address: String,
    /// Connections it should have open (in use and idle).
    pub connections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ahead(min_idle: usize) -> WarmParameters {
        WarmParameters {
            min_idle,
            ahead: true,
            max: 128,
        }
    }

    #[test]
    fn the_rate_is_counted_per_window_and_forgets_what_is_older() {
        // Proves the arrival counts: 50 requests in the last half second are 100 per second,
        // none before; two seconds later they are gone.
        let mut arrivals = Arrivals::default();
        for index in 0..50 {
            arrivals.record(Instant::from_millis(10_000 + index * 9));
        }
        let (recent, before) = arrivals.rates(Instant::from_millis(10_450));
        assert!((recent - 100.0).abs() < 1e-9, "{recent}");
        assert_eq!(before, 0.0);
        assert_eq!(arrivals.rates(Instant::from_millis(13_000)), (0.0, 0.0));
    }

    #[test]
    fn a_pool_wants_warm_connections_for_its_available_backends_as_its_requests_arrive() {
        // Proves the pool's decision: nothing without warming; with `warm_ahead`, requests
        // dispatched through the pool raise what each backend should have open, and
        // `min_idle` is the floor once they stop.
        use crate::config::Config;
        use crate::state::ProxyState;
        let state = |connections: &str| {
            let text = format!(
                "[health.active]\nenabled = false\n[[pools]]\nname = \"p\"\nbackends = [\"10.0.0.1:9000\", \"10.0.0.2:9000\"]\n{connections}\n"
            );
            let config = Config::from_toml(&text, "warm.toml").expect("valid");
            let state = ProxyState::from_config(&config, Instant::EPOCH, 1).expect("state");
            state.set_authorizer(Box::new(crate::auth::TrustAll));
            state
        };
        let cold = state("");
        assert!(cold.pools()[0].lock().warm_targets(Instant::from_millis(1)).is_empty());
        let warm = state("[pools.connections]\nmin_idle = 1\nwarm_ahead = true\n");
        let head = http::Request::get("/b/k").body(()).expect("request").into_parts().0;
        let caller = crate::auth::Caller::anonymous(None);
        // 400 requests over 400 ms, counted over the last half second: 800 per second, rising
        // from none, so 1,600 forecast; at the default latency (30 ms) that is 48 in flight,
        // 96 with headroom, 48 per backend.
        for index in 0..400u64 {
            let now = Instant::from_millis(1_000 + index);
            let (mut exchange, _) = crate::exchange::Exchange::start(&warm, index, now, &head, &caller);
            exchange.handle_client_gone(now);
        }
        let targets = warm.pools()[0].lock().warm_targets(Instant::from_millis(1_400));
        let wanted: Vec<usize> = targets.iter().map(|target| target.connections).collect();
        assert_eq!(wanted, vec![48, 48]);
        let later = warm.pools()[0].lock().warm_targets(Instant::from_millis(5_000));
        assert!(
            later.iter().all(|target| target.connections == 1),
            "quiet again: the floor"
        );
    }

    #[test]
    fn a_rising_load_is_warmed_for_ahead_of_its_trend() {
        // Proves the forecast: a rate doubling from 100 to 200 per second is warmed for 300
        // per second; at 10 ms each over 2 backends, with headroom 2, that is 3 connections
        // each (steady at 200 per second: 2; falling: no more than the recent rate needs).
        let latency = Duration::from_millis(10);
        assert_eq!(wanted(&ahead(0), (200.0, 100.0), latency, 2), 3);
        assert_eq!(wanted(&ahead(0), (200.0, 200.0), latency, 2), 2);
        assert_eq!(wanted(&ahead(0), (100.0, 400.0), latency, 2), 1);
        assert_eq!(wanted(&ahead(4), (100.0, 100.0), latency, 2), 4, "the minimum");
        let capped = WarmParameters { max: 8, ..ahead(0) };
        assert_eq!(wanted(&capped, (100_000.0, 0.0), latency, 2), 8, "the limit");
        let floor_only = WarmParameters {
            min_idle: 2,
            ahead: false,
            max: 128,
        };
        assert_eq!(wanted(&floor_only, (100_000.0, 0.0), latency, 2), 2);
        assert_eq!(wanted(&ahead(2), (1.0, 0.0), latency, 0), 0, "no backend");
    }
}
