//! Metrics: OpenTelemetry instruments fed from the event seam, exposed in Prometheus's text
//! format on the admin listener (`/metrics`).
//!
//! Every figure comes from an event (an exchange's record, a health change, a probe, a
//! refused retry, a configuration applied or refused, a connection refused or expired): the
//! observer never reads core's state. Names, units and attributes follow the OpenTelemetry
//! semantic conventions where one exists (`http.server.request.duration`,
//! `http.client.request.duration`, `server.address`, `http.request.method`, `rpc.method` for
//! the S3 operation, `error.type`) and carry a `storefront.` prefix where none does.
//!
//! Cardinality is bounded on every attribute: statuses, operations, outcomes, phases, sides
//! and identity sources are closed sets; pools and backends are configured; buckets appear only
//! when `telemetry.metric_buckets` names them (the rest as `_other`); keys, access keys and
//! client addresses never do.

use std::sync::{Arc, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use storefront_core::config::Config;
use storefront_core::event::{Event, ExchangeRecord, HealthChange};
use storefront_core::exchange::ExchangeOutcome;
use storefront_core::health::TransitionReason;
use storefront_core::s3::ErrorCode;

use super::{Expiry, Observer, Refusal, RuntimeEvent};

mod bound;
mod gauges;

use gauges::Latencies;

/// Seconds, for whole requests to S3: from a millisecond (a cached HEAD) to five minutes (a
/// multi-gigabyte object).
const DURATION_BOUNDARIES: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Seconds to the first byte: the same start, a shorter top (a head that takes minutes is a
/// timeout long before).
const TTFB_BOUNDARIES: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bytes, for bodies: 1 KiB to 5 GiB by powers of four.
const SIZE_BOUNDARIES: [f64; 12] = [
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    5_368_709_120.0,
];

/// The value of `storefront.bucket` for buckets nobody asked to see.
const OTHER_BUCKET: &str = "_other";

/// The names the attributes need, from the configuration in force.
#[derive(Debug, Default)]
struct Names {
    pools: Vec<opentelemetry::StringValue>,
    buckets: Vec<String>,
}

/// The proxy's metrics: the instruments, the Prometheus registry they export to, and the
/// names attributes are drawn from.
pub struct Metrics {
    provider: SdkMeterProvider,
    meter: Meter,
    /// Recent first-byte latencies per backend, for the p99 gauges.
    latencies: Arc<Latencies>,
    /// The bound series exchanges and attempts record into.
    series: bound::Series,
    /// Instruments read at collection time, kept alive with their callbacks.
    observed: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
    registry: prometheus::Registry,
    names: RwLock<Names>,
    server_duration: Histogram<f64>,
    active_requests: UpDownCounter<i64>,
    connections_open: UpDownCounter<i64>,
    sts_sessions: Counter<u64>,
    server_ttfb: Histogram<f64>,
    server_request_size: Histogram<u64>,
    server_response_size: Histogram<u64>,
    continued_locally: Counter<u64>,
    client_duration: Histogram<f64>,
    attempts: Counter<u64>,
    retries: Counter<u64>,
    retries_refused: Counter<u64>,
    hedges: Counter<u64>,
    timeouts: Counter<u64>,
    health_transitions: Counter<u64>,
    ejections: Counter<u64>,
    ejections_refused: Counter<u64>,
    connect_duration: Histogram<f64>,
    connect_errors: Counter<u64>,
    panic_mode: UpDownCounter<i64>,
    probes: Counter<u64>,
    decisions: Counter<u64>,
    reloads: Counter<u64>,
    connections_refused: Counter<u64>,
    connections_expired: Counter<u64>,
    slow_readers: Counter<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(String);

impl Metrics {
    /// Instruments exporting to a fresh Prometheus registry, named for `config`.
    pub fn new(config: &Config) -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .map_err(|error| MetricsError(error.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(super::otlp::resource())
            .with_reader(exporter);
        let mut otlp_failures = None;
        if let Some(section) = &config.telemetry.otlp {
            let (reader, failures) = super::otlp::metrics_reader(section).map_err(MetricsError)?;
            builder = builder.with_reader(reader);
            otlp_failures = Some(failures);
        }
        let provider = builder.build();
        let meter = provider.meter("storefront");
        let metrics = Metrics::with_meter(provider.clone(), registry, &meter);
        metrics.configure(config);
        metrics.build_info(&meter);
        metrics.process(&meter);
        if let Some(failures) = otlp_failures {
            let counter = meter
                .u64_observable_counter("storefront.otlp.export_failures")
                .with_description("OTLP exports that failed or timed out (each dropped, never retried or queued).")
                .with_callback(move |observer| {
                    observer.observe(failures.load(std::sync::atomic::Ordering::Relaxed), &[])
                })
                .build();
            metrics
                .observed
                .lock()
                .expect("observed instruments are never poisoned")
                .push(Box::new(counter));
        }
        Ok(metrics)
    }

    /// `storefront.access_log.dropped`: lines `log` dropped because its writer fell behind.
    pub fn watch_access_log(&self, log: Arc<super::access_log::AccessLog>) {
        let counter = self
            .meter
            .u64_observable_counter("storefront.access_log.dropped")
            .with_description("Access log lines dropped because the writer fell behind (never waited for).")
            .with_callback(move |observer| observer.observe(log.dropped(), &[]))
            .build();
        self.observed
            .lock()
            .expect("observed instruments are never poisoned")
            .push(Box::new(counter));
    }

    /// `storefront.trace.spans`: spans built, by what became of them (`result`: `exported`,
    /// `dropped` at a full queue, `failed` with their export).
    pub fn watch_tracer(&self, counts: Arc<super::trace::SpanCounts>) {
        let counter = self
            .meter
            .u64_observable_counter("storefront.trace.spans")
            .with_description(
                "Trace spans built, by result: exported, dropped (export queue full) or failed (export failed).",
            )
            .with_callback(move |observer| {
                for (result, count) in [
                    ("exported", &counts.exported),
                    ("dropped", &counts.dropped),
                    ("failed", &counts.failed),
                ] {
                    observer.observe(
                        count.load(std::sync::atomic::Ordering::Relaxed),
                        &[KeyValue::new("result", result)],
                    );
                }
            })
            .build();
        self.observed
            .lock()
            .expect("observed instruments are never poisoned")
            .push(Box::new(counter));
    }

    fn with_meter(provider: SdkMeterProvider, registry: prometheus::Registry, meter: &Meter) -> Metrics {
        let seconds = |name: &'static str, description: &'static str, boundaries: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(boundaries.to_vec())
                .build()
        };
        let bytes = |name: &'static str, description: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("By")
                .with_description(description)
                .with_boundaries(SIZE_BOUNDARIES.to_vec())
                .build()
        };
        let count = |name: &'static str, description: &'static str| {
            meter.u64_counter(name).with_description(description).build()
        };
        Metrics {
            server_duration: seconds(
                "http.server.request.duration",
                "Client requests, from the head to the last byte answered.",
                &DURATION_BOUNDARIES,
            ),
            connections_open: meter
                .i64_up_down_counter("storefront.server.connections_open")
                .with_unit("{connection}")
                .with_description("Client connections open.")
                .build(),
            sts_sessions: count(
                "storefront.sts.sessions",
                "Token exchanges answered: sessions issued, and refused (by the TokenReview or the request).",
            ),
            active_requests: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("Client requests whose exchange has begun and not yet ended.")
                .build(),
            server_ttfb: seconds(
                "storefront.server.time_to_first_byte",
                "Client requests, from the head to the response head (the backend's answer or the proxy's own).",
                &TTFB_BOUNDARIES,
            ),
            server_request_size: bytes(
                "http.server.request.body.size",
                "Request body bytes taken from clients.",
            ),
            server_response_size: bytes(
                "http.server.response.body.size",
                "Response body bytes handed to clients.",
            ),
            continued_locally: count(
                "storefront.server.continue_local",
                "`100 Continue` answered by the proxy from the head alone (the upload was authorised).",
            ),
            client_duration: seconds(
                "http.client.request.duration",
                "Attempts against backends, from dispatch to their end.",
                &DURATION_BOUNDARIES,
            ),
            attempts: count(
                "storefront.backend.attempts",
                "Attempts against backends by outcome; `storefront.attempt.final` false for those retried elsewhere.",
            ),
            retries: count(
                "storefront.backend.retries",
                "Retries sent (attempts after a request's first).",
            ),
            retries_refused: count(
                "storefront.backend.retries_refused",
                "Retries the retry policy allowed and the pool's retry budget refused.",
            ),
            hedges: count(
                "storefront.backend.hedges",
                "Hedged reads by result: won (the hedge's answer went back), lost (cancelled: the first attempt answered first), failed, refused (by the hedge or retry budget).",
            ),
            timeouts: count("storefront.timeouts", "Attempts that timed out, by phase."),
            health_transitions: count(
                "storefront.backend.health_transitions",
                "Backends becoming available or unavailable, by reason.",
            ),
            ejections: count("storefront.backend.ejections", "Passive ejections of backends."),
            connect_duration: seconds(
                "storefront.backend.connect.duration",
                "Backend connections dialled: TCP, TLS where configured, and the HTTP handshake.",
                &TTFB_BOUNDARIES,
            ),
            connect_errors: count(
                "storefront.backend.connect_errors",
                "Backend dials that failed, by error.type (connect_failed, tls_failed, handshake_failed).",
            ),
            ejections_refused: count(
                "storefront.backend.ejections_refused",
                "Passive ejections a backend was due and the pool's ejection cap (max_ejected_percent) refused.",
            ),
            panic_mode: meter
                .i64_up_down_counter("storefront.pool.panic_mode")
                .with_description("1 while a pool has no available backend and spreads over all of them.")
                .build(),
            probes: count("storefront.backend.probes", "Active probe results."),
            decisions: count(
                "storefront.auth.decisions",
                "Authorisation decisions by identity source and result (`allowed`, `denied` by policy, `refused`: the signature or credential did not verify).",
            ),
            reloads: count("storefront.config.reloads", "Configurations applied or refused."),
            connections_refused: count(
                "storefront.server.connections_refused",
                "Client connections refused at once by a connection limit.",
            ),
            connections_expired: count(
                "storefront.server.connections_expired",
                "Client connections closed for sending no request in time.",
            ),
            slow_readers: count(
                "storefront.server.slow_readers_cut",
                "Client connections cut for not reading their response.",
            ),
            provider,
            meter: meter.clone(),
            latencies: Arc::new(Latencies::default()),
            series: bound::Series::default(),
            observed: std::sync::Mutex::new(Vec::new()),
            registry,
            names: RwLock::new(Names::default()),
        }
    }

    /// `storefront.build.info`: 1, with the version as an attribute.
    fn build_info(&self, meter: &Meter) {
        let info = meter
            .u64_gauge("storefront.build.info")
            .with_description("The running build: always 1, with its version.")
            .build();
        info.record(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]);
    }

    /// Take the names attributes use from `config` (at start and on every reload).
    pub fn configure(&self, config: &Config) {
        let mut names = self.names.write().expect("metric names are never poisoned");
        names.pools = config
            .pools
            .iter()
            .map(|pool| opentelemetry::StringValue::from(pool.name.clone()))
            .collect();
        names.buckets = config.telemetry.metric_buckets.clone();
        // Series bound under the previous names would carry them on.
        self.series.clear();
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        if let Err(error) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn pool(&self, names: &Names, pool: usize) -> KeyValue {
        let value = names
            .pools
            .get(pool)
            .cloned()
            .unwrap_or_else(|| opentelemetry::StringValue::from("_unknown"));
        KeyValue::new("storefront.pool", value)
    }

    fn exchange(&self, record: &ExchangeRecord) {
        self.active_requests.add(-1, &[]);
        let names = self.names.read().expect("metric names are never poisoned");
        let series = self.exchange_series(record, &names);
        if let Some(sts) = series.sts() {
            sts.add(1);
        }
        series.duration.record(record.duration().as_secs_f64());
        if record.status.is_some() {
            let head = record
                .attempts
                .last()
                .and_then(|attempt| attempt.first_byte.map(|first_byte| (attempt, first_byte)));
            let ttfb = match head {
                Some((attempt, first_byte)) => (attempt.started_at - record.started_at) + first_byte,
                None => record.ended_at - record.started_at,
            };
            series.ttfb(self).record(ttfb.as_secs_f64());
        }
        series.request_size.record(record.request_body_bytes);
        series.response_size.record(record.response_body_bytes);
        if record.continued_locally {
            series.continued(self).add(1);
        }
        if let Some(decision) = series.decision() {
            decision.add(1);
        }
        // Each retry counts in the pool it was sent to: one that crossed into a failover pool
        // (rare) counts there, unbound.
        let routed = record.route.as_ref().map(|route| route.pool);
        let mut retries = 0;
        for attempt in record.retried_attempts() {
            if Some(attempt.pool) == routed {
                retries += 1;
            } else {
                self.retries.add(1, &[self.pool(&names, attempt.pool.0)]);
            }
        }
        if retries > 0 {
            series.retries(self).add(retries);
        }
        if let Some(result) = record.hedge {
            let pool = record.route.as_ref().map_or(0, |route| route.pool.0);
            self.hedges.add(
                1,
                &[
                    self.pool(&names, pool),
                    KeyValue::new("storefront.hedge.result", result.name()),
                ],
            );
        }
        for (index, attempt) in record.attempts.iter().enumerate() {
            let series = self.attempt_series(attempt, index + 1 == record.attempts.len(), &names);
            series.attempts.add(1);
            series
                .duration
                .record((attempt.ended_at - attempt.started_at).as_secs_f64());
            if let (Some(latencies), Some(first_byte)) = (&series.latencies, attempt.first_byte) {
                self.latencies.record(latencies, attempt.ended_at, first_byte);
            }
            if let Some(timeouts) = &series.timeouts {
                timeouts.add(1);
            }
        }
    }

    fn health(&self, change: &HealthChange) {
        let names = self.names.read().expect("metric names are never poisoned");
        let reason = match change.reason {
            TransitionReason::Ejected { .. } => "ejected",
            TransitionReason::EjectionEnded => "ejection_ended",
            TransitionReason::ProbesFailed => "probes_failed",
            TransitionReason::ProbesRecovered => "probes_recovered",
        };
        let (host, _) = split_address(&change.address);
        let attributes = [
            KeyValue::new("server.address", host.to_owned()),
            self.pool(&names, change.pool.0),
            KeyValue::new("storefront.health.available", change.available),
            KeyValue::new("storefront.health.reason", reason),
        ];
        self.health_transitions.add(1, &attributes);
        if matches!(change.reason, TransitionReason::Ejected { .. }) {
            self.ejections.add(
                1,
                &[
                    KeyValue::new("server.address", host.to_owned()),
                    self.pool(&names, change.pool.0),
                ],
            );
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// What went wrong, as `error.type` names it: the S3 error code the proxy answered, or the
/// kind of the break; none for an answered request.
pub(super) fn error_type(record: &ExchangeRecord) -> Option<&'static str> {
    match record.outcome {
        ExchangeOutcome::Completed { .. } | ExchangeOutcome::Recovered | ExchangeOutcome::Served { .. } => None,
        ExchangeOutcome::Rejected { code } | ExchangeOutcome::Failed { code } => Some(code.as_str()),
        ExchangeOutcome::Aborted { outcome } => Some(outcome.kind()),
        ExchangeOutcome::ClientGone => Some("client_gone"),
    }
}

/// True for the codes a credential that did not verify gets (a bad or expired signature, an
/// unknown key, a clock too far off, a bad token or credential scope).
pub(super) fn is_credential_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SignatureDoesNotMatch
            | ErrorCode::InvalidAccessKeyId
            | ErrorCode::RequestTimeTooSkewed
            | ErrorCode::AccessDenied
            | ErrorCode::InvalidToken
            | ErrorCode::ExpiredToken
            | ErrorCode::AuthorizationHeaderMalformed
    )
}

/// `host` and `port` of a backend address (`host:port`, `[v6]:port`).
pub(super) fn split_address(address: &str) -> (&str, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().unwrap_or(0),
        ),
        None => (address, 0),
    }
}

