//! The metrics read at collection time rather than recorded per event: each backend's load,
//! health and share of its pool against its fair share, the pools' balance, each backend's
//! p99 against its pool's median, and the process's own figures.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::{Metrics, split_address};

impl Metrics {
    /// The gauges read from the backends at collection time (`views`: the current
    /// configuration's backends, as `/admin/backends` shows them): in-flight attempts, the
    /// latency estimate, availability, ejection and drain, each backend's share of its pool's
    /// attempts over the last minute next to its fair share (its weight's), and per pool the
    /// largest share against the fair one (`storefront.pool.imbalance`: 1 is perfect balance,
    /// 1.3 a node taking 30 % more than its share) and their coefficient of variation.
    pub fn watch_backends(&self, views: Arc<dyn Fn() -> Vec<crate::admin::BackendView> + Send + Sync>) {
        let window = Arc::new(ShareWindow::default());
        let mut observed = Vec::<Box<dyn std::any::Any + Send + Sync>>::new();
        let each = |name: &'static str,
                    unit: &'static str,
                    description: &'static str,
                    value: fn(&crate::admin::BackendView) -> f64| {
            let views = views.clone();
            self.meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    for view in views() {
                        observer.observe(value(&view), &backend_attributes(&view));
                    }
                })
                .build()
        };
        observed.push(Box::new(each(
            "storefront.backend.in_flight",
            "{attempt}",
            "Attempts in flight at the backend.",
            |view| f64::from(view.in_flight),
        )));
        observed.push(Box::new(each(
            "storefront.backend.latency_score",
            "s",
            "The balancer's peak-EWMA latency estimate of the backend.",
            |view| view.latency_ewma_ms / 1000.0,
        )));
        observed.push(Box::new(each(
            "storefront.backend.available",
            "1",
            "1 while the backend takes new requests (healthy, not ejected, not draining).",
            |view| f64::from(u8::from(view.healthy && !view.ejected && !view.draining)),
        )));
        observed.push(Box::new(each(
            "storefront.backend.ejected",
            "1",
            "1 while the backend is passively ejected.",
            |view| f64::from(u8::from(view.ejected)),
        )));
        observed.push(Box::new(each(
            "storefront.backend.draining",
            "1",
            "1 while the backend is drained by an operator.",
            |view| f64::from(u8::from(view.draining)),
        )));
        let connections = {
            let views = views.clone();
            self.meter
                .u64_observable_gauge("storefront.backend.connections")
                .with_unit("{connection}")
                .with_description("The proxy's connections to the backend, by state: in use (leased or being opened) and idle (pooled).")
                .with_callback(move |observer| {
                    for view in views() {
                        let [address, port, pool] = backend_attributes(&view);
                        for (state, count) in [("in_use", view.connections.in_use), ("idle", view.connections.idle)] {
                            observer.observe(
                                count as u64,
                                &[
                                    address.clone(),
                                    port.clone(),
                                    pool.clone(),
                                    KeyValue::new("storefront.connection.state", state),
                                ],
                            );
                        }
                    }
                })
                .build()
        };
        observed.push(Box::new(connections));
        observed.push(Box::new(each(
            "storefront.backend.connections_waiting",
            "{attempt}",
            "Attempts waiting for a connection slot (the backend holds max_per_backend).",
            |view| view.connections.waiting as f64,
        )));
        let shares = {
            let (views, window) = (views.clone(), window.clone());
            self.meter
                .f64_observable_gauge("storefront.backend.share")
                .with_unit("1")
                .with_description("The backend's share of its pool's attempts over the last minute.")
                .with_callback(move |observer| {
                    for (view, share) in window.shares(&views()) {
                        observer.observe(share.actual, &backend_attributes(&view));
                    }
                })
                .build()
        };
        observed.push(Box::new(shares));
        let fair = {
            let (views, window) = (views.clone(), window.clone());
            self.meter
                .f64_observable_gauge("storefront.backend.fair_share")
                .with_unit("1")
                .with_description("The share the backend's weight entitles it to among its pool's available backends.")
                .with_callback(move |observer| {
                    for (view, share) in window.shares(&views()) {
                        observer.observe(share.fair, &backend_attributes(&view));
                    }
                })
                .build()
        };
        observed.push(Box::new(fair));
        let pool_gauge = |name: &'static str, description: &'static str, statistic: fn(&PoolShares) -> f64| {
            let (views, window) = (views.clone(), window.clone());
            self.meter
                .f64_observable_gauge(name)
                .with_unit("1")
                .with_description(description)
                .with_callback(move |observer| {
                    for (pool, shares) in pool_shares(&window.shares(&views())) {
                        observer.observe(statistic(&shares), &[KeyValue::new("storefront.pool", pool)]);
                    }
                })
                .build()
        };
        observed.push(Box::new(pool_gauge(
            "storefront.pool.imbalance",
            "The largest backend share against its fair share over the last minute (1: balanced).",
            |shares| shares.max_ratio,
        )));
        observed.push(Box::new(pool_gauge(
            "storefront.pool.share_cv",
            "Coefficient of variation of the backends' share-to-fair-share ratios over the last minute.",
            |shares| shares.cv,
        )));
        for (name, description, ratio) in [
            (
                "storefront.backend.latency_p99",
                "The backend's p99 time to first byte over its last 512 responses within a minute.",
                false,
            ),
            (
                "storefront.backend.latency_p99_over_pool_median",
                "The backend's p99 time to first byte over the median of its pool's (a slow node stands out above 1).",
                true,
            ),
        ] {
            let latencies = self.latencies.clone();
            let gauge = self
                .meter
                .f64_observable_gauge(name)
                .with_unit(if ratio { "1" } else { "s" })
                .with_description(description)
                .with_callback(move |observer| {
                    for (pool, address, p99, median) in latencies.p99s() {
                        let value = if ratio {
                            if median > 0.0 { p99 / median } else { 0.0 }
                        } else {
                            p99
                        };
                        let (host, port) = split_address(&address);
                        observer.observe(
                            value,
                            &[
                                KeyValue::new("server.address", host.to_owned()),
                                KeyValue::new("server.port", i64::from(port)),
                                KeyValue::new("storefront.pool", pool.clone()),
                            ],
                        );
                    }
                })
                .build();
            observed.push(Box::new(gauge));
        }
        self.observed
            .lock()
            .expect("observed instruments are never poisoned")
            .extend(observed);
    }

    /// The process's CPU time, resident memory and open file descriptors (OpenTelemetry's
    /// `process.*` names), read from `/proc/self` at collection; absent where it is not Linux.
    pub(super) fn process(&self, meter: &Meter) {
        let cpu = meter
            .f64_observable_counter("process.cpu.time")
            .with_unit("s")
            .with_description("CPU time the process used, user and system.")
            .with_callback(|observer| {
                if let Some((user, system)) = process_cpu() {
                    observer.observe(user, &[KeyValue::new("cpu.mode", "user")]);
                    observer.observe(system, &[KeyValue::new("cpu.mode", "system")]);
                }
            })
            .build();
        let memory = meter
            .u64_observable_gauge("process.memory.usage")
            .with_unit("By")
            .with_description("Resident memory of the process.")
            .with_callback(|observer| {
                if let Some(bytes) = process_rss() {
                    observer.observe(bytes, &[]);
                }
            })
            .build();
        let descriptors = meter
            .u64_observable_gauge("process.open_file_descriptors")
            .with_unit("{file_descriptor}")
            .with_description("File descriptors the process holds open.")
            .with_callback(|observer| {
                if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
                    observer.observe(entries.count() as u64, &[]);
                }
            })
            .build();
        let mut observed = self.observed.lock().expect("observed instruments are never poisoned");
        observed.push(Box::new(cpu));
        observed.push(Box::new(memory));
        observed.push(Box::new(descriptors));
    }
}

