//! May this attempt be retried, and does the budget allow it.
//!
//! Two questions, answered separately:
//!
//! 1. **Is a retry safe?** ([`RetryPolicy::verdict`]). A request may go to another backend
//!    only if the first one provably did not act on it, or if acting twice is harmless:
//!    - nothing reached the backend (connect failed or timed out), or the backend said
//!      `503 SlowDown` / `429` (S3 defines these as "not processed"): any request;
//!    - a reset before the response head, a 5xx, or no first byte in time: idempotent
//!      requests only (see [`crate::s3::Operation::is_idempotent`]);
//!    - and in every case the request body must still be replayable: either the request has
//!      no body, or not one body byte has been taken from the client yet. The proxy streams
//!      bodies and does not buffer them, so a half-sent upload cannot be sent again;
//!    - never after the response head was handed to the client.
//! 2. **Is there budget?** ([`RetryBudget`]). Retries are capped at `ratio` × requests over a
//!    sliding window plus a floor of `min_per_second` (after linkerd's and Finagle's retry
//!    budgets). When a whole cluster browns out, every request fails and every failure wants
//!    a retry; a per-request attempt limit alone would multiply the load by the attempt count
//!    exactly when the cluster can least take it. The budget caps the extra load at `ratio`.
//!    The floor keeps retries possible when traffic is light (one request a minute that hits
//!    a dead node should still be retried).

use std::time::Duration;

use crate::outcome::{AttemptOutcome, Phase, StatusSet};
use crate::time::Instant;

/// The per-request part of the retry rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backend answers worth another backend (`retry.retry_statuses`); any other answer goes
    /// back to the client as it is.
    pub retried: StatusSet,
}

/// What the request looks like to the retry rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryContext {
    /// The operation may be sent twice (see `Operation::is_idempotent`).
    pub idempotent: bool,
    /// The request has a body.
    pub has_body: bool,
    /// Body bytes were already taken from the client (and so cannot be sent again).
    pub body_started: bool,
    /// The response head was already handed to the client.
    pub response_started: bool,
    /// Attempts made so far, this one included.
    pub attempts: u32,
}

/// Why a retry is or is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryVerdict {
    /// Safe to retry (subject to the budget).
    Retry,
    /// The outcome is not a failure worth retrying (a success, a 4xx, the client's doing).
    NotRetryable,
    /// The backend may have acted on a request that is not idempotent.
    NotIdempotent,
    /// The request body was partly sent and cannot be replayed.
    BodyConsumed,
    /// The response already reached the client.
    ResponseStarted,
    /// `max_attempts` reached.
    AttemptsExhausted,
}

impl RetryVerdict {
    /// A stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RetryVerdict::Retry => "retry",
            RetryVerdict::NotRetryable => "not_retryable",
            RetryVerdict::NotIdempotent => "not_idempotent",
            RetryVerdict::BodyConsumed => "body_consumed",
            RetryVerdict::ResponseStarted => "response_started",
            RetryVerdict::AttemptsExhausted => "attempts_exhausted",
        }
    }
}

impl RetryPolicy {
    /// May an attempt that ended in `outcome` be retried on another backend?
    pub fn verdict(&self, outcome: AttemptOutcome, context: RetryContext) -> RetryVerdict {
        let not_processed = match outcome {
            AttemptOutcome::ConnectFailed | AttemptOutcome::Timeout(Phase::BackendConnect) => true,
            AttemptOutcome::Response { status } if !self.retried.contains(status) => {
                return RetryVerdict::NotRetryable;
            }
            _ if outcome.is_slow_down() => true,
            AttemptOutcome::Response { .. } => false,
            AttemptOutcome::Reset {
                response_started: false,
            } => false,
            AttemptOutcome::Timeout(Phase::BackendFirstByte | Phase::BackendSendIdle) => false,
            _ => return RetryVerdict::NotRetryable,
        };
        if context.response_started {
            return RetryVerdict::ResponseStarted;
        }
        if context.has_body && context.body_started {
            return RetryVerdict::BodyConsumed;
        }
        if !not_processed && !context.idempotent {
            return RetryVerdict::NotIdempotent;
        }
        if context.attempts >= self.max_attempts {
            return RetryVerdict::AttemptsExhausted;
        }
        RetryVerdict::Retry
    }
}

