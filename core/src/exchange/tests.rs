//! Exchange scenarios and properties over random event sequences.

use std::time::Duration;

use super::*;
use crate::auth::{DenyAll, TrustAll};
use crate::config::Config;

fn cluster_with(backends: usize, extra: &str) -> ProxyState {
    cluster_seeded(backends, extra, 0)
}

/// [`cluster_with`], its pools' RNGs seeded from `seed`.
fn cluster_seeded(backends: usize, extra: &str, seed: u64) -> ProxyState {
    let list: Vec<String> = (0..backends).map(|index| format!("\"10.0.0.{index}:9000\"")).collect();
    let text = format!(
        "{extra}\n[health.active]\nenabled = false\n\n[[pools]]\nname = \"dc1\"\nbackends = [{}]\n",
        list.join(", ")
    );
    let config = Config::from_toml(&text, "test.toml").expect("valid test config");
    let cluster = ProxyState::from_config(&config, Instant::EPOCH, seed).expect("state");
    cluster.set_authorizer(Box::new(TrustAll));
    cluster
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:9000");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid test request").into_parts().0
}

/// A fresh exchange id (the driver's job in the runtime).
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn caller() -> Caller {
    Caller::anonymous(None)
}

/// Start an exchange for `method path` with `headers` from an anonymous caller.
fn start(cluster: &ProxyState, now: Instant, method: &str, path: &str, headers: &[(&str, &str)]) -> (Exchange, Step) {
    Exchange::start(cluster, next_id(), now, &head(method, path, headers), &caller())
}

fn in_flight(cluster: &ProxyState) -> u64 {
    cluster
        .pools()
        .iter()
        .map(|pool| pool.lock().balancer().in_flight_total())
        .sum()
}

fn dispatch_of(step: &Step) -> &Dispatch {
    match step {
        Step::Forward(dispatch) | Step::Retry(dispatch) => dispatch,
        other => panic!("expected a dispatch, got {other:?}"),
    }
}

#[test]
fn a_get_goes_forward_returns_and_completes() {
    // Proves the happy path and that the attempt is recorded once in the balancer.
    let cluster = cluster_with(3, "");
    let t0 = Instant::from_millis(10);
    let (mut exchange, step) = start(&cluster, t0, "GET", "/b/k", &[]);
    let dispatch = dispatch_of(&step).clone();
    assert_eq!(dispatch.attempt, 1);
    assert_eq!(in_flight(&cluster), 1);
    assert_eq!(
        exchange.poll_timeout(),
        Some((t0 + Duration::from_secs(2), Phase::BackendConnect))
    );
    exchange.handle_connected(t0);
    exchange.handle_request_sent(t0 + Duration::from_millis(1));
    assert_eq!(
        exchange.poll_timeout(),
        Some((
            t0 + Duration::from_millis(1) + Duration::from_secs(60),
            Phase::BackendFirstByte
        ))
    );
    let t1 = t0 + Duration::from_millis(5);
    assert_eq!(exchange.handle_response_head(t1, 200), Step::Return);
    assert_eq!(
        exchange.poll_timeout(),
        None,
        "streaming phases are the runtime's idle timers"
    );
    assert_eq!(in_flight(&cluster), 1, "the body still streams");
    assert_eq!(exchange.handle_response_done(t1), Step::Done);
    assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::Completed { status: 200 }));
    assert_eq!(in_flight(&cluster), 0);
    let backend = cluster.pools()[0]
        .lock()
        .balancer()
        .get(dispatch.backend)
        .expect("backend")
        .clone();
    assert_eq!((backend.requests_total(), backend.errors_total()), (1, 0));
    // Events after the end change nothing.
    assert_eq!(exchange.handle_client_gone(t1), Step::Continue);
    assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::Completed { status: 200 }));
}

