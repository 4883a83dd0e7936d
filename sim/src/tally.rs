//! What the proxies did, tallied from their core and runtime events.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use storefront::telemetry::{Observer, RuntimeEvent};
use storefront_core::auth::{Decision, Identity, Source};
use storefront_core::event::{Event as CoreEvent, HedgeResult};
use storefront_core::exchange::ExchangeOutcome;

/// What the proxies did, tallied from their events (the same records telemetry reads).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) exchanges: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Hedges sent (won, lost or failed) and those that won.
    pub(crate) hedges: AtomicU64,
    pub(crate) hedges_won: AtomicU64,
    pub(crate) slow_readers_cut: AtomicU64,
    pub(crate) local_continues: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) dispatched_to_unavailable: AtomicU64,
    /// Exchanges by identity source and result.
    pub(crate) decisions: Mutex<BTreeMap<(String, String), u64>>,
}

/// The identity source of an exchange's caller, as the report names it.
fn identity_source(identity: &Identity) -> &'static str {
    match identity {
        Identity::Anonymous => "anonymous",
        Identity::Trusted => "trusted",
        Identity::Named(principal) => match principal.source {
            Source::Cidr => "cidr",
            Source::Pod => "pod",
            Source::AccessKey => "access-key",
            Source::Session => "session",
        },
        _ => "other",
    }
}

/// What became of an exchange, as the report names it: the policy's decision, or why no
/// decision was reached (a refusal before policy: a bad signature), or the token exchange's
/// answer.
fn exchange_result(record: &storefront_core::event::ExchangeRecord) -> String {
    match (&record.decision, &record.outcome) {
        (_, ExchangeOutcome::Served { status }) => format!("sts-{status}"),
        (Some(Decision::Allow { .. }), _) => "allowed".to_owned(),
        (Some(Decision::Deny { .. }), _) => "denied".to_owned(),
        (None, ExchangeOutcome::Rejected { code }) => format!("rejected-{}", code.as_str()),
        (None, _) => "undecided".to_owned(),
    }
}

impl Observer for Tally {
    fn core_event(&self, event: &CoreEvent) {
        let CoreEvent::Exchange(record) = event else {
            return;
        };
        *self
            .decisions
            .lock()
            .expect("single-threaded simulation")
            .entry((
                identity_source(&record.caller.identity).to_owned(),
                exchange_result(record),
            ))
            .or_insert(0) += 1;
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        if matches!(record.outcome, ExchangeOutcome::Failed { .. }) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.retries.fetch_add(record.retries() as u64, Ordering::Relaxed);
        match record.hedge {
            Some(HedgeResult::Won) => {
                self.hedges.fetch_add(1, Ordering::Relaxed);
                self.hedges_won.fetch_add(1, Ordering::Relaxed);
            }
            Some(HedgeResult::Lost | HedgeResult::Failed) => {
                self.hedges.fetch_add(1, Ordering::Relaxed);
            }
            Some(HedgeResult::Refused) | None => {}
        }
        if record.continued_locally {
            self.local_continues.fetch_add(1, Ordering::Relaxed);
        }
        if record.retry_budget_exhausted
            && matches!(
                record.outcome,
                ExchangeOutcome::Failed { .. } | ExchangeOutcome::Rejected { .. }
            )
        {
            self.budget_refusals.fetch_add(1, Ordering::Relaxed);
        }
        let unavailable = record
            .attempts
            .iter()
            .filter(|attempt| attempt.dispatched_unavailable && !attempt.panic_mode)
            .count();
        self.dispatched_to_unavailable
            .fetch_add(unavailable as u64, Ordering::Relaxed);
    }

    fn runtime_event(&self, event: &RuntimeEvent) {
        if *event == RuntimeEvent::SlowReaderCut {
            self.slow_readers_cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}
