//! A request's place in a distributed trace (W3C Trace Context), carried from the runtime's
//! start of an exchange to its record.
//!
//! The runtime parses the caller's `traceparent`, draws the ids and takes the sampling
//! decision (opentelemetry's propagator and sampler); core only keeps the context with the
//! exchange, so that the record tells an observer which spans to build, and names each
//! attempt's span id, which the runtime puts in the `traceparent` it sends to that backend
//! before re-signing.

/// The trace context of one exchange: the proxy's server span and where it hangs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace's id (the caller's, or a new one when it sent none).
    pub trace_id: u128,
    /// The proxy's server span for the exchange.
    pub span_id: u64,
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent_span_id: Option<u64>,
    /// Whether the spans are recorded and exported (and the `sampled` flag sent on).
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged (empty when it sent none).
    pub state: String,
}

impl TraceContext {
    /// The span id of attempt `number` (1 for the first): derived from the server span's, so
    /// that the runtime (which sends it to the backend) and the record's observer (which
    /// exports the span) agree without keeping it anywhere. The mix is a bijection of the
    /// server span id for each number, so attempts of one exchange never share an id.
    pub fn attempt_span_id(&self, number: u32) -> u64 {
        let id = mix(self.span_id ^ u64::from(number).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Zero is the invalid span id of W3C Trace Context.
        if id == 0 { 1 } else { id }
    }
}

/// SplitMix64's finaliser: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(span_id: u64) -> TraceContext {
        TraceContext {
            trace_id: 7,
            span_id,
            parent_span_id: None,
            sampled: true,
            state: String::new(),
        }
    }

    #[test]
    fn attempt_span_ids_differ_from_each_other_and_from_the_server_span() {
        for span_id in [1, 2, u64::MAX, 0x0123_4567_89AB_CDEF] {
            let trace = context(span_id);
            let ids: Vec<u64> = (1..=8).map(|number| trace.attempt_span_id(number)).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), ids.len(), "attempt ids of span {span_id:x}: {ids:x?}");
            assert!(!ids.contains(&span_id));
            assert!(!ids.contains(&0));
            // The same context always names the same attempt span.
            assert_eq!(trace.attempt_span_id(3), context(span_id).attempt_span_id(3));
        }
    }
}