/// User and system CPU seconds of this process, from `/proc/self/stat` (in the kernel's
/// USER_HZ ticks, 100 a second on Linux).
fn process_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    Some((ticks(14)? / 100.0, ticks(15)? / 100.0))
}

/// Resident memory of this process in bytes, from `/proc/self/status`.
fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples a backend keeps for its p99.
const LATENCY_SAMPLES: usize = 512;

/// Recent first-byte latencies per backend (pool, address): the last [`LATENCY_SAMPLES`]
/// within [`SHARE_WINDOW`] of the newest, on core's clock. Each backend's samples sit behind a
/// lock of their own, found once per attempt series (see `bound`), so recording one takes no
/// lock another backend's attempts need and allocates nothing.
#[derive(Debug, Default)]
pub(super) struct Latencies {
    backends: std::sync::Mutex<Vec<Arc<BackendLatencies>>>,
    /// The newest sample's instant, in nanoseconds of core's clock.
    newest: std::sync::atomic::AtomicU64,
}

/// One backend's recent first-byte latencies.
#[derive(Debug)]
pub(super) struct BackendLatencies {
    pool: String,
    address: String,
    samples: std::sync::Mutex<std::collections::VecDeque<(storefront_core::time::Instant, f64)>>,
}

impl Latencies {
    /// The samples of `address` in `pool`, registered on first use.
    pub(super) fn backend(&self, pool: &str, address: &str) -> Arc<BackendLatencies> {
        let mut backends = self.backends.lock().expect("latency samples are never poisoned");
        if let Some(found) = backends
            .iter()
            .find(|backend| backend.pool == pool && backend.address == address)
        {
            return found.clone();
        }
        let backend = Arc::new(BackendLatencies {
            pool: pool.to_owned(),
            address: address.to_owned(),
            samples: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(LATENCY_SAMPLES)),
        });
        backends.push(backend.clone());
        backend
    }

    /// `backend` answered its first byte after `latency`, at `at`.
    pub(super) fn record(
        &self,
        backend: &BackendLatencies,
        at: storefront_core::time::Instant,
        latency: std::time::Duration,
    ) {
        let nanos = u64::try_from(at.since_epoch().as_nanos()).unwrap_or(u64::MAX);
        self.newest.fetch_max(nanos, std::sync::atomic::Ordering::Relaxed);
        let mut samples = backend.samples.lock().expect("latency samples are never poisoned");
        if samples.len() == LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((at, latency.as_secs_f64()));
    }

    /// Per backend: its pool, address, p99 and the median of its pool's samples.
    fn p99s(&self) -> Vec<(String, String, f64, f64)> {
        let newest = storefront_core::time::Instant::from_nanos(self.newest.load(std::sync::atomic::Ordering::Relaxed));
        let backends = self
            .backends
            .lock()
            .expect("latency samples are never poisoned")
            .clone();
        let fresh: Vec<(&BackendLatencies, Vec<f64>)> = backends
            .iter()
            .map(|backend| {
                let samples = backend.samples.lock().expect("latency samples are never poisoned");
                let fresh = samples
                    .iter()
                    .filter(|(at, _)| newest - *at <= SHARE_WINDOW)
                    .map(|(_, latency)| *latency)
                    .collect();
                (backend.as_ref(), fresh)
            })
            .collect();
        let mut pools: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
        for (backend, samples) in &fresh {
            pools.entry(backend.pool.as_str()).or_default().extend(samples);
        }
        let medians: std::collections::BTreeMap<&str, f64> = pools
            .into_iter()
            .map(|(pool, mut samples)| (pool, quantile(&mut samples, 0.5)))
            .collect();
        fresh
            .into_iter()
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(backend, mut samples)| {
                let p99 = quantile(&mut samples, 0.99);
                (
                    backend.pool.clone(),
                    backend.address.clone(),
                    p99,
                    medians.get(backend.pool.as_str()).copied().unwrap_or(0.0),
                )
            })
            .collect()
    }
}