#[test]
fn a_dead_backend_costs_a_get_nothing() {
    // Proves connect failures are retried on another backend and the client sees success.
    let cluster = cluster_with(3, "");
    let now = Instant::from_millis(1);
    let (mut exchange, first) = start(&cluster, now, "GET", "/b/k", &[]);
    let first = dispatch_of(&first).clone();
    let second = exchange.handle_connect_failed(now);
    let second = dispatch_of(&second).clone();
    assert!(matches!(exchange.last_retry_verdict(), Some(RetryVerdict::Retry)));
    assert_ne!(first.backend, second.backend, "the retry goes elsewhere");
    assert_eq!(second.attempt, 2);
    exchange.handle_connected(now);
    exchange.handle_request_sent(now);
    assert_eq!(exchange.handle_response_head(now, 200), Step::Return);
    assert_eq!(exchange.handle_response_done(now), Step::Done);
    let failed = cluster.pools()[0]
        .lock()
        .balancer()
        .get(first.backend)
        .expect("backend")
        .clone();
    assert_eq!(failed.errors_total(), 1);
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn slow_down_is_retried_even_when_not_idempotent_but_a_500_is_not() {
    // Proves the S3 rule: 503 SlowDown means "not processed", so any request may be retried;
    // a 500 on CreateMultipartUpload may have created an upload, so it is passed through.
    let cluster = cluster_with(3, "");
    let now = Instant::from_millis(1);
    let create = head("POST", "/b/k?uploads", &[]);
    let (mut exchange, _) = Exchange::start(&cluster, next_id(), now, &create, &caller());
    exchange.handle_request_sent(now);
    assert!(matches!(exchange.handle_response_head(now, 503), Step::Retry(_)));
    exchange.handle_request_sent(now);
    assert_eq!(exchange.handle_response_head(now, 500), Step::Return);
    assert_eq!(exchange.last_retry_verdict(), Some(RetryVerdict::NotIdempotent));
    assert_eq!(exchange.handle_response_done(now), Step::Done);
    assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::Completed { status: 500 }));
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn an_upload_whose_body_started_is_never_retried() {
    // Proves that a streamed body is never replayed: the client gets an error and retries itself.
    let cluster = cluster_with(3, "");
    let now = Instant::from_millis(1);
    let put = head("PUT", "/b/k", &[("content-length", "1048576")]);
    let (mut exchange, _) = Exchange::start(&cluster, next_id(), now, &put, &caller());
    exchange.handle_connected(now);
    exchange.handle_body_started(now);
    let step = exchange.handle_backend_reset(now);
    assert!(
        matches!(&step, Step::Fail(error) if error.code == ErrorCode::BadGateway),
        "{step:?}"
    );
    assert_eq!(exchange.last_retry_verdict(), Some(RetryVerdict::BodyConsumed));
    assert_eq!(exchange.attempts(), 1);

    // The same upload that has not sent a byte yet (waiting on 100-continue) is retried.
    let put = head(
        "PUT",
        "/b/k",
        &[("content-length", "1048576"), ("expect", "100-continue")],
    );
    let (mut exchange, _) = Exchange::start(&cluster, next_id(), now, &put, &caller());
    assert!(matches!(exchange.handle_connect_failed(now), Step::Retry(_)));
    exchange.handle_client_gone(now);
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn a_backend_dying_mid_body_aborts_the_client_connection() {
    // Proves that a broken response is never passed off as complete.
    let cluster = cluster_with(2, "");
    let now = Instant::from_millis(1);
    let (mut exchange, _) = start(&cluster, now, "GET", "/b/big", &[]);
    exchange.handle_request_sent(now);
    assert_eq!(exchange.handle_response_head(now, 200), Step::Return);
    assert_eq!(exchange.handle_backend_reset(now), Step::Abort);
    assert_eq!(
        exchange.outcome(),
        Some(&ExchangeOutcome::Aborted {
            outcome: AttemptOutcome::Reset { response_started: true }
        })
    );
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn slow_clients_do_not_count_against_backends() {
    // Proves that a slow reader or a stalled uploader ends the exchange without harming the
    // backend's health record.
    let cluster = cluster_with(1, "[health.passive]\nconsecutive_failures = 1\n");
    let now = Instant::from_millis(1);
    let (mut reader, step) = start(&cluster, now, "GET", "/b/k", &[]);
    let backend = dispatch_of(&step).backend;
    reader.handle_request_sent(now);
    reader.handle_response_head(now, 200);
    assert_eq!(reader.handle_timeout(now, Phase::ResponseWriteIdle), Step::Abort);

    let put = head("PUT", "/b/k", &[("content-length", "10")]);
    let (mut writer, _) = Exchange::start(&cluster, next_id(), now, &put, &caller());
    writer.handle_connected(now);
    writer.handle_body_started(now);
    let step = writer.handle_timeout(now, Phase::ClientBodyIdle);
    assert!(
        matches!(&step, Step::Fail(error) if error.code == ErrorCode::RequestTimeout),
        "{step:?}"
    );

    let (mut leaver, _) = start(&cluster, now, "GET", "/b/k", &[]);
    assert_eq!(leaver.handle_client_gone(now), Step::Done);
    assert_eq!(leaver.outcome(), Some(&ExchangeOutcome::ClientGone));

    let health = cluster.pools()[0].lock().health().get(backend).expect("tracked");
    assert_eq!(health.consecutive_failures, 0);
    assert!(health.is_available());
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn local_failures_are_attributed_to_their_side() {
    // Proves that a signing failure is the proxy's fault and a bad chunk signature the
    // client's: neither ejects the backend (one failure would, here), neither is retried, and
    // each record says whose fault it was and what the client got.
    let cluster = cluster_with(2, "[health.passive]\nconsecutive_failures = 1\n");
    let now = Instant::from_millis(1);
    let cases = [
        (
            "proxy",
            S3ErrorResponse::new(ErrorCode::InternalError, "cannot sign"),
            Side::Proxy,
            AttemptOutcome::ProxyFault,
        ),
        (
            "client",
            S3ErrorResponse::new(ErrorCode::SignatureDoesNotMatch, "bad chunk"),
            Side::Client,
            AttemptOutcome::Abandoned,
        ),
    ];
    for (side_name, error, side, attempt_outcome) in cases {
        let put = head("PUT", "/b/k", &[("content-length", "10")]);
        let (mut exchange, step) = Exchange::start(&cluster, next_id(), now, &put, &caller());
        let backend = dispatch_of(&step).backend;
        exchange.handle_connected(now);
        exchange.handle_stale_connection(now);
        exchange.handle_transferred(4, 0);
        let step = match side {
            Side::Proxy => exchange.handle_proxy_error(now, error.clone()),
            _ => exchange.handle_client_error(now, error.clone()),
        };
        assert_eq!(step, Step::Fail(error.clone()), "{side_name}");
        let Some(crate::event::Event::Exchange(record)) = exchange.poll_event() else {
            panic!("{side_name}: an ended exchange yields its record");
        };
        assert_eq!(exchange.poll_event(), None, "{side_name}: the record is yielded once");
        assert_eq!(record.fault, Some(side), "{side_name}");
        assert_eq!(record.status, Some(error.status()), "{side_name}");
        assert_eq!(
            record.outcome,
            ExchangeOutcome::Failed { code: error.code },
            "{side_name}"
        );
        assert_eq!(record.request_body_bytes, 4, "{side_name}");
        assert_eq!(record.attempts.len(), 1, "{side_name}: not retried");
        assert_eq!(record.attempts[0].outcome, attempt_outcome, "{side_name}");
        assert_eq!(record.attempts[0].stale_connections, 1, "{side_name}");
        let health = cluster.pools()[0].lock().health().get(backend).expect("tracked");
        assert_eq!(health.consecutive_failures, 0, "{side_name}");
        assert!(health.is_available(), "{side_name}: the backend is not ejected");
    }
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn a_completed_exchange_records_what_the_access_log_needs() {
    // Proves that the record of a forwarded upload carries the operation, bucket, key, route,
    // the local 100 Continue, the attempt's phase times, the status and the bytes.
    let cluster = cluster_with(1, "");
    let put = head("PUT", "/b/k", &[("content-length", "10"), ("expect", "100-continue")]);
    let (mut exchange, step) = Exchange::start(&cluster, next_id(), Instant::from_millis(1), &put, &caller());
    assert!(matches!(step, Step::Forward(_)));
    assert!(
        exchange.continues_locally(),
        "authorised from the head: 100 Continue at once"
    );
    exchange.handle_connected(Instant::from_millis(2));
    exchange.handle_body_started(Instant::from_millis(3));
    exchange.handle_request_sent(Instant::from_millis(5));
    exchange.handle_response_head(Instant::from_millis(9), 200);
    exchange.handle_transferred(10, 0);
    assert_eq!(exchange.poll_event(), None, "no record before the end");
    assert_eq!(exchange.handle_response_done(Instant::from_millis(10)), Step::Done);
    let Some(crate::event::Event::Exchange(record)) = exchange.poll_event() else {
        panic!("an ended exchange yields its record");
    };
    assert_eq!(record.operation, Some(crate::s3::Operation::PutObject));
    assert_eq!(record.bucket.as_deref(), Some("b"));
    assert_eq!(record.key.as_deref(), Some("k"));
    assert_eq!(record.route.map(|route| route.pool), Some(crate::route::PoolId(0)));
    assert!(record.continued_locally);
    assert_eq!(record.status, Some(200));
    assert_eq!(record.fault, None);
    assert_eq!(record.request_body_bytes, 10);
    assert_eq!(record.duration(), Duration::from_millis(9));
    let attempt = &record.attempts[0];
    assert_eq!(attempt.connected_at, Some(Instant::from_millis(2)));
    assert_eq!(attempt.sent_at, Some(Instant::from_millis(5)));
    assert_eq!(attempt.first_byte, Some(Duration::from_millis(4)), "from sent to head");
    assert_eq!(attempt.outcome, AttemptOutcome::Response { status: 200 });
    assert_eq!(record.retries(), 0);
}

#[test]
fn denied_and_malformed_requests_are_rejected_without_a_backend() {
    // Proves the auth seam decides from the head alone, and bad input gets a 4xx.
    let cluster = cluster_with(2, "");
    cluster.set_authorizer(Box::new(DenyAll));
    let now = Instant::from_millis(1);
    let put = head("PUT", "/b/k", &[("content-length", "5"), ("expect", "100-continue")]);
    let (exchange, step) = Exchange::start(&cluster, next_id(), now, &put, &caller());
    assert!(matches!(&step, Step::Reject(error) if error.code == ErrorCode::AccessDenied && error.status() == 403));
    assert!(exchange.decision().is_some_and(|decision| !decision.is_allowed()));
    assert_eq!(exchange.attempts(), 0);

    cluster.set_authorizer(Box::new(TrustAll));
    let bad = head("GET", "/b/a%zz", &[]);
    let (exchange, step) = Exchange::start(&cluster, next_id(), now, &bad, &caller());
    assert!(matches!(&step, Step::Reject(error) if error.status() == 400));
    assert_eq!(
        exchange.outcome(),
        Some(&ExchangeOutcome::Rejected {
            code: ErrorCode::InvalidUri
        })
    );
    let requests: u64 = cluster.pools()[0]
        .lock()
        .balancer()
        .backends()
        .iter()
        .map(|b| b.requests_total())
        .sum();
    assert_eq!(requests, 0, "no backend was contacted");
}

#[test]
fn a_dead_node_is_ejected_and_then_avoided() {
    // Proves the loop balance → health → balance: after enough failures the node gets no picks.
    // Round-robin, because p2c's failure penalty alone already steers around the dead node
    // before it fails twice in a row.
    let cluster = cluster_with(
        3,
        "[balance]\nalgorithm = \"round-robin\"\n[health.passive]\nconsecutive_failures = 2\n",
    );
    let dead = cluster.pools()[0].lock().balancer().backends()[0].id();
    let mut now = Instant::from_millis(1);
    let mut dispatched_to_dead_after_ejection = 0;
    for _ in 0..200 {
        now = now + Duration::from_millis(10);
        let ejected = !cluster.pools()[0].lock().health().is_available(dead);
        let (mut exchange, mut step) = start(&cluster, now, "GET", "/b/k", &[]);
        loop {
            match &step {
                Step::Forward(dispatch) | Step::Retry(dispatch) => {
                    if dispatch.backend == dead {
                        dispatched_to_dead_after_ejection += usize::from(ejected);
                        step = exchange.handle_connect_failed(now);
                    } else {
                        exchange.handle_request_sent(now);
                        step = exchange.handle_response_head(now, 200);
                    }
                }
                Step::Return => step = exchange.handle_response_done(now),
                Step::Done => break,
                other => panic!("a GET failed although two nodes are healthy: {other:?}"),
            }
        }
    }
    assert!(!cluster.pools()[0].lock().health().is_available(dead));
    assert_eq!(dispatched_to_dead_after_ejection, 0);
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn an_exhausted_budget_stops_retries() {
    // Proves that a brown-out does not become a retry storm: with no budget, no retry.
    let cluster = cluster_with(3, "[retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0.0\n");
    let now = Instant::from_millis(1);
    let (mut exchange, _) = start(&cluster, now, "GET", "/b/k", &[]);
    let step = exchange.handle_connect_failed(now);
    assert!(
        matches!(&step, Step::Fail(error) if error.code == ErrorCode::ServiceUnavailable),
        "{step:?}"
    );
    assert!(exchange.retry_budget_exhausted());
}

#[test]
fn upload_time_does_not_count_as_node_latency() {
    // Proves the latency fed to peak-EWMA runs from "request fully sent" to the response
    // head: a 10 s upload answered 5 ms after its last byte is a 5 ms node, not a 10 s one.
    let cluster = cluster_with(1, "");
    let start_at = Instant::from_millis(1_000);
    let put = head("PUT", "/b/k", &[("content-length", "1000000000")]);
    let (mut exchange, step) = Exchange::start(&cluster, next_id(), start_at, &put, &caller());
    let backend = dispatch_of(&step).backend;
    exchange.handle_connected(start_at);
    exchange.handle_body_started(start_at);
    let sent = start_at + Duration::from_secs(10);
    let answered = sent + Duration::from_millis(5);
    // The runtime learns that the body was sent only when the head arrives.
    exchange.handle_request_sent(sent);
    assert_eq!(exchange.handle_response_head(answered, 200), Step::Return);
    assert_eq!(exchange.handle_response_done(answered), Step::Done);
    let ewma = cluster.pools()[0].lock().balancer().parameters().ewma;
    let estimate = cluster.pools()[0]
        .lock()
        .balancer()
        .get(backend)
        .expect("backend")
        .latency_estimate(answered, &ewma);
    assert!(
        estimate < Duration::from_millis(40),
        "estimate {estimate:?} counts the upload"
    );
}

#[test]
fn a_saturated_connection_limit_sheds_without_blaming_the_backend() {
    // Proves the local-limit path: 503 SlowDown to the client, no failure on the backend.
    let cluster = cluster_with(1, "[health.passive]\nconsecutive_failures = 1\n");
    let now = Instant::from_millis(1);
    let (mut exchange, step) = start(&cluster, now, "GET", "/b/k", &[]);
    let backend = dispatch_of(&step).backend;
    let step = exchange.handle_local_limit(now);
    assert!(matches!(&step, Step::Fail(error) if error.code == ErrorCode::SlowDown && error.status() == 503));
    assert!(cluster.pools()[0].lock().health().is_available(backend));
    assert_eq!(
        cluster.pools()[0]
            .lock()
            .balancer()
            .get(backend)
            .map(|b| b.errors_total()),
        Some(0)
    );
    assert_eq!(in_flight(&cluster), 0);
}

#[test]
fn the_total_deadline_wins_when_it_is_sooner() {
    // Proves poll_timeout reports the earlier of the phase deadline and the total deadline.
    let cluster = cluster_with(1, "[timeouts]\ntotal = \"1s\"\n");
    let now = Instant::from_millis(0);
    let (mut exchange, _) = start(&cluster, now, "GET", "/b/k", &[]);
    assert_eq!(
        exchange.poll_timeout(),
        Some((now + Duration::from_secs(1), Phase::Total))
    );
    let step = exchange.handle_timeout(now + Duration::from_secs(1), Phase::Total);
    assert!(matches!(&step, Step::Fail(error) if error.code == ErrorCode::GatewayTimeout));
}

#[test]
fn core_owns_the_connect_first_byte_and_total_deadlines() {
    // Proves the timer contract: the connect deadline runs from the dial, not while the attempt
    // waits for a free connection slot (the proxy's own limit); the first-byte deadline runs
    // once the request is sent; the driver's wake-up at the reported instant is handled as
    // the phase that is due, and one that comes early changes nothing.
    let cluster = cluster_with(1, "[timeouts]\ntotal = \"100s\"\n");
    let t0 = Instant::from_millis(0);
    let (mut exchange, _) = start(&cluster, t0, "GET", "/b/k", &[]);
    assert_eq!(
        exchange.poll_timeout(),
        Some((t0 + Duration::from_secs(2), Phase::BackendConnect))
    );
    exchange.handle_waiting_for_connection(t0);
    assert_eq!(
        exchange.poll_timeout(),
        Some((t0 + Duration::from_secs(100), Phase::Total)),
        "no connect deadline while waiting for a slot"
    );
    let dial = t0 + Duration::from_secs(1);
    exchange.handle_dialing(dial);
    assert_eq!(
        exchange.poll_timeout(),
        Some((dial + Duration::from_secs(2), Phase::BackendConnect))
    );
    assert_eq!(
        exchange.handle_deadline(dial + Duration::from_secs(1)),
        Step::Continue,
        "not due yet"
    );
    exchange.handle_connected(dial);
    let sent = dial + Duration::from_millis(5);
    exchange.handle_request_sent(sent);
    let (due, phase) = exchange.poll_timeout().expect("first byte");
    assert_eq!((due, phase), (sent + Duration::from_secs(60), Phase::BackendFirstByte));
    // Handled as a first-byte timeout: a GET is retried (here on the only backend again).
    let step = exchange.handle_deadline(due);
    assert!(matches!(step, Step::Retry(_)), "{step:?}");
    assert_eq!(exchange.attempts(), 2);
    assert_eq!(exchange.tried().len(), 1);
}

mod failover;
mod hedge;
mod swarm;
mod verify;

#[test]
fn a_form_upload_is_authorised_for_its_form_key_and_planned_as_a_re_signed_form() {
    // Proves PostObject is decided like a PutObject of the form's key: a rule that allows
    // writes under `uploads/` only lets the form through for such a key, and the plan re-signs
    // the form (its length is the runtime's to set, nothing signs its payload).
    let text = "[auth]\nmode = \"policy\"\n\n[[policy.rules]]\nname = \"uploads\"\neffect = \"allow\"\n\
                identity = { anonymous = true }\nactions = [\"write\"]\nbuckets = [\"data\"]\nkeys = [\"uploads/*\"]\n\n\
                [health.active]\nenabled = false\n\n[[pools]]\nname = \"dc1\"\nbackends = [\"10.0.0.1:9000\"]\n";
    let config = Config::from_toml(text, "test.toml").expect("valid test config");
    let cluster = ProxyState::from_config(&config, Instant::EPOCH, 0).expect("state");
    cluster.set_authorizer(Box::new(crate::auth::policy::Policy::new(&config.policy)));
    let form = head(
        "POST",
        "/data",
        &[
            ("content-type", "multipart/form-data; boundary=B"),
            ("content-length", "900"),
        ],
    );
    let (exchange, step) = Exchange::start_form(
        cluster.snapshot(),
        next_id(),
        Instant::EPOCH,
        &form,
        &caller(),
        "uploads/a.jpg".into(),
    );
    let Step::Forward(dispatch) = step else {
        panic!("allowed under uploads/: {step:?}")
    };
    assert_eq!(
        exchange.request().and_then(|request| request.key.as_deref()),
        Some("uploads/a.jpg")
    );
    assert_eq!(dispatch.plan.body, forward::BodyFraming::Form);
    assert_eq!(dispatch.plan.payload_hash, forward::PayloadHash::Unsigned);
    assert!(
        !dispatch.plan.headers.contains_key("content-length"),
        "the runtime sets the re-signed form's length"
    );
    assert_eq!(dispatch.plan.uri, "/data");
    let (_, step) = Exchange::start_form(
        cluster.snapshot(),
        next_id(),
        Instant::EPOCH,
        &form,
        &caller(),
        "secret/a.jpg".into(),
    );
    assert!(
        matches!(&step, Step::Reject(error) if error.code == ErrorCode::AccessDenied),
        "{step:?}"
    );
    // A request that is no form upload is not taken for one.
    let put = head("PUT", "/data/uploads/a.jpg", &[("content-length", "1")]);
    let (_, step) = Exchange::start_form(
        cluster.snapshot(),
        next_id(),
        Instant::EPOCH,
        &put,
        &caller(),
        "uploads/a.jpg".into(),
    );
    assert!(
        matches!(&step, Step::Reject(error) if error.code == ErrorCode::InvalidRequest),
        "{step:?}"
    );
}
