//! One access log line, written straight into its buffer.
//!
//! The line's shape is fixed (the same keys in the same order, absent values as `null`), so
//! it is written field by field: keys and the names core hands out as `&'static str`
//! (operations, outcomes, error codes, identity sources: ASCII identifiers) go in verbatim,
//! numbers through `itoa` (what serde_json uses), and every string that came from a request
//! or a configuration (bucket, key, identity, reason, address) checked, and escaped by
//! serde_json where it needs it. Deriving `Serialize` for a struct of the same fields cost about 11,000
//! instructions per line under callgrind, most of them escaping the keys and formatting
//! through `Display` adapters; this path costs a fraction of that (see BENCHMARKS.md).

use std::time::{Duration, SystemTime};

use storefront_core::auth::{Decision, Identity};
use storefront_core::event::ExchangeRecord;
use storefront_core::exchange::ExchangeOutcome;

/// A field's key as the line spells it: `"name":`, in one piece.
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// A JSON object being written: one field after another.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// The next field's key, as [`key!`] spells it (quoted, with its colon).
    fn key(&mut self, key: &'static str) {
        debug_assert!(key.starts_with('"') && key.ends_with("\":") && verbatim(&key[1..key.len() - 2]));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
    }

    /// A string from a request or a configuration: escaped where it needs to be.
    fn text(&mut self, key: &'static str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(value) => string(self.out, value),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// One of core's names (an ASCII identifier): verbatim.
    fn name(&mut self, key: &'static str, value: Option<&'static str>) {
        self.key(key);
        match value {
            Some(value) => {
                debug_assert!(verbatim(value), "name `{value}` needs escaping");
                self.out.push(b'"');
                self.out.extend_from_slice(value.as_bytes());
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn integer(&mut self, key: &'static str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(value) => self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// Milliseconds, to the microsecond, as the shortest decimal that says it (`43.972`,
    /// `0.2`, `12.0`: what serde_json writes for the same `f64`).
    fn millis(&mut self, key: &'static str, value: Option<Duration>) {
        self.key(key);
        match value {
            Some(value) => {
                // Rounded to the nearest microsecond, halves up, as `f64::round` rounds.
                let micros = u64::try_from((value.as_nanos() + 500) / 1000).unwrap_or(u64::MAX);
                self.out
                    .extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
                self.out.push(b'.');
                let fraction = micros % 1000;
                let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
                let shown = if fraction % 100 == 0 {
                    1
                } else if fraction % 10 == 0 {
                    2
                } else {
                    3
                };
                self.out.extend(digits[..shown].iter().map(|digit| b'0' + *digit as u8));
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// A string whose characters need no escaping, written by `write`.
    fn formatted(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        self.key(key);
        self.out.push(b'"');
        write(self.out);
        self.out.push(b'"');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// True for text JSON can carry between quotes as it is.
fn verbatim(text: &str) -> bool {
    text.bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\' && byte < 0x7f)
}

/// The bytes a JSON string cannot carry as they are: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `text` as a JSON string: between quotes as it is when it can be (most are: buckets,
/// addresses, rule names), else with serde_json's escaping. UTF-8 beyond ASCII goes in as it
/// is, as serde_json writes it; the test is one table look-up per byte, without a branch.
fn string(out: &mut Vec<u8>, text: &str) {
    let escape = text
        .bytes()
        .fold(false, |escape, byte| escape | NEEDS_ESCAPE[usize::from(byte)]);
    if !escape {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        escaped(out, text);
    }
}

/// `text` as a JSON string (serde_json's escaping).
fn escaped(out: &mut Vec<u8>, text: &str) {
    serde::Serialize::serialize(text, &mut serde_json::Serializer::new(&mut *out))
        .expect("writing to a vector cannot fail");
}

/// `value` as `width` lowercase or uppercase hex digits.
fn hex(out: &mut Vec<u8>, value: u128, width: u32, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    for position in (0..width).rev() {
        out.push(digits[((value >> (position * 4)) & 0xf) as usize]);
    }
}

/// `value` as at least `width` decimal digits, zero-padded.
fn padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits.len())));
    out.extend_from_slice(digits.as_bytes());
}

/// `time` as RFC 3339 with milliseconds, UTC (`2026-12-02T10:04:52.486Z`).
fn rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = storefront_core::calendar::civil_from_days(i64::try_from(days).unwrap_or(i64::MAX / 2));
    padded(out, year.max(0).unsigned_abs(), 4);
    out.push(b'-');
    padded(out, month.unsigned_abs(), 2);
    out.push(b'-');
    padded(out, day.unsigned_abs(), 2);
    out.push(b'T');
    padded(out, rest / 3600, 2);
    out.push(b':');
    padded(out, rest % 3600 / 60, 2);
    out.push(b':');
    padded(out, rest % 60, 2);
    out.push(b'.');
    padded(out, u64::from(since.subsec_millis()), 3);
    out.push(b'Z');
}

/// The line of `record` into `out` (no newline); `keys`: whether it names the object key;
/// `now`: the wall time as the record arrives, when the exchange ended.
pub(super) fn write(out: &mut Vec<u8>, record: &ExchangeRecord, keys: bool, now: SystemTime) {
    let duration = record.duration();
    let started = now.checked_sub(duration).unwrap_or(SystemTime::UNIX_EPOCH);
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
        ExchangeOutcome::Recovered => ("recovered", None),
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
    let mut line = Object::open(out);
    line.formatted(key!("time"), |out| rfc3339(out, started));
    line.formatted(key!("request_id"), |out| hex(out, u128::from(record.id), 16, true));
    if let Some(trace) = &record.trace {
        line.formatted(key!("trace_id"), |out| hex(out, trace.trace_id, 32, false));
    }
    line.text(key!("method"), record.method.as_ref().map(http::Method::as_str));
    match record.caller.peer {
        Some(std::net::IpAddr::V4(peer)) => line.formatted(key!("client"), |out| {
            for (index, octet) in peer.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }),
        Some(peer) => line.formatted(key!("client"), |out| {
            use std::io::Write as _;
            let _ = write!(out, "{peer}");
        }),
        None => line.name(key!("client"), None),
    }
    line.text(key!("identity"), Some(identity));
    line.name(key!("identity_source"), Some(record.caller.identity.source_name()));
    line.name(key!("decision"), decision);
    line.text(key!("reason"), reason);
    line.name(key!("operation"), record.operation.map(|operation| operation.name()));
    line.text(key!("bucket"), record.bucket.as_deref());
    if keys && let Some(key) = record.key.as_deref() {
        line.text(key!("key"), Some(key));
    }
    line.integer(key!("status"), record.status.map(u64::from));
    line.integer(key!("bytes_in"), Some(record.request_body_bytes));
    line.integer(key!("bytes_out"), Some(record.response_body_bytes));
    line.millis(key!("ttfb_ms"), ttfb);
    line.millis(key!("duration_ms"), Some(duration));
    line.integer(key!("attempts"), Some(record.attempts.len() as u64));
    line.key(key!("backends"));
    line.out.push(b'[');
    for (index, attempt) in record.attempts.iter().enumerate() {
        if index > 0 {
            line.out.push(b',');
        }
        string(line.out, &attempt.address);
    }
    line.out.push(b']');
    line.name(key!("outcome"), Some(outcome));
    line.name(key!("error"), error);
    line.name(key!("side"), record.fault.map(|side| side.as_str()));
    line.close();
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn times_and_ids_are_spelled_as_the_log_promises() {
        // Proves the hand-placed digits: RFC 3339 with milliseconds (leap day, padding), the
        // request id in 16 uppercase hex digits, a trace id in 32 lowercase ones.
        let mut out = Vec::new();
        rfc3339(&mut out, UNIX_EPOCH + Duration::from_millis(1_709_164_805_007));
        assert_eq!(String::from_utf8(out).expect("ASCII"), "2024-02-29T00:00:05.007Z");
        let mut out = Vec::new();
        hex(&mut out, 0xAB_CDEF, 16, true);
        assert_eq!(String::from_utf8(out).expect("ASCII"), "0000000000ABCDEF");
        let mut out = Vec::new();
        hex(&mut out, 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c, 32, false);
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn strings_from_requests_are_escaped_and_the_line_parses() {
        // Proves that what a caller or an operator chose (a key with quotes, a backslash, a
        // newline, non-ASCII) cannot break the line: it parses as JSON with the text intact.
        let mut out = Vec::new();
        let mut object = Object::open(&mut out);
        object.text(key!("key"), Some("a \"quoted\"\\key\nwith é\t\u{1}"));
        object.name(key!("outcome"), Some("completed"));
        object.integer(key!("status"), None);
        object.millis(key!("ttfb_ms"), Some(Duration::from_micros(43_972)));
        object.close();
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("a JSON object");
        assert_eq!(parsed["key"], "a \"quoted\"\\key\nwith é\t\u{1}");
        assert_eq!(parsed["outcome"], "completed");
        assert!(parsed["status"].is_null());
        assert_eq!(parsed["ttfb_ms"], 43.972);
    }

    #[test]
    fn milliseconds_read_as_serde_json_writes_the_same_figure() {
        // Proves the digits of `ttfb_ms` and `duration_ms` are those serde_json writes for the
        // duration in milliseconds rounded to the microsecond, across the rounding edges.
        for nanos in [
            0,
            1,
            499,
            500,
            999,
            1_000,
            43_971_500,
            43_972_000,
            200_000,
            12_000_000,
            12_345_678_901,
            7_999_999_499,
            7_999_999_500,
        ] {
            let duration = Duration::from_nanos(nanos);
            let mut out = Vec::new();
            let mut object = Object::open(&mut out);
            object.millis(key!("ms"), Some(duration));
            object.close();
            let expected = (duration.as_secs_f64() * 1e6).round() / 1e3;
            assert_eq!(
                String::from_utf8(out).expect("ASCII"),
                format!("{{\"ms\":{}}}", serde_json::to_string(&expected).expect("a number")),
                "{nanos} ns"
            );
        }
    }
}