impl Metrics {
    /// The pod watch's gauges, read at collection from `stats` (none while pods are not an
    /// identity source): the table's size, the watch's restarts and errors.
    pub fn watch_pods(&self, stats: Arc<dyn Fn() -> Option<crate::auth::pods::PodWatchStats> + Send + Sync>) {
        let mut observed = Vec::<Box<dyn std::any::Any + Send + Sync>>::new();
        let read = stats.clone();
        observed.push(Box::new(
            self.meter
                .u64_observable_gauge("storefront.pods.table_size")
                .with_unit("{pod}")
                .with_description("Pods in the table that names callers by source address.")
                .with_callback(move |observer| {
                    if let Some(stats) = read() {
                        observer.observe(stats.pods as u64, &[]);
                    }
                })
                .build(),
        ));
        let read = stats.clone();
        observed.push(Box::new(
            self.meter
                .u64_observable_counter("storefront.pods.watch_restarts")
                .with_description("Times the pod watch started over with a full listing (after its first).")
                .with_callback(move |observer| {
                    if let Some(stats) = read() {
                        observer.observe(stats.restarts, &[]);
                    }
                })
                .build(),
        ));
        observed.push(Box::new(
            self.meter
                .u64_observable_counter("storefront.pods.watch_errors")
                .with_description("Errors the pod watch met, each retried after a back-off.")
                .with_callback(move |observer| {
                    if let Some(stats) = stats() {
                        observer.observe(stats.errors, &[]);
                    }
                })
                .build(),
        ));
        self.observed
            .lock()
            .expect("observed instruments are never poisoned")
            .extend(observed);
    }
}

