//! Traces: a server span per request and a client span per attempt, built from the exchange
//! record and exported over OTLP/HTTP; the W3C trace context taken from callers and passed on
//! to backends.
//!
//! At a request's start the runtime asks [`Tracer::begin`] for the exchange's trace context:
//! the caller's `traceparent` read by opentelemetry's propagator (a malformed one is ignored,
//! as the W3C specification asks), fresh ids from the SDK's generator, and the SDK's
//! parent-based sampler deciding (the caller's `sampled` flag when it sent one, the configured
//! ratio otherwise). Core carries the context to the record. Each attempt's `traceparent`
//! names that attempt's client span ([`TraceContext::attempt_span_id`]) and is written into the
//! backend's head **before it is re-signed**, so the backend's signature check covers it and
//! passes; the caller's own `traceparent` is replaced, its `tracestate` passed on.
//!
//! Spans are built after the fact, when the record arrives (its instants give every start and
//! end, its attempts every client span), only for sampled exchanges, and queued to an export
//! task through a bounded channel: a full queue drops (and counts) spans rather than wait, and
//! the export task sends batches with the same HTTP client as the metrics exporter, each
//! bounded by `telemetry.otlp.timeout`, a failed batch dropped and counted.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _, SpanData,
};
use opentelemetry_sdk::trace::{SpanEvents, SpanExporter as _, SpanLinks};
use storefront_core::config::{Config, OtlpSection, TracesSection};
use storefront_core::event::{AttemptRecord, Event, ExchangeRecord};
use storefront_core::exchange::ExchangeOutcome;
use storefront_core::outcome::AttemptOutcome;
use storefront_core::time::Instant;
use storefront_core::trace::TraceContext;
use tokio::sync::mpsc::error::TrySendError;

use super::Observer;

/// Spans sent in one export at most.
const BATCH_MAX: usize = 512;
/// How long a span waits for others to share its export.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// What became of the spans built: exported, dropped at the queue, or lost with a failed
/// export.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the export queue was full.
    pub dropped: AtomicU64,
    /// Spans of exports that failed or timed out.
    pub failed: AtomicU64,
}

