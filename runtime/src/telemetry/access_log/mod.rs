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

use storefront_core::config::TelemetrySection;
use storefront_core::event::{Event, ExchangeRecord};

use super::Observer;

mod line;

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
    queue: SyncSender<Vec<u8>>,
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

    /// The line for `record` (UTF-8: every string in it is).
    fn line(&self, record: &ExchangeRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(LINE_CAPACITY);
        line::write(&mut out, record, self.keys, SystemTime::now());
        out
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
fn write_lines(lines: &Receiver<Vec<u8>>, sink: &mut Sink) {
    while let Ok(first) = lines.recv() {
        let mut writer = std::io::BufWriter::with_capacity(64 * 1024, sink.writer());
        let mut next = Some(first);
        while let Some(line) = next {
            if writer.write_all(&line).and_then(|()| writer.write_all(b"\n")).is_err() {
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
