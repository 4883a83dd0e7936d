//! A CompleteMultipartUpload answered 404: verified against the object before the client hears.

use std::time::Duration;

use super::*;
use crate::event::Event as CoreEvent;

/// A completion of two parts and the ETag of the object it makes.
fn completion() -> (String, String) {
    let body = "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"00112233445566778899aabbccddeeff\"</ETag></Part>\
                <Part><PartNumber>2</PartNumber><ETag>\"ffeeddccbbaa99887766554433221100\"</ETag></Part></CompleteMultipartUpload>";
    let etag = crate::s3::completion::multipart_etag(body.as_bytes()).expect("readable");
    (body.to_owned(), etag)
}

/// A completion sent whole and answered `status`: the exchange and the step after the head.
fn answered(cluster: &ProxyState, status: u16) -> (Exchange, Step, Instant) {
    let t0 = Instant::from_millis(10);
    let (mut exchange, step) = start(
        cluster,
        t0,
        "POST",
        "/bkt/dir/obj?uploadId=u1",
        &[
            ("content-length", "300"),
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ],
    );
    dispatch_of(&step);
    assert_eq!(
        exchange.keeps_request_body(),
        Some(crate::s3::completion::COMPLETION_BODY_MAX)
    );
    exchange.handle_connected(t0);
    exchange.handle_body_started(t0);
    exchange.handle_request_sent(t0 + Duration::from_millis(1));
    let at = t0 + Duration::from_millis(4);
    let step = exchange.handle_response_head(at, status);
    (exchange, step, at)
}

fn record(exchange: &mut Exchange) -> crate::event::ExchangeRecord {
    loop {
        match exchange.poll_event() {
            Some(CoreEvent::Exchange(record)) => return *record,
            Some(_) => {}
            None => panic!("no record"),
        }
    }
}

#[test]
fn a_lost_completion_is_answered_as_the_success_it_was() {
    // Proves the recovery: a completion answered NoSuchUpload is verified with a HEAD of the
    // object on the same backend (SSE-C headers kept, nothing else); an object whose ETag is
    // the one the listed parts make gets the client a 200 CompleteMultipartUploadResult, the
    // attempt is recorded once as the backend's 404, and nothing stays in flight.
    let cluster = cluster_with(3, "");
    let (mut exchange, step, at) = answered(&cluster, 404);
    let backend = exchange.backend().expect("an attempt");
    let Step::Verify(check) = step else {
        panic!("expected a verification, got {step:?}");
    };
    assert_eq!(check.backend, backend);
    assert_eq!(check.plan.method, http::Method::HEAD);
    assert_eq!(check.plan.uri, "/bkt/dir/obj");
    assert_eq!(check.plan.body, crate::forward::BodyFraming::Empty);
    let names: Vec<&str> = check.plan.headers.keys().map(|name| name.as_str()).collect();
    assert_eq!(names, ["x-amz-server-side-encryption-customer-algorithm"]);
    assert_eq!(
        exchange.poll_timeout(),
        None,
        "no first-byte deadline on the held answer"
    );
    assert_eq!(in_flight(&cluster), 1, "the held answer's attempt is open");

    let (body, etag) = completion();
    let step = exchange.handle_verified(
        at + Duration::from_millis(2),
        Some(&format!("\"{etag}\"")),
        Some(body.as_bytes()),
    );
    let Step::Answer(answer) = step else {
        panic!("expected the recovered success, got {step:?}");
    };
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("<Key>dir/obj</Key>"), "{}", answer.body);
    assert!(
        answer.body.contains(&format!("<ETag>&quot;{etag}&quot;</ETag>")),
        "{}",
        answer.body
    );
    assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::Recovered));
    assert_eq!(in_flight(&cluster), 0);
    let record = record(&mut exchange);
    assert_eq!(record.status, Some(200));
    assert_eq!(record.fault, None);
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Response { status: 404 });
}

#[test]
fn an_object_that_is_not_this_completion_leaves_the_404_standing() {
    // Proves the check is strict: an object with another ETag (overwritten since, or another
    // upload), no object, or a completion body the proxy could not keep all give the client
    // the backend's own answer.
    let (body, _) = completion();
    for (etag, kept) in [
        (Some("\"ffffffffffffffffffffffffffffffff-2\""), Some(body.as_bytes())),
        (None, Some(body.as_bytes())),
        (Some("\"whatever\""), None),
    ] {
        let cluster = cluster_with(2, "");
        let (mut exchange, step, at) = answered(&cluster, 404);
        assert!(matches!(step, Step::Verify(_)), "{step:?}");
        let step = exchange.handle_verified(at, etag, kept);
        assert_eq!(step, Step::Return, "{etag:?}");
        assert_eq!(exchange.handle_response_done(at + Duration::from_millis(1)), Step::Done);
        assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::Completed { status: 404 }));
        assert_eq!(in_flight(&cluster), 0);
    }
}

#[test]
fn only_a_completion_answered_404_is_verified() {
    // Proves the scope: a completion's other answers, and a 404 to anything else, are returned
    // at once; and a client that leaves, or the total deadline passing, during the
    // verification ends the exchange once.
    let cluster = cluster_with(2, "");
    let (mut done, step, at) = answered(&cluster, 200);
    assert_eq!(step, Step::Return);
    assert_eq!(done.handle_response_done(at), Step::Done);
    let (mut get, _) = start(&cluster, Instant::from_millis(1), "GET", "/bkt/obj", &[]);
    assert_eq!(get.keeps_request_body(), None);
    get.handle_connected(Instant::from_millis(1));
    get.handle_request_sent(Instant::from_millis(1));
    assert_eq!(get.handle_response_head(Instant::from_millis(2), 404), Step::Return);
    assert_eq!(get.handle_response_done(Instant::from_millis(3)), Step::Done);

    let (mut exchange, _, at) = answered(&cluster, 404);
    assert_eq!(exchange.handle_client_gone(at), Step::Done);
    assert_eq!(exchange.outcome(), Some(&ExchangeOutcome::ClientGone));
    let (mut exchange, _, at) = answered(&cluster, 404);
    let step = exchange.handle_timeout(at, Phase::Total);
    assert!(
        matches!(step, Step::Fail(ref error) if error.code == ErrorCode::GatewayTimeout),
        "{step:?}"
    );
    assert_eq!(in_flight(&cluster), 0);
}