/// The tracer of one proxy.
pub struct Tracer {
    sampler: Sampler,
    ids: RandomIdGenerator,
    propagator: opentelemetry_sdk::propagation::TraceContextPropagator,
    keys: bool,
    queue: tokio::sync::mpsc::Sender<SpanData>,
    scope: InstrumentationScope,
    pools: RwLock<Vec<opentelemetry::StringValue>>,
    counts: Arc<SpanCounts>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampler", &self.sampler)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// The tracer `config` asks for (`[telemetry.traces]`, exporting to `[telemetry.otlp]`),
    /// its export task started on the current tokio runtime; `None` when traces are off.
    pub fn start(config: &Config) -> Result<Option<Tracer>, String> {
        let (Some(section), Some(otlp)) = (&config.telemetry.traces, &config.telemetry.otlp) else {
            return Ok(None);
        };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "telemetry.traces: no tokio runtime to export from".to_owned())?;
        let counts = Arc::new(SpanCounts::default());
        let exporter = exporter(otlp, handle.clone())?;
        let (queue, spans) = tokio::sync::mpsc::channel(section.queue.max(1));
        handle.spawn(export(exporter, spans, counts.clone()));
        let tracer = Tracer::new(section, queue, counts);
        tracer.configure(config);
        Ok(Some(tracer))
    }

    fn new(section: &TracesSection, queue: tokio::sync::mpsc::Sender<SpanData>, counts: Arc<SpanCounts>) -> Tracer {
        Tracer {
            sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(section.sample_ratio))),
            ids: RandomIdGenerator::default(),
            propagator: opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            keys: section.keys,
            queue,
            scope: InstrumentationScope::builder("storefront")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            pools: RwLock::new(Vec::new()),
            counts,
        }
    }

    /// Take the pool names spans carry from `config` (at start and on every reload).
    pub fn configure(&self, config: &Config) {
        *self.pools.write().expect("pool names are never poisoned") = config
            .pools
            .iter()
            .map(|pool| opentelemetry::StringValue::from(pool.name.clone()))
            .collect();
    }

    /// What became of the spans so far.
    pub fn counts(&self) -> &Arc<SpanCounts> {
        &self.counts
    }

    /// The trace context of a request with these `headers`: under the caller's trace when it
    /// sent a valid `traceparent`, a new trace otherwise; sampled as the sampler decides.
    pub fn begin(&self, headers: &http::HeaderMap) -> TraceContext {
        let parent = self.propagator.extract(&opentelemetry_http::HeaderExtractor(headers));
        let remote = parent.span().span_context().clone();
        let (trace_id, parent_span_id) = if remote.is_valid() {
            (remote.trace_id(), Some(u64::from_be_bytes(remote.span_id().to_bytes())))
        } else {
            (self.ids.new_trace_id(), None)
        };
        let decision = self
            .sampler
            .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[])
            .decision;
        TraceContext {
            trace_id: u128::from_be_bytes(trace_id.to_bytes()),
            span_id: u64::from_be_bytes(self.ids.new_span_id().to_bytes()),
            parent_span_id,
            sampled: decision == SamplingDecision::RecordAndSample,
            state: remote.trace_state().header(),
        }
    }

    /// Write attempt `number`'s trace context into the backend's `headers` (before they are
    /// signed): `traceparent` naming the attempt's span, the caller's `tracestate`.
    pub fn inject(&self, trace: &TraceContext, number: u32, headers: &mut http::HeaderMap) {
        headers.remove("traceparent");
        headers.remove("tracestate");
        let context = span_context(trace, trace.attempt_span_id(number));
        let context = opentelemetry::Context::new().with_remote_span_context(context);
        self.propagator
            .inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    }

    /// The spans of `record`: its server span, then one client span per attempt.
    fn spans(&self, record: &ExchangeRecord, trace: &TraceContext, ended: SystemTime) -> Vec<SpanData> {
        // The record's instants are monotonic; the wall clock read as it arrives (the moment
        // the exchange ended) anchors them.
        let wall = |instant: Instant| ended.checked_sub(record.ended_at - instant).unwrap_or(ended);
        let pools = self.pools.read().expect("pool names are never poisoned");
        let pool = |index: usize| {
            pools
                .get(index)
                .cloned()
                .unwrap_or_else(|| opentelemetry::StringValue::from("_unknown"))
        };
        let name: Cow<'static, str> = match record.operation {
            Some(operation) => Cow::Owned(format!("S3.{}", operation.name())),
            None => Cow::Borrowed(method_name(record.method.as_ref())),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method_name(record.method.as_ref())),
            KeyValue::new("rpc.system", "aws-api"),
            KeyValue::new("rpc.service", "S3"),
            KeyValue::new("storefront.identity.source", record.caller.identity.source_name()),
            KeyValue::new("storefront.request_id", crate::request::request_id(record.id)),
            KeyValue::new("storefront.outcome", outcome_name(&record.outcome)),
        ];
        if let Some(operation) = record.operation {
            attributes.push(KeyValue::new("rpc.method", operation.name()));
        }
        if let Some(bucket) = &record.bucket {
            attributes.push(KeyValue::new("aws.s3.bucket", bucket.clone()));
        }
        if self.keys
            && let Some(key) = &record.key
        {
            attributes.push(KeyValue::new("aws.s3.key", key.clone()));
        }
        if let Some(peer) = record.caller.peer {
            attributes.push(KeyValue::new("client.address", peer.to_string()));
        }
        if let Some(decision) = &record.decision {
            let (verdict, reason) = match decision {
                storefront_core::auth::Decision::Allow { reason } => ("allow", reason),
                storefront_core::auth::Decision::Deny { reason } => ("deny", reason),
            };
            attributes.push(KeyValue::new("storefront.decision", verdict));
            attributes.push(KeyValue::new("storefront.decision.reason", reason.to_string()));
        }
        if let Some(route) = &record.route {
            attributes.push(KeyValue::new("storefront.pool", pool(route.pool.0)));
        }
        if let Some(status) = record.status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        if let Some(error) = super::metrics::error_type(record) {
            attributes.push(KeyValue::new("error.type", error));
        }
        if let Some(side) = record.fault {
            attributes.push(KeyValue::new("storefront.fault", side.as_str()));
        }
        if record.retry_budget_exhausted {
            attributes.push(KeyValue::new("storefront.retry.budget_exhausted", true));
        }
        attributes.push(KeyValue::new(
            "http.request.body.size",
            record.request_body_bytes as i64,
        ));
        attributes.push(KeyValue::new(
            "http.response.body.size",
            record.response_body_bytes as i64,
        ));
        // A server span is an error for the proxy's and the backend's failures (5xx), not for a
        // client's refused request.
        let failed = record.status.is_none_or(|status| status >= 500) && record.fault.is_some();
        let mut spans = Vec::with_capacity(1 + record.attempts.len());
        spans.push(SpanData {
            span_context: span_context(trace, trace.span_id),
            parent_span_id: trace.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: trace.parent_span_id.is_some(),
            span_kind: SpanKind::Server,
            name: name.clone(),
            start_time: wall(record.started_at),
            end_time: ended,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed { Status::error("") } else { Status::Unset },
            instrumentation_scope: self.scope.clone(),
        });
        // In the order they were sent (a hedge cancelled by the answer beside it ends, and is
        // recorded, before that answer's attempt).
        let mut attempts: Vec<&AttemptRecord> = record.attempts.iter().collect();
        attempts.sort_by_key(|attempt| attempt.number);
        let mut previous: Option<&AttemptRecord> = None;
        for attempt in attempts {
            let retried = if attempt.hedge { None } else { previous };
            spans.push(self.attempt_span(trace, attempt, retried, name.clone(), pool(attempt.pool.0), &wall));
            if !attempt.hedge {
                previous = Some(attempt);
            }
        }
        spans
    }

    /// The client span of one attempt; `previous` is the attempt it retries (none for a
    /// hedge, sent beside the attempt before it rather than after its failure).
    fn attempt_span(
        &self,
        trace: &TraceContext,
        attempt: &AttemptRecord,
        previous: Option<&AttemptRecord>,
        name: Cow<'static, str>,
        pool: opentelemetry::StringValue,
        wall: &impl Fn(Instant) -> SystemTime,
    ) -> SpanData {
        let (host, port) = super::metrics::split_address(&attempt.address);
        let mut attributes = vec![
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("server.port", i64::from(port)),
            KeyValue::new("storefront.pool", pool),
            KeyValue::new("storefront.attempt", i64::from(attempt.number)),
            KeyValue::new("storefront.attempt.outcome", attempt.outcome.kind()),
        ];
        let mut failed = true;
        match attempt.outcome {
            AttemptOutcome::Response { status } => {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
                failed = status >= 500;
            }
            AttemptOutcome::Timeout(phase) => {
                attributes.push(KeyValue::new("storefront.timeout.phase", phase.name()));
            }
            AttemptOutcome::Cancelled => failed = false,
            _ => {}
        }
        if attempt.hedge {
            attributes.push(KeyValue::new("storefront.hedge", true));
        }
        if let Some(previous) = previous {
            // Why this attempt was made: how the one before it ended.
            let reason = match previous.outcome {
                AttemptOutcome::Response { status } => format!("status_{status}"),
                other => other.kind().to_owned(),
            };
            attributes.push(KeyValue::new("storefront.retry.reason", reason));
        }
        if attempt.panic_mode {
            attributes.push(KeyValue::new("storefront.pool.panic_mode", true));
        }
        if attempt.stale_connections > 0 {
            attributes.push(KeyValue::new(
                "storefront.stale_connections",
                i64::from(attempt.stale_connections),
            ));
        }
        let mut events = SpanEvents::default();
        let mut event = |name: &'static str, at: SystemTime| {
            events
                .events
                .push(opentelemetry::trace::Event::new(name, at, Vec::new(), 0));
        };
        if let Some(at) = attempt.connected_at {
            event("connected", wall(at));
        }
        if let Some(at) = attempt.sent_at {
            event("request sent", wall(at));
        }
        if let Some(first_byte) = attempt.first_byte {
            event("response head", wall(attempt.started_at + first_byte));
        }
        SpanData {
            span_context: span_context(trace, trace.attempt_span_id(attempt.number)),
            parent_span_id: SpanId::from(trace.span_id),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name,
            start_time: wall(attempt.started_at),
            end_time: wall(attempt.ended_at),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: if failed { Status::error("") } else { Status::Unset },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

impl Observer for Tracer {
    fn core_event(&self, event: &Event) {
        let Event::Exchange(record) = event else {
            return;
        };
        let Some(trace) = record.trace.as_ref().filter(|trace| trace.sampled) else {
            return;
        };
        for span in self.spans(record, trace, SystemTime::now()) {
            match self.queue.try_send(span) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The span context of span `span_id` in `trace`.
fn span_context(trace: &TraceContext, span_id: u64) -> SpanContext {
    let flags = if trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let state = trace.state.parse::<TraceState>().unwrap_or_default();
    SpanContext::new(
        TraceId::from(trace.trace_id),
        SpanId::from(span_id),
        flags,
        false,
        state,
    )
}

/// `http.request.method` as the semantic conventions name it: the method, or `_OTHER`.
pub(super) fn method_name(method: Option<&http::Method>) -> &'static str {
    match method {
        Some(&http::Method::GET) => "GET",
        Some(&http::Method::HEAD) => "HEAD",
        Some(&http::Method::PUT) => "PUT",
        Some(&http::Method::POST) => "POST",
        Some(&http::Method::DELETE) => "DELETE",
        Some(&http::Method::OPTIONS) => "OPTIONS",
        Some(&http::Method::PATCH) => "PATCH",
        Some(&http::Method::TRACE) => "TRACE",
        Some(&http::Method::CONNECT) => "CONNECT",
        _ => "_OTHER",
    }
}

/// How the exchange ended, as the access log names it.
fn outcome_name(outcome: &ExchangeOutcome) -> &'static str {
    match outcome {
        ExchangeOutcome::Completed { .. } => "completed",
        ExchangeOutcome::Recovered => "recovered",
        ExchangeOutcome::Served { .. } => "served",
        ExchangeOutcome::Rejected { .. } => "rejected",
        ExchangeOutcome::Failed { .. } => "failed",
        ExchangeOutcome::Aborted { .. } => "aborted",
        ExchangeOutcome::ClientGone => "client_gone",
    }
}

/// The OTLP span exporter for `section`'s collector (`/v1/traces` under its endpoint).
fn exporter(section: &OtlpSection, handle: tokio::runtime::Handle) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    // Failures are counted per span by the export task.
    let client = super::otlp::RuntimeClient::new(handle, section, Arc::new(AtomicU64::new(0)))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", section.endpoint.trim_end_matches('/')))
        .with_timeout(section.timeout.get())
        .with_http_client(client)
        .build()
        .map_err(|error| format!("telemetry.traces: {error}"))?;
    exporter.set_resource(&super::otlp::resource());
    Ok(exporter)
}

/// The export task: batches of up to [`BATCH_MAX`] spans, each waiting at most
/// [`BATCH_WAIT`] for company, one export at a time; ends when the tracer is dropped.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: tokio::sync::mpsc::Receiver<SpanData>,
    counts: Arc<SpanCounts>,
) {
    loop {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        if spans.recv_many(&mut batch, BATCH_MAX).await == 0 {
            return;
        }
        let due = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_MAX {
            let room = BATCH_MAX - batch.len();
            match tokio::time::timeout_at(due, spans.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let count = batch.len() as u64;
        match exporter.export(batch).await {
            Ok(()) => counts.exported.fetch_add(count, Ordering::Relaxed),
            Err(error) => {
                tracing::debug!(%error, spans = count, "span export failed; dropped");
                counts.failed.fetch_add(count, Ordering::Relaxed)
            }
        };
    }
}
