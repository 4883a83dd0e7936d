//! The access log: one JSON line per request, from its exchange record.
//!
//! The observer formats the line on the request path and hands it to a writer thread through
//! a bounded queue (`telemetry.access_log_queue`); when the writer falls behind (a full disk, a
//! stalled pipe), new lines are dropped and counted, never waited for. The writer flushes
//! whenever the queue is empty, so a quiet proxy's lines appear at once, then rests a few
//! milliseconds so that a busy proxy's requests queue their lines without waking it.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use storefront_core::auth::{Decision, Identity};
use storefront_core::config::TelemetrySection;
use storefront_core::event::{Event, ExchangeRecord};
use storefront_core::exchange::ExchangeOutcome;

use super::Observer;

/// Where the lines go.
enum Sink {
    Stdout,
    Stderr,
    File(std::fs::File),
}

impl Sink {
    fn writer(&mut self) -> Box<dyn Write + '_> {
        match self {
            Sink::Stdout => Box::new(std::io::stdout().lock()),
            Sink::Stderr => Box::new(std::io::stderr().lock()),
            Sink::File(file) => Box::new(file),
        }
    }
}

/// The access log of one proxy.
pub struct AccessLog {
    queue: SyncSender<String>,
    keys: bool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// One line. Every field borrows from the record or formats itself as it is written, so that
/// a line costs one allocation (its buffer).
#[derive(Serialize)]
struct Line<'a> {
    /// When the request head arrived (RFC 3339 with milliseconds, UTC).
    #[serde(serialize_with = "display")]
    time: Rfc3339,
    #[serde(serialize_with = "display")]
    request_id: RequestId,
    /// The W3C trace id (32 hex digits), when traces are on.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display_some")]
    trace_id: Option<TraceId>,
    method: Option<&'a str>,
    client: Option<std::net::IpAddr>,
    identity: &'a str,
    identity_source: &'static str,
    decision: Option<&'static str>,
    reason: Option<&'a str>,
    operation: Option<&'static str>,
    bucket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    ttfb_ms: Option<f64>,
    duration_ms: f64,
    attempts: usize,
    #[serde(serialize_with = "addresses")]
    backends: &'a [storefront_core::event::AttemptRecord],
    outcome: &'static str,
    error: Option<&'static str>,
    side: Option<&'static str>,
}

/// Serialise a field by its `Display`.
fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serialise a present optional field by its `Display`.
fn display_some<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

/// The backends an exchange tried, by address.
fn addresses<S: serde::Serializer>(
    attempts: &&[storefront_core::event::AttemptRecord],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(attempts.iter().map(|attempt| attempt.address.as_str()))
}

/// A time as RFC 3339 with milliseconds, UTC (`2026-12-02T10:04:52.486Z`).
struct Rfc3339(SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self.0.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let seconds = since.as_secs();
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) =
            storefront_core::calendar::civil_from_days(i64::try_from(days).unwrap_or(i64::MAX / 2));
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60,
            since.subsec_millis()
        )
    }
}

/// An exchange's request id, as [`crate::request::request_id`] spells it.
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// A W3C trace id: 32 lowercase hex digits.
struct TraceId(u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl AccessLog {
    /// The access log `section` asks for, its writer thread started; `None` when it is off.
    pub fn start(section: &TelemetrySection) -> Result<Option<AccessLog>, String> {
        let mut sink = match section.access_log.trim() {
            "off" => return Ok(None),
            "stdout" => Sink::Stdout,
            "stderr" => Sink::Stderr,
            path => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| format!("telemetry.access_log `{path}`: {error}"))?,
            ),
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(section.access_log_queue.max(1));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&lines, &mut sink))
            .map_err(|error| format!("telemetry.access_log: no writer thread: {error}"))?;
        Ok(Some(AccessLog {
            queue,
            keys: section.access_log_keys,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The line for `record`.
    fn line(&self, record: &ExchangeRecord) -> String {
        let duration = record.duration();
        let started = SystemTime::now()
            .checked_sub(duration)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (decision, reason) = match &record.decision {
            Some(Decision::Allow { reason }) => (Some("allow"), Some(reason.as_ref())),
            Some(Decision::Deny { reason }) => (Some("deny"), Some(reason.as_ref())),
            None => (None, None),
        };
        let ttfb = record.attempts.last().and_then(|attempt| {
            attempt
                .first_byte
                .map(|first_byte| (attempt.started_at - record.started_at) + first_byte)
        });
        let (outcome, error) = match record.outcome {
            ExchangeOutcome::Completed { .. } => ("completed", None),
            ExchangeOutcome::Served { .. } => ("served", None),
            ExchangeOutcome::Rejected { code } => ("rejected", Some(code.as_str())),
            ExchangeOutcome::Failed { code } => ("failed", Some(code.as_str())),
            ExchangeOutcome::Aborted { outcome } => ("aborted", Some(outcome.kind())),
            ExchangeOutcome::ClientGone => ("client_gone", None),
        };
        let identity = match &record.caller.identity {
            Identity::Named(principal) => principal.name.as_str(),
            other => other.source_name(),
        };
        let line = Line {
            time: Rfc3339(started),
            request_id: RequestId(record.id),
            trace_id: record.trace.as_ref().map(|trace| TraceId(trace.trace_id)),
            method: record.method.as_ref().map(http::Method::as_str),
            client: record.caller.peer,
            identity,
            identity_source: record.caller.identity.source_name(),
            decision,
            reason,
            operation: record.operation.map(|operation| operation.name()),
            bucket: record.bucket.as_deref(),
            key: record.key.as_deref().filter(|_| self.keys),
            status: record.status,
            bytes_in: record.request_body_bytes,
            bytes_out: record.response_body_bytes,
            ttfb_ms: ttfb.map(milliseconds),
            duration_ms: milliseconds(duration),
            attempts: record.attempts.len(),
            backends: &record.attempts,
            outcome,
            error,
            side: record.fault.map(|side| side.as_str()),
        };
        let mut out = Vec::with_capacity(LINE_CAPACITY);
        serde_json::to_writer(&mut out, &line).expect("an access log line serialises");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// Bytes reserved for a line: most fit, so its buffer is allocated once.
const LINE_CAPACITY: usize = 640;

/// How long the writer rests after writing what was queued. Lines that arrive meanwhile wait
/// in the queue, and queueing them wakes no thread: a writer blocked on an empty queue would
/// have each request pay a wake-up (a futex call, about a microsecond and a half here), while
/// a resting one has them batched. A quiet proxy's first line still wakes it at once.
const WRITE_PAUSE: Duration = Duration::from_millis(5);

/// The writer thread: lines to the sink through a buffer, flushed whenever the queue runs
/// empty (so a quiet proxy's lines appear at once, and a busy one's leave in large writes),
/// then a rest of [`WRITE_PAUSE`]; ends when the log is dropped.
fn write_lines(lines: &Receiver<String>, sink: &mut Sink) {
    while let Ok(first) = lines.recv() {
        let mut writer = std::io::BufWriter::with_capacity(64 * 1024, sink.writer());
        let mut next = Some(first);
        while let Some(line) = next {
            if writer
                .write_all(line.as_bytes())
                .and_then(|()| writer.write_all(b"\n"))
                .is_err()
            {
                break;
            }
            next = lines.try_recv().ok();
        }
        let _ = writer.flush();
        drop(writer);
        std::thread::sleep(WRITE_PAUSE);
    }
}

impl Observer for AccessLog {
    fn core_event(&self, event: &Event) {
        if let Event::Exchange(record) = event {
            match self.queue.try_send(self.line(record)) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
