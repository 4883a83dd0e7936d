//! Retries that cross into the failover pool when the request's own pool has nothing left.

use std::time::Duration;

use super::*;

/// Two pools of two backends, dc2 failing over to dc1 (and dc1 to dc2), `failover` as given,
/// the caller routed to dc2 by the default pool.
fn two_zones(failover: &str, retry: &str) -> ProxyState {
    let text = format!(
        "[routing]\ndefault_pool = \"dc2\"\nfailover = \"{failover}\"\n\n{retry}\n\n[health.active]\nenabled = false\n\n\
         [[pools]]\nname = \"dc1\"\nzone = \"dc1\"\nfailover_to = [\"dc2\"]\nbackends = [\"10.0.1.1:9000\", \"10.0.1.2:9000\"]\n\n\
         [[pools]]\nname = \"dc2\"\nzone = \"dc2\"\nfailover_to = [\"dc1\"]\nbackends = [\"10.0.2.1:9000\", \"10.0.2.2:9000\"]\n"
    );
    let config = Config::from_toml(&text, "test.toml").expect("valid test config");
    let cluster = ProxyState::from_config(&config, Instant::EPOCH, 3).expect("state");
    cluster.set_authorizer(Box::new(TrustAll));
    cluster
}

const DC1: PoolId = PoolId(0);
const DC2: PoolId = PoolId(1);

/// Start `method path`, fail its first two attempts at connect, and return the third step.
fn third_try(cluster: &ProxyState, method: &str) -> (Exchange, Vec<Dispatch>, Step) {
    let now = Instant::from_millis(1);
    let (mut exchange, first) = start(cluster, now, method, "/b/k", &[]);
    let first = dispatch_of(&first).clone();
    let second = exchange.handle_connect_failed(now);
    let second = dispatch_of(&second).clone();
    let third = exchange.handle_connect_failed(now + Duration::from_millis(300));
    (exchange, vec![first, second], third)
}

#[test]
fn a_get_whose_pool_has_no_untried_backend_is_retried_in_the_failover_pool() {
    // Proves the cross-pool retry: both dc2 backends refuse connections (health has not yet
    // said so), and the third attempt goes to dc1, is recorded there, and the exchange's
    // route says it failed over from dc2.
    let cluster = two_zones("when-unavailable", "");
    let (mut exchange, tried, third) = third_try(&cluster, "GET");
    assert!(tried.iter().all(|dispatch| dispatch.pool == DC2), "{tried:?}");
    assert_ne!(
        tried[0].backend, tried[1].backend,
        "the second try is the other dc2 node"
    );
    let third = dispatch_of(&third).clone();
    assert_eq!(third.pool, DC1);
    assert!(matches!(exchange.state, State::Attempt { .. }));
    exchange.handle_connected(Instant::from_millis(302));
    exchange.handle_request_sent(Instant::from_millis(302));
    assert_eq!(
        exchange.handle_response_head(Instant::from_millis(306), 200),
        Step::Return
    );
    assert_eq!(exchange.handle_response_done(Instant::from_millis(306)), Step::Done);
    let route = exchange.route().copied().expect("routed");
    assert_eq!((route.pool, route.failed_over_from), (DC1, Some(DC2)));
    let record = std::iter::from_fn(|| exchange.poll_event())
        .find_map(|event| match event {
            Event::Exchange(record) => Some(record),
            _ => None,
        })
        .expect("finished");
    let pools: Vec<PoolId> = record.attempts.iter().map(|attempt| attempt.pool).collect();
    assert_eq!(pools, vec![DC2, DC2, DC1]);
    let pools = cluster.pools();
    let dc1 = pools[DC1.0].lock();
    let served = dc1.balancer().get(third.backend).expect("a dc1 backend");
    assert_eq!(
        (served.requests_total(), served.errors_total(), served.in_flight()),
        (1, 0, 0)
    );
    drop(dc1);
    let dc2 = pools[DC2.0].lock();
    let failed: u64 = dc2
        .balancer()
        .backends()
        .iter()
        .map(|backend| backend.errors_total())
        .sum();
    assert_eq!(failed, 2, "each dc2 failure recorded once, in dc2");
    assert_eq!(dc2.balancer().in_flight_total(), 0);
}

#[test]
fn without_failover_a_retry_stays_in_its_pool() {
    // Proves pools stay apart when the failover policy says so: the third try is a dc2 node
    // again.
    let cluster = two_zones("never", "");
    let (_exchange, _, third) = third_try(&cluster, "GET");
    assert_eq!(dispatch_of(&third).pool, DC2);
}

#[test]
fn a_retry_stays_in_its_pool_while_an_untried_backend_there_is_available() {
    // Proves a single failure does not send a request across: the second try is dc2's other
    // node, not dc1.
    let cluster = two_zones("when-unavailable", "");
    let now = Instant::from_millis(1);
    let (mut exchange, first) = start(&cluster, now, "GET", "/b/k", &[]);
    assert_eq!(dispatch_of(&first).pool, DC2);
    let second = exchange.handle_connect_failed(now);
    assert_eq!(dispatch_of(&second).pool, DC2);
}

#[test]
fn a_cross_pool_retry_draws_on_the_failing_pool_budget_and_stops_when_it_is_spent() {
    // Proves the retry budget still bounds retries that leave the pool: with no budget the
    // first failure is the client's answer, nothing is sent to dc1.
    let cluster = two_zones(
        "when-unavailable",
        "[retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0.0\n",
    );
    let now = Instant::from_millis(1);
    let (mut exchange, _) = start(&cluster, now, "GET", "/b/k", &[]);
    let step = exchange.handle_connect_failed(now);
    assert!(matches!(step, Step::Fail(_)), "{step:?}");
    assert!(exchange.retry_budget_exhausted());
    assert_eq!(
        cluster.pools()[DC1.0].lock().balancer().backends()[0].requests_total(),
        0
    );
    assert_eq!(
        cluster.pools()[DC1.0].lock().balancer().backends()[1].requests_total(),
        0
    );
}

#[test]
fn a_request_the_backend_may_have_acted_on_never_crosses() {
    // Proves a cross-pool retry is only a retry the policy already allows: a POST that
    // reached dc2 and timed out waiting for its answer is not sent to dc1.
    let cluster = two_zones("when-unavailable", "");
    let now = Instant::from_millis(1);
    let (mut exchange, _) = start(&cluster, now, "POST", "/b/k?uploads", &[]);
    exchange.handle_connected(now);
    exchange.handle_request_sent(now);
    let step = exchange.handle_timeout(now + Duration::from_secs(61), Phase::BackendFirstByte);
    assert!(matches!(step, Step::Fail(_)), "{step:?}");
    assert_eq!(exchange.route().map(|route| route.pool), Some(DC2));
}
