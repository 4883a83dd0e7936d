//! The access log: one JSON line per request, from its exchange record.
//!
//! The observer formats the line on the request path and hands it to a writer thread through
//! a bounded queue (`telemetry.access_log_queue`); when the writer falls behind (a full disk, a
//! stalled pipe), new lines are dropped and counted, never waited for. The writer flushes
//! whenever the queue is empty, so a quiet proxy's lines appear at once.

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

/// One line.
#[derive(Serialize)]
struct Line<'a> {
    /// When the request head arrived (RFC 3339, UTC).
    time: String,
    request_id: String,
    /// The W3C trace id (32 hex digits), when traces are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    method: Option<&'a str>,
    client: Option<String>,
    identity: String,
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
    backends: Vec<&'a str>,
    outcome: &'static str,
    error: Option<&'static str>,
    side: Option<&'static str>,
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
            Identity::Named(principal) => principal.name.clone(),
            other => other.source_name().to_owned(),
        };
        let line = Line {
            time: humantime_rfc3339(started),
            request_id: crate::request::request_id(record.id),
            trace_id: record.trace.as_ref().map(|trace| format!("{:032x}", trace.trace_id)),
            method: record.method.as_ref().map(http::Method::as_str),
            client: record.caller.peer.map(|peer| peer.to_string()),
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
            backends: record.attempts.iter().map(|attempt| attempt.address.as_str()).collect(),
            outcome,
            error,
            side: record.fault.map(|side| side.as_str()),
        };
        serde_json::to_string(&line).expect("an access log line serialises")
    }
}

/// `time` as RFC 3339 with milliseconds, UTC.
fn humantime_rfc3339(time: SystemTime) -> String {
    let millis = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_millis());
    let whole = storefront_core::calendar::format_iso8601(time);
    format!("{}.{millis:03}Z", whole.trim_end_matches('Z'))
}

/// The writer thread: lines to the sink, flushed whenever the queue runs empty; ends when the
/// log is dropped.
fn write_lines(lines: &Receiver<String>, sink: &mut Sink) {
    while let Ok(first) = lines.recv() {
        let mut writer = sink.writer();
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