/// Parameters of a [`RetryBudget`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetParameters {
    /// Retries allowed per request in the window (0.2: at most 20% extra load).
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic.
    pub min_per_second: f64,
    /// The sliding window's length.
    pub window: Duration,
}

/// Number of buckets the window is cut into. Ten gives the window a resolution of a tenth of
/// its length, which is precise enough for a budget and keeps the state fixed-size.
const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket-length period since the epoch this bucket holds.
    period: u64,
    requests: u64,
    retries: u64,
}

/// A sliding-window retry budget: retries ≤ ratio × requests + min_per_second × window.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    parameters: BudgetParameters,
    bucket_length_ns: u64,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(parameters: BudgetParameters) -> Self {
        debug_assert!(parameters.ratio >= 0.0 && parameters.min_per_second >= 0.0);
        let window_ns = u64::try_from(parameters.window.as_nanos()).unwrap_or(u64::MAX);
        RetryBudget {
            parameters,
            bucket_length_ns: (window_ns / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// The budget's parameters.
    pub fn parameters(&self) -> &BudgetParameters {
        &self.parameters
    }

    /// Take new parameters (a reload). The counts carry over when the window's length stays;
    /// a new window length starts an empty window, since the old buckets no longer line up.
    pub fn set_parameters(&mut self, parameters: BudgetParameters) {
        if parameters.window == self.parameters.window {
            self.parameters = parameters;
        } else {
            *self = RetryBudget::new(parameters);
        }
    }

    /// Count one original request (not a retry).
    pub fn record_request(&mut self, now: Instant) {
        self.bucket(now).requests += 1;
    }

    /// True when the budget would allow one more retry now (takes nothing).
    pub fn allows(&self, now: Instant) -> bool {
        let (requests, retries) = self.totals(now);
        (retries + 1) as f64 <= self.allowance(requests)
    }

    /// Take one retry from the budget if it allows one; false otherwise.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.allows(now) {
            self.bucket(now).retries += 1;
            true
        } else {
            false
        }
    }

    /// Requests and retries counted in the window that ends at `now`.
    pub fn totals(&self, now: Instant) -> (u64, u64) {
        let current = self.period(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|bucket| bucket.period >= oldest && bucket.period <= current)
            .fold((0, 0), |(requests, retries), bucket| {
                (requests + bucket.requests, retries + bucket.retries)
            })
    }

    /// Retries the window allows for `requests` requests.
    pub fn allowance(&self, requests: u64) -> f64 {
        self.parameters.ratio * requests as f64 + self.parameters.min_per_second * self.parameters.window.as_secs_f64()
    }

    fn period(&self, now: Instant) -> u64 {
        let nanos = u64::try_from(now.since_epoch().as_nanos()).unwrap_or(u64::MAX);
        nanos / self.bucket_length_ns
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let period = self.period(now);
        let bucket = &mut self.buckets[(period % BUCKETS as u64) as usize];
        if bucket.period != period {
            *bucket = Bucket {
                period,
                requests: 0,
                retries: 0,
            };
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        retried: StatusSet::TRANSIENT,
    };

    fn context(idempotent: bool, has_body: bool, body_started: bool) -> RetryContext {
        RetryContext {
            idempotent,
            has_body,
            body_started,
            response_started: false,
            attempts: 1,
        }
    }

    #[test]
    fn retry_table() {
        // Proves the safety rules: what may be retried, for which requests, in which state.
        use AttemptOutcome::*;
        use RetryVerdict::*;
        let get = context(true, false, false);
        let create_upload = context(false, false, false);
        let put_unsent = context(true, true, false);
        let put_sent = context(true, true, true);
        let complete_sent = context(false, true, true);
        let cases = [
            (ConnectFailed, get, Retry),
            (ConnectFailed, create_upload, Retry),
            (ConnectFailed, put_unsent, Retry),
            (Timeout(Phase::BackendConnect), create_upload, Retry),
            (Response { status: 503 }, create_upload, Retry),
            (Response { status: 429 }, put_unsent, Retry),
            (Response { status: 503 }, put_sent, BodyConsumed),
            (Response { status: 500 }, get, Retry),
            (Response { status: 500 }, create_upload, NotIdempotent),
            (Response { status: 502 }, put_sent, BodyConsumed),
            (
                Reset {
                    response_started: false,
                },
                get,
                Retry,
            ),
            (
                Reset {
                    response_started: false,
                },
                create_upload,
                NotIdempotent,
            ),
            (
                Reset {
                    response_started: false,
                },
                complete_sent,
                BodyConsumed,
            ),
            (Reset { response_started: true }, get, NotRetryable),
            (Timeout(Phase::BackendFirstByte), get, Retry),
            (Timeout(Phase::BackendFirstByte), create_upload, NotIdempotent),
            (Timeout(Phase::BackendBodyIdle), get, NotRetryable),
            (Timeout(Phase::BackendSendIdle), put_sent, BodyConsumed),
            (Timeout(Phase::ClientBodyIdle), put_sent, NotRetryable),
            (Response { status: 200 }, get, NotRetryable),
            (Response { status: 404 }, get, NotRetryable),
            (Abandoned, get, NotRetryable),
        ];
        for (outcome, context, expected) in cases {
            assert_eq!(POLICY.verdict(outcome, context), expected, "{outcome:?} {context:?}");
        }
        let mut late = get;
        late.response_started = true;
        assert_eq!(POLICY.verdict(ConnectFailed, late), ResponseStarted);
        let mut third = get;
        third.attempts = 3;
        assert_eq!(POLICY.verdict(ConnectFailed, third), AttemptsExhausted);
    }

    #[test]
    fn budget_allows_the_ratio_plus_the_floor_and_forgets_old_traffic() {
        // Proves ratio × requests + floor, and that the window slides.
        let mut budget = RetryBudget::new(BudgetParameters {
            ratio: 0.2,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
        });
        let now = Instant::from_millis(500);
        for _ in 0..100 {
            budget.record_request(now);
        }
        let granted = (0..100).filter(|_| budget.try_withdraw(now)).count();
        assert_eq!(granted, 30, "20% of 100 plus 1/s over 10 s");
        // Eleven seconds later the old traffic has left the window: only the floor remains.
        let later = now + Duration::from_secs(11);
        let granted = (0..100).filter(|_| budget.try_withdraw(later)).count();
        assert_eq!(granted, 10);
    }

    proptest! {
        /// Every grant leaves the window within its allowance, and over a whole run the
        /// granted retries stay below ratio × requests + floor × (run length + one window).
        /// (A window can later hold more retries than its requests allow, when the requests
        /// that paid for them slide out first: the budget is checked when a retry is taken.)
        #[test]
        fn retries_never_exceed_the_budget(
            events in prop::collection::vec((any::<bool>(), 0u64..700), 1..400),
            ratio in 0.0f64..1.0,
            floor in 0.0f64..3.0,
        ) {
            let parameters = BudgetParameters { ratio, min_per_second: floor, window: Duration::from_secs(5) };
            let mut budget = RetryBudget::new(parameters);
            let mut now = Instant::EPOCH;
            let (mut requests_total, mut retries_total) = (0u64, 0u64);
            for (is_request, advance_ms) in events {
                now = now + Duration::from_millis(advance_ms);
                if is_request {
                    budget.record_request(now);
                    requests_total += 1;
                } else if budget.try_withdraw(now) {
                    retries_total += 1;
                    let (requests, retries) = budget.totals(now);
                    prop_assert!(retries as f64 <= budget.allowance(requests) + 1e-9,
                        "granted past the window's allowance: {retries} retries for {requests} requests");
                }
            }
            let run = now.since_epoch().as_secs_f64() + parameters.window.as_secs_f64();
            let bound = ratio * requests_total as f64 + floor * run;
            prop_assert!(retries_total as f64 <= bound + 1e-9, "{retries_total} retries > bound {bound}");
        }
    }
}