impl Observer for Metrics {
    fn core_event(&self, event: &Event) {
        match event {
            Event::Exchange(record) => self.exchange(record),
            Event::Health(change) => self.health(change),
            Event::PanicMode { pool, entered } => {
                let names = self.names.read().expect("metric names are never poisoned");
                self.panic_mode
                    .add(if *entered { 1 } else { -1 }, &[self.pool(&names, pool.0)]);
            }
            Event::Probe {
                pool, address, healthy, ..
            } => {
                let names = self.names.read().expect("metric names are never poisoned");
                let (host, _) = split_address(address);
                self.probes.add(
                    1,
                    &[
                        KeyValue::new("server.address", host.to_owned()),
                        self.pool(&names, pool.0),
                        KeyValue::new(
                            "storefront.probe.result",
                            if *healthy { "healthy" } else { "unhealthy" },
                        ),
                    ],
                );
            }
            Event::RetryRefused { pool, .. } => {
                let names = self.names.read().expect("metric names are never poisoned");
                self.retries_refused.add(1, &[self.pool(&names, pool.0)]);
            }
            Event::EjectionRefused { pool, address, .. } => {
                let names = self.names.read().expect("metric names are never poisoned");
                let (host, _) = split_address(address);
                self.ejections_refused.add(
                    1,
                    &[
                        KeyValue::new("server.address", host.to_owned()),
                        self.pool(&names, pool.0),
                    ],
                );
            }
            Event::ConfigApplied { .. } => self
                .reloads
                .add(1, &[KeyValue::new("storefront.reload.result", "applied")]),
            _ => {}
        }
    }

