//! Reconfiguration in place, and what it must keep.
use super::*;
use crate::auth::{Caller, TrustAll};
use crate::exchange::{Exchange, Step};

fn config(pools: &str) -> Config {
    let text = format!(
        "[health.active]\nenabled = false\n[health.passive]\nconsecutive_failures = 1\nbase_ejection_time = \"30s\"\n{pools}"
    );
    Config::from_toml(&text, "test.toml").expect("valid test config")
}

fn get(state: &ProxyState, now: Instant, id: u64) -> (Exchange, Step) {
    let head = http::Request::get("/b/k")
        .header("host", "127.0.0.1")
        .body(())
        .expect("valid request")
        .into_parts()
        .0;
    Exchange::start(state, id, now, &head, &Caller::anonymous(None))
}

const DC1: &str = "[[pools]]\nname = \"dc1\"\nbackends = [\"10.0.0.1:9000\", \"10.0.0.2:9000\", \"10.0.0.3:9000\"]\n";

#[test]
fn a_reload_keeps_what_backends_learned() {
    // Proves reconfiguration in place: across a reload that adds a pool in front (so ids
    // shift) and removes one backend, an ejected backend stays ejected, latency estimates
    // and in-flight counts stay, an exchange in flight on the removed backend ends cleanly
    // and the backend then leaves, and the new pool starts fresh.
    let state = ProxyState::from_config(&config(DC1), Instant::EPOCH, 7).expect("state");
    state.set_authorizer(Box::new(TrustAll));
    let now = Instant::from_millis(10);
    // One backend fails once (ejected), one answers slowly and stays in flight.
    let (mut failing, step) = get(&state, now, 1);
    let Step::Forward(failed) = step else {
        panic!("{step:?}")
    };
    failing.handle_connect_failed(now);
    let (mut slow, step) = get(&state, now, 2);
    let Step::Forward(slow_dispatch) = step else {
        panic!("{step:?}")
    };
    let cell = state.pool(PoolId(0)).expect("dc1");
    let before = {
        let pool = cell.lock();
        assert!(!pool.health().is_available(failed.backend), "ejected before the reload");
        pool.balancer().in_flight_total()
    };
    let kept: Vec<&str> = ["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"]
        .into_iter()
        .filter(|address| *address != slow_dispatch.address || *address == failed.address)
        .collect();
    let reloaded = format!(
        "[[pools]]\nname = \"dc0\"\nbackends = [\"10.1.0.1:9000\"]\n[[pools]]\nname = \"dc1\"\nbackends = [{}]\n",
        kept.iter()
            .map(|address| format!("\"{address}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    state
        .reconfigure(&config(&reloaded), Box::new(TrustAll), now)
        .expect("reload applies");
    let same = state.pool(PoolId(1)).expect("dc1 moved to index 1");
    assert!(Arc::ptr_eq(&cell, &same), "the pool that stays is the same pool");
    {
        let pool = same.lock();
        assert_eq!(pool.id(), PoolId(1));
        assert!(
            !pool.health().is_available(failed.backend),
            "still ejected after the reload"
        );
        assert_eq!(
            pool.balancer().in_flight_total(),
            before,
            "in-flight counts carried over"
        );
    }
    let fresh = state.pool(PoolId(0)).expect("dc0");
    assert_eq!(fresh.lock().name(), "dc0");
    assert_eq!(fresh.lock().balancer().in_flight_total(), 0);
    // The exchange in flight on the removed backend ends on its pool; the backend leaves.
    let later = Instant::from_millis(20);
    slow.handle_request_sent(later);
    assert_eq!(slow.handle_response_head(later, 200), Step::Return);
    assert_eq!(slow.handle_response_done(later), Step::Done);
    // The failed GET was retried elsewhere; let its client leave.
    failing.handle_client_gone(later);
    let pool = same.lock();
    assert_eq!(pool.balancer().in_flight_total(), 0);
    if slow_dispatch.address != failed.address {
        assert!(
            pool.balancer().get(slow_dispatch.backend).is_none(),
            "a removed backend leaves once idle"
        );
    }
}

/// The backends `state` picks for 300 GETs, up to eight in flight, each answered after a
/// latency that depends on its backend; `reload` is called once, after the 150th pick.
fn picks_under_load(state: &ProxyState, mut reload: impl FnMut(&ProxyState, Instant)) -> Vec<String> {
    let mut picks = Vec::new();
    let mut in_flight: std::collections::VecDeque<(Exchange, Instant)> = std::collections::VecDeque::new();
    let mut now = Instant::from_millis(1);
    for id in 0..300u64 {
        now = now + Duration::from_millis(1);
        while in_flight.front().is_some_and(|(_, due)| *due <= now) || in_flight.len() >= 8 {
            let (mut exchange, due) = in_flight.pop_front().expect("not empty");
            let at = due.max(now);
            exchange.handle_request_sent(at);
            assert_eq!(exchange.handle_response_head(at, 200), Step::Return);
            assert_eq!(exchange.handle_response_done(at), Step::Done);
        }
        if id == 150 {
            reload(state, now);
        }
        let (exchange, step) = get(state, now, id);
        let Step::Forward(dispatch) = step else {
            panic!("{step:?}")
        };
        // Backend 1 answers in 2 ms, 2 in 4 ms, 3 in 6 ms: the picks follow load and latency.
        let digit = u64::from(dispatch.address.as_bytes()[7] - b'0');
        in_flight.push_back((exchange, now + Duration::from_millis(2 * digit)));
        picks.push(dispatch.address.clone());
    }
    picks
}

#[test]
fn a_reload_during_load_changes_no_pick() {
    // Proves that a reload in place leaves the balancer's course alone: under load, a
    // proxy reloaded halfway (with an unrelated setting changed and a pool added behind)
    // picks exactly the backends the same proxy picks without the reload (latency
    // estimates, in-flight counts and the pool's RNG all carry over), and the picks are
    // spread over every backend, so the comparison means something.
    let steady = ProxyState::from_config(&config(DC1), Instant::EPOCH, 7).expect("state");
    steady.set_authorizer(Box::new(TrustAll));
    let reloaded = ProxyState::from_config(&config(DC1), Instant::EPOCH, 7).expect("state");
    reloaded.set_authorizer(Box::new(TrustAll));
    let unchanged = picks_under_load(&steady, |_, _| {});
    let across = picks_under_load(&reloaded, |state, now| {
        let text =
            format!("[retry]\nbudget_ratio = 0.5\n{DC1}[[pools]]\nname = \"dc9\"\nbackends = [\"10.9.0.1:9000\"]\n");
        state
            .reconfigure(&config(&text), Box::new(TrustAll), now)
            .expect("reload applies");
    });
    assert_eq!(unchanged, across, "the reload changed which backends were picked");
    for backend in ["10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"] {
        assert!(unchanged.iter().any(|pick| pick == backend), "{backend} never picked");
    }
}

#[test]
fn a_refused_reload_changes_nothing() {
    // Proves that a configuration the state cannot apply leaves the running one whole.
    let state = ProxyState::from_config(&config(DC1), Instant::EPOCH, 7).expect("state");
    let mut bad = config(&format!(
        "{DC1}[[pools]]\nname = \"dc2\"\nbackends = [\"10.0.0.9:9000\"]\n"
    ));
    // Past parsing, as a caller could build it: two pools of one name.
    bad.pools[1].name = "dc1".to_owned();
    assert!(state.reconfigure(&bad, Box::new(TrustAll), Instant::EPOCH).is_err());
    let pools = state.pools();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].lock().balancer().backends().len(), 3);
}

#[test]
fn callers_whose_clock_readings_cross_are_ordered_by_the_pool() {
    // Proves the pool orders time under its lock: threads read the clock before they take it,
    // so one may arrive with a `now` behind another's; the machines inside never see time go
    // backwards (their debug assertions would fire), and every exchange still ends cleanly.
    let state = ProxyState::from_config(&config(DC1), Instant::EPOCH, 7).expect("state");
    state.set_authorizer(Box::new(TrustAll));
    let (mut later, step) = get(&state, Instant::from_millis(10), 1);
    assert!(matches!(step, Step::Forward(_)), "{step:?}");
    later.handle_request_sent(Instant::from_millis(10));
    assert_eq!(later.handle_response_head(Instant::from_millis(12), 200), Step::Return);
    assert_eq!(later.handle_response_done(Instant::from_millis(12)), Step::Done);
    // A thread that read the clock at 5 ms only now takes the lock.
    let (mut earlier, step) = get(&state, Instant::from_millis(5), 2);
    assert!(matches!(step, Step::Forward(_)), "{step:?}");
    earlier.handle_request_sent(Instant::from_millis(6));
    assert_eq!(earlier.handle_response_head(Instant::from_millis(7), 200), Step::Return);
    assert_eq!(earlier.handle_response_done(Instant::from_millis(7)), Step::Done);
    state.handle_timeout(Instant::from_millis(3));
    let cell = state.pool(PoolId(0)).expect("dc1");
    assert_eq!(cell.lock().balancer().in_flight_total(), 0);
}
