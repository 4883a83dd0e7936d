//! Hedged reads: a second attempt beside a slow first one, and who wins.

use std::time::Duration;

use super::*;
use crate::event::HedgeResult;

const HEDGED: &str = "[hedge]\nenabled = true\ndelay = \"20ms\"\n";

/// A GET through `cluster`, sent whole at 10 ms: the exchange and its first dispatch.
fn sent_get(cluster: &ProxyState) -> (Exchange, Dispatch) {
    let t0 = Instant::from_millis(10);
    let (mut exchange, step) = start(cluster, t0, "GET", "/bkt/k", &[]);
    let first = dispatch_of(&step).clone();
    exchange.handle_connected(t0);
    exchange.handle_request_sent(t0);
    (exchange, first)
}

/// The hedge the delay brings, at 30 ms.
fn hedged(exchange: &mut Exchange) -> Dispatch {
    let due = Instant::from_millis(30) + Duration::from_micros(1);
    assert_eq!(exchange.poll_hedge(), Some(due));
    assert_eq!(
        exchange.handle_hedge_due(Instant::from_millis(30)),
        Step::Continue,
        "not yet"
    );
    assert_eq!(exchange.handle_deadline(due), Step::Continue, "a hedge is no deadline");
    match exchange.handle_hedge_due(due) {
        Step::Hedge(dispatch) => dispatch,
        other => panic!("expected a hedge, got {other:?}"),
    }
}

fn record(exchange: &mut Exchange) -> crate::event::ExchangeRecord {
    std::iter::from_fn(|| exchange.poll_event())
        .find_map(|event| match event {
            Event::Exchange(record) => Some(*record),
            _ => None,
        })
        .expect("the exchange ended")
}

fn backend(cluster: &ProxyState, id: BackendId) -> crate::balance::Backend {
    cluster.pools()[0].lock().balancer().get(id).expect("a backend").clone()
}

#[test]
fn a_slow_get_is_hedged_after_the_delay_and_the_first_head_wins() {
    // Proves the hedge: after the delay a second attempt goes to another backend; its head
    // comes first, so its response goes back and the slow attempt is cancelled, counted as
    // no failure but as at least that slow.
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, first) = sent_get(&cluster);
    let hedge = hedged(&mut exchange);
    assert_ne!(hedge.backend, first.backend);
    assert_eq!(hedge.attempt, 2);
    assert_eq!(in_flight(&cluster), 2);
    exchange.handle_hedge_sent(Instant::from_millis(30));
    assert_eq!(exchange.handle_hedge_head(Instant::from_millis(34), 200), Step::Return);
    assert_eq!(
        in_flight(&cluster),
        1,
        "the slow attempt ended; the hedge's body streams"
    );
    assert_eq!(exchange.backend(), Some(hedge.backend));
    assert_eq!(exchange.handle_response_done(Instant::from_millis(35)), Step::Done);
    assert_eq!(in_flight(&cluster), 0);
    let record = record(&mut exchange);
    assert_eq!(record.hedge, Some(HedgeResult::Won));
    assert_eq!(record.retries(), 0, "a hedge is not a retry");
    let outcomes: Vec<(BackendId, AttemptOutcome, bool)> = record
        .attempts
        .iter()
        .map(|attempt| (attempt.backend, attempt.outcome, attempt.hedge))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (first.backend, AttemptOutcome::Cancelled, false),
            (hedge.backend, AttemptOutcome::Response { status: 200 }, true),
        ]
    );
    assert_eq!(record.attempts[1].first_byte, Some(Duration::from_millis(4)));
    let slow = backend(&cluster, first.backend);
    assert_eq!(slow.errors_total(), 0, "cancelled is no failure");
    let parameters = cluster.pools()[0].lock().balancer().parameters().ewma;
    assert!(
        slow.latency_estimate(Instant::from_millis(35), &parameters) >= Duration::from_millis(24),
        "the slow node's estimate shows the 24 ms it had not answered in"
    );
}

#[test]
fn the_first_attempt_answering_first_cancels_the_hedge() {
    // Proves the other way round: the first attempt's head wins and the hedge is dropped,
    // without a latency sample from the time it had (shorter than anything it measures).
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, first) = sent_get(&cluster);
    let hedge = hedged(&mut exchange);
    exchange.handle_hedge_sent(Instant::from_millis(30));
    assert_eq!(
        exchange.handle_response_head(Instant::from_millis(31), 200),
        Step::Return
    );
    assert_eq!(in_flight(&cluster), 1);
    assert_eq!(exchange.backend(), Some(first.backend));
    // A late event of the dropped hedge changes nothing.
    assert_eq!(
        exchange.handle_hedge_failed(Instant::from_millis(31), AttemptOutcome::Cancelled),
        Step::Continue
    );
    assert_eq!(exchange.handle_response_done(Instant::from_millis(32)), Step::Done);
    assert_eq!(in_flight(&cluster), 0);
    let record = record(&mut exchange);
    assert_eq!(record.hedge, Some(HedgeResult::Lost));
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Cancelled);
    assert!(record.attempts[0].hedge);
    assert_eq!(backend(&cluster, hedge.backend).errors_total(), 0);
}

#[test]
fn a_failing_hedge_leaves_the_first_attempt_to_carry_on() {
    // Proves a hedge answered with a transient error does not win: it counts against its
    // node, and the first attempt's answer goes back.
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, _) = sent_get(&cluster);
    let hedge = hedged(&mut exchange);
    exchange.handle_hedge_sent(Instant::from_millis(30));
    assert_eq!(
        exchange.handle_hedge_head(Instant::from_millis(31), 503),
        Step::Continue
    );
    assert_eq!(in_flight(&cluster), 1);
    assert_eq!(
        exchange.handle_response_head(Instant::from_millis(40), 200),
        Step::Return
    );
    assert_eq!(exchange.handle_response_done(Instant::from_millis(41)), Step::Done);
    assert_eq!(record(&mut exchange).hedge, Some(HedgeResult::Failed));
    assert_eq!(backend(&cluster, hedge.backend).errors_total(), 1);
}