    fn runtime_event(&self, event: &RuntimeEvent) {
        match event {
            RuntimeEvent::SlowReaderCut => self.slow_readers.add(1, &[]),
            RuntimeEvent::BackendDialled {
                pool,
                address,
                duration,
                error,
            } => {
                let (host, port) = split_address(address);
                let mut attributes = vec![
                    KeyValue::new("server.address", host.to_owned()),
                    KeyValue::new("server.port", i64::from(port)),
                    KeyValue::new("storefront.pool", pool.clone()),
                ];
                if let Some(error) = error {
                    attributes.push(KeyValue::new("error.type", *error));
                    self.connect_errors.add(1, &attributes);
                }
                self.connect_duration.record(duration.as_secs_f64(), &attributes);
            }
            RuntimeEvent::ConnectionRefused(refusal) => self.connections_refused.add(
                1,
                &[KeyValue::new(
                    "storefront.refusal",
                    match refusal {
                        Refusal::AtCapacity => "max_connections",
                        Refusal::PerClient => "max_connections_per_client",
                    },
                )],
            ),
            RuntimeEvent::ConnectionExpired(expiry) => self.connections_expired.add(
                1,
                &[KeyValue::new(
                    "storefront.deadline",
                    match expiry {
                        Expiry::Header => "client_header",
                        Expiry::Idle => "client_idle",
                        Expiry::Handshake => "tls_handshake",
                    },
                )],
            ),
            RuntimeEvent::ConfigRefused => self
                .reloads
                .add(1, &[KeyValue::new("storefront.reload.result", "refused")]),
            RuntimeEvent::RequestStarted => self.active_requests.add(1, &[]),
            RuntimeEvent::ConnectionOpened => self.connections_open.add(1, &[]),
            RuntimeEvent::ConnectionClosed => self.connections_open.add(-1, &[]),
        }
    }
}

/// Metrics shared with the admin listener.
pub type SharedMetrics = Arc<Metrics>;