/// The `q` quantile of `samples` (nearest rank); 0 for none.
fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// The attributes of a backend's gauges.
fn backend_attributes(view: &crate::admin::BackendView) -> [KeyValue; 3] {
    let (host, port) = split_address(&view.address);
    [
        KeyValue::new("server.address", host.to_owned()),
        KeyValue::new("server.port", i64::from(port)),
        KeyValue::new("storefront.pool", view.pool.clone()),
    ]
}

/// How long the share gauges look back.
const SHARE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Attempt totals of every backend, sampled at collection times over [`SHARE_WINDOW`]: a
/// backend's share is its attempts since the oldest sample against its pool's.
#[derive(Default)]
struct ShareWindow {
    samples: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, std::collections::HashMap<String, u64>)>>,
}

/// A backend's share of its pool's attempts, and the share its weight entitles it to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share {
    actual: f64,
    fair: f64,
}

impl ShareWindow {
    /// Each backend's share over the window (sampling now, at most once a second).
    fn shares(&self, views: &[crate::admin::BackendView]) -> Vec<(crate::admin::BackendView, Share)> {
        let now = std::time::Instant::now();
        let totals: std::collections::HashMap<String, u64> = views
            .iter()
            .map(|view| (view.id.clone(), view.requests_total))
            .collect();
        let baseline = {
            let mut samples = self.samples.lock().expect("share samples are never poisoned");
            if samples
                .back()
                .is_none_or(|(at, _)| now.duration_since(*at) >= std::time::Duration::from_secs(1))
            {
                samples.push_back((now, totals.clone()));
            }
            while samples.len() > 1
                && samples
                    .get(1)
                    .is_some_and(|(at, _)| now.duration_since(*at) >= SHARE_WINDOW)
            {
                samples.pop_front();
            }
            // With one sample only, the window is everything since the backends joined.
            if samples.len() > 1 {
                samples.front().map(|(_, totals)| totals.clone()).unwrap_or_default()
            } else {
                std::collections::HashMap::new()
            }
        };
        let served = |view: &crate::admin::BackendView| {
            view.requests_total
                .saturating_sub(baseline.get(&view.id).copied().unwrap_or(0))
        };
        let eligible = |view: &crate::admin::BackendView| view.healthy && !view.ejected && !view.draining;
        views
            .iter()
            .map(|view| {
                let pool = views.iter().filter(|other| other.pool == view.pool);
                let (pool_served, pool_weight) = pool.fold((0u64, 0u64), |(served_sum, weight_sum), other| {
                    (
                        served_sum + served(other),
                        weight_sum + if eligible(other) { u64::from(other.weight) } else { 0 },
                    )
                });
                let actual = if pool_served == 0 {
                    0.0
                } else {
                    served(view) as f64 / pool_served as f64
                };
                let fair = if pool_weight == 0 || !eligible(view) {
                    0.0
                } else {
                    f64::from(view.weight) / pool_weight as f64
                };
                (view.clone(), Share { actual, fair })
            })
            .collect()
    }
}

/// A pool's balance over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PoolShares {
    /// The largest share-to-fair-share ratio among backends entitled to a share.
    max_ratio: f64,
    /// The coefficient of variation of those ratios.
    cv: f64,
}

/// Per pool, from its backends' shares; pools that served nothing in the window are left out.
fn pool_shares(shares: &[(crate::admin::BackendView, Share)]) -> Vec<(String, PoolShares)> {
    let mut pools: Vec<String> = shares.iter().map(|(view, _)| view.pool.clone()).collect();
    pools.dedup();
    pools
        .into_iter()
        .filter_map(|pool| {
            let ratios: Vec<f64> = shares
                .iter()
                .filter(|(view, share)| view.pool == pool && share.fair > 0.0)
                .map(|(_, share)| share.actual / share.fair)
                .collect();
            let served: f64 = shares
                .iter()
                .filter(|(view, _)| view.pool == pool)
                .map(|(_, share)| share.actual)
                .sum();
            if ratios.is_empty() || served == 0.0 {
                return None;
            }
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            let variance = ratios.iter().map(|ratio| (ratio - mean).powi(2)).sum::<f64>() / ratios.len() as f64;
            let max_ratio = ratios.iter().copied().fold(0.0, f64::max);
            let cv = if mean > 0.0 { variance.sqrt() / mean } else { 0.0 };
            Some((pool, PoolShares { max_ratio, cv }))
        })
        .collect()
}