#[test]
fn a_first_attempt_that_fails_hands_the_exchange_to_its_hedge() {
    // Proves that the hedge carries the exchange when the attempt beside it breaks: no retry
    // is sent, the hedge's answer goes back.
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, first) = sent_get(&cluster);
    let hedge = hedged(&mut exchange);
    exchange.handle_hedge_sent(Instant::from_millis(30));
    assert_eq!(
        exchange.handle_backend_reset(Instant::from_millis(32)),
        Step::AwaitHedge
    );
    assert_eq!(in_flight(&cluster), 1);
    assert_eq!(exchange.poll_hedge(), None, "one hedge per exchange");
    assert_eq!(exchange.handle_hedge_head(Instant::from_millis(36), 200), Step::Return);
    assert_eq!(exchange.handle_response_done(Instant::from_millis(37)), Step::Done);
    assert_eq!(in_flight(&cluster), 0);
    let record = record(&mut exchange);
    assert_eq!(record.hedge, Some(HedgeResult::Won));
    assert_eq!(record.attempts.len(), 2);
    assert_eq!(backend(&cluster, first.backend).errors_total(), 1);
    assert_eq!(backend(&cluster, hedge.backend).requests_total(), 1);
}

#[test]
fn a_promoted_hedge_that_fails_is_retried_as_any_attempt() {
    // Proves a hedge that became the attempt fails like one: retried within the policy.
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, _) = sent_get(&cluster);
    hedged(&mut exchange);
    assert_eq!(
        exchange.handle_backend_reset(Instant::from_millis(32)),
        Step::AwaitHedge
    );
    let step = exchange.handle_hedge_failed(Instant::from_millis(33), AttemptOutcome::ConnectFailed);
    assert!(matches!(step, Step::Retry(_)), "{step:?}");
    assert_eq!(in_flight(&cluster), 1);
}

#[test]
fn only_bodyless_reads_are_hedged() {
    // Proves the eligibility: an upload and a delete never get a hedge; nor does anything
    // when hedging is off.
    let cluster = cluster_with(3, HEDGED);
    let t0 = Instant::from_millis(10);
    for (method, headers) in [("PUT", vec![("content-length", "5")]), ("DELETE", vec![])] {
        let (mut exchange, _) = start(&cluster, t0, method, "/bkt/k", &headers);
        exchange.handle_connected(t0);
        exchange.handle_body_started(t0);
        exchange.handle_request_sent(t0);
        assert_eq!(exchange.poll_hedge(), None, "{method}");
    }
    let off = cluster_with(3, "");
    let (exchange, _) = sent_get(&off);
    assert_eq!(exchange.poll_hedge(), None);
}

#[test]
fn the_budget_refuses_hedges_beyond_its_share() {
    // Proves the bound: with no hedge budget the delay passes without a hedge, and the record
    // says the hedge was refused.
    let cluster = cluster_with(
        3,
        "[hedge]\nenabled = true\ndelay = \"20ms\"\nbudget_ratio = 0.0\nbudget_min_per_second = 0.0\n",
    );
    let (mut exchange, _) = sent_get(&cluster);
    assert_eq!(exchange.handle_hedge_due(Instant::from_millis(31)), Step::Continue);
    assert_eq!(exchange.poll_hedge(), None);
    assert_eq!(in_flight(&cluster), 1);
    assert_eq!(
        exchange.handle_response_head(Instant::from_millis(40), 200),
        Step::Return
    );
    assert_eq!(exchange.handle_response_done(Instant::from_millis(41)), Step::Done);
    assert_eq!(record(&mut exchange).hedge, Some(HedgeResult::Refused));
}

#[test]
fn a_client_leaving_ends_both_attempts() {
    // Proves no attempt outlives its exchange: the client goes while both are open.
    let cluster = cluster_with(3, HEDGED);
    let (mut exchange, _) = sent_get(&cluster);
    hedged(&mut exchange);
    assert_eq!(in_flight(&cluster), 2);
    assert_eq!(exchange.handle_client_gone(Instant::from_millis(31)), Step::Done);
    assert_eq!(in_flight(&cluster), 0);
    let record = record(&mut exchange);
    assert_eq!(record.attempts.len(), 2);
}

#[test]
fn a_hedge_the_retry_budget_refuses_spends_none_of_the_hedge_budget() {
    // Proves the two budgets are drawn together or not at all: the hedge budget allows one
    // hedge, the retry budget none; the refused hedge leaves that one hedge in its budget.
    let cluster = cluster_with(
        3,
        "[hedge]\nenabled = true\ndelay = \"20ms\"\nbudget_ratio = 0.0\nbudget_min_per_second = 0.1\n\
         [retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0.0\n",
    );
    let (mut exchange, _) = sent_get(&cluster);
    let due = Instant::from_millis(31);
    assert!(
        cluster.pools()[0].lock().hedging().allows(due),
        "one hedge in the budget"
    );
    assert_eq!(exchange.handle_hedge_due(due), Step::Continue);
    assert!(cluster.pools()[0].lock().hedging().allows(due), "still there");
    assert_eq!(
        exchange.handle_response_head(Instant::from_millis(40), 200),
        Step::Return
    );
    assert_eq!(exchange.handle_response_done(Instant::from_millis(41)), Step::Done);
    assert_eq!(record(&mut exchange).hedge, Some(HedgeResult::Refused));
}
