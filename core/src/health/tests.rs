//! Health machine units and properties.

use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;

const PASSIVE: PassiveParameters = PassiveParameters {
    consecutive_failures: 3,
    base_ejection_time: Duration::from_secs(10),
    max_ejection_time: Duration::from_secs(25),
    max_ejected_percent: 50,
    probes_end_ejection: false,
};

const ACTIVE: ActiveParameters = ActiveParameters {
    interval: Duration::from_secs(5),
    jitter: Duration::from_millis(500),
    timeout: Duration::from_secs(1),
    healthy_threshold: 2,
    unhealthy_threshold: 2,
};

fn machine(passive: Option<PassiveParameters>, active: Option<ActiveParameters>, count: u64) -> Health {
    let mut health = Health::new(HealthParameters {
        passive,
        active,
        failures: crate::outcome::StatusSet::TRANSIENT,
    });
    let mut rng = SmallRng::seed_from_u64(1);
    for id in 0..count {
        health.add(BackendId(id), Instant::EPOCH, &mut rng);
    }
    health
}

fn drain(health: &mut Health) -> Vec<HealthEvent> {
    std::iter::from_fn(|| health.poll_event()).collect()
}

const FAIL: AttemptOutcome = AttemptOutcome::Response { status: 500 };
const OK: AttemptOutcome = AttemptOutcome::Response { status: 200 };

#[test]
fn consecutive_failures_eject_and_a_success_resets_the_count() {
    // Proves the passive rule: N failures in a row eject; an intervening success does not.
    let mut health = machine(Some(PASSIVE), None, 4);
    let backend = BackendId(0);
    let now = Instant::from_millis(100);
    health.handle_outcome(now, backend, FAIL);
    health.handle_outcome(now, backend, FAIL);
    health.handle_outcome(now, backend, OK);
    health.handle_outcome(now, backend, FAIL);
    health.handle_outcome(now, backend, AttemptOutcome::Response { status: 404 });
    health.handle_outcome(now, backend, FAIL);
    health.handle_outcome(now, backend, AttemptOutcome::Abandoned);
    health.handle_outcome(now, backend, FAIL);
    assert!(
        health.is_available(backend),
        "client errors reset, abandonments do not count"
    );
    health.handle_outcome(now, backend, AttemptOutcome::ConnectFailed);
    assert!(!health.is_available(backend));
    let until = now + Duration::from_secs(10);
    assert_eq!(
        drain(&mut health),
        vec![HealthEvent::Transition {
            backend,
            available: false,
            reason: TransitionReason::Ejected { until }
        }]
    );
    assert_eq!(health.poll_timeout(), Some(until));
    let mut rng = SmallRng::seed_from_u64(0);
    health.handle_timeout(until, &mut rng);
    assert!(health.is_available(backend));
    assert_eq!(
        drain(&mut health),
        vec![HealthEvent::Transition {
            backend,
            available: true,
            reason: TransitionReason::EjectionEnded
        }]
    );
}

#[test]
fn ejection_time_grows_is_capped_and_is_forgiven() {
    // Proves base × n growth, the cap, and the decay of n after quiet periods.
    let mut health = machine(Some(PASSIVE), None, 2);
    let backend = BackendId(1);
    let mut rng = SmallRng::seed_from_u64(0);
    let mut now = Instant::EPOCH;
    let mut lengths = Vec::new();
    for _ in 0..4 {
        for _ in 0..3 {
            health.handle_outcome(now, backend, FAIL);
        }
        let until = health.get(backend).and_then(|h| h.ejected_until).expect("ejected");
        lengths.push(until - now);
        now = until;
        health.handle_timeout(now, &mut rng);
    }
    let secs: Vec<u64> = lengths.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![10, 20, 25, 25]);
    // Stay in for two base periods: two ejections are forgiven (4 -> 2), so the next is 3 × 10 s
    // capped at 25 s; after a long quiet time, the next ejection is a first one again.
    now = now + Duration::from_secs(20);
    for _ in 0..3 {
        health.handle_outcome(now, backend, FAIL);
    }
    assert_eq!(health.get(backend).map(|h| h.ejections), Some(3));
    let until = health.get(backend).and_then(|h| h.ejected_until).expect("ejected");
    health.handle_timeout(until, &mut rng);
    now = until + Duration::from_secs(600);
    for _ in 0..3 {
        health.handle_outcome(now, backend, FAIL);
    }
    assert_eq!(health.get(backend).map(|h| h.ejections), Some(1));
}

#[test]
fn the_ejected_share_is_capped_but_one_may_always_go() {
    // Proves max_ejected_percent, with the at-least-one rule for small pools.
    let mut health = machine(Some(PASSIVE), None, 4);
    for id in 0..4 {
        for _ in 0..3 {
            health.handle_outcome(Instant::EPOCH, BackendId(id), FAIL);
        }
    }
    assert_eq!(health.ejected_count(), 2, "50% of 4");
    let refused: Vec<BackendId> = std::iter::from_fn(|| health.poll_event())
        .filter_map(|event| match event {
            HealthEvent::EjectionRefused { backend } => Some(backend),
            _ => None,
        })
        .collect();
    assert!(
        refused.contains(&BackendId(2)) && refused.contains(&BackendId(3)) && !refused.contains(&BackendId(0)),
        "the backends over the cap are refused, and say so: {refused:?}"
    );
    let mut tight = PASSIVE;
    tight.max_ejected_percent = 10;
    let mut small = machine(Some(tight), None, 3);
    for id in 0..3 {
        for _ in 0..3 {
            small.handle_outcome(Instant::EPOCH, BackendId(id), FAIL);
        }
    }
    assert_eq!(
        small.ejected_count(),
        1,
        "10% of 3 rounds down to 0, but one may always go"
    );
}

#[test]
fn probes_are_scheduled_timed_out_and_counted() {
    // Proves the active half: scheduling with jitter, timeouts as failures, thresholds, and
    // that a late result for a timed-out probe is ignored.
    let mut health = machine(None, Some(ACTIVE), 1);
    let backend = BackendId(0);
    let mut rng = SmallRng::seed_from_u64(9);
    let first = health.poll_timeout().expect("a probe is scheduled");
    assert!(
        first <= Instant::EPOCH + ACTIVE.interval,
        "first probe within one interval"
    );
    health.handle_timeout(first, &mut rng);
    let events = drain(&mut health);
    let HealthEvent::Probe { probe: first_probe, .. } = events[0] else {
        panic!("expected a probe, got {events:?}");
    };
    // No answer: at first + timeout the probe fails.
    health.handle_timeout(first + ACTIVE.timeout, &mut rng);
    assert!(health.is_available(backend), "one failure is below the threshold");
    health.handle_probe_result(first + ACTIVE.timeout, backend, first_probe, true);
    // The next probe comes one interval ± jitter after the first.
    let second = health.poll_timeout().expect("next probe");
    let gap = second - first;
    assert!(
        gap >= ACTIVE.interval - ACTIVE.jitter && gap <= ACTIVE.interval + ACTIVE.jitter,
        "gap {gap:?}"
    );
    health.handle_timeout(second, &mut rng);
    let HealthEvent::Probe { probe, .. } = drain(&mut health)[0] else {
        panic!("expected a probe");
    };
    health.handle_probe_result(second, backend, probe, false);
    assert!(
        !health.is_available(backend),
        "two failures in a row (the late success was ignored)"
    );
    assert!(matches!(
        drain(&mut health).as_slice(),
        [HealthEvent::Transition {
            available: false,
            reason: TransitionReason::ProbesFailed,
            ..
        }]
    ));
    // Two successes bring it back.
    let mut now = second;
    for _ in 0..2 {
        now = health.poll_timeout().expect("scheduled");
        health.handle_timeout(now, &mut rng);
        let probe = drain(&mut health)
            .into_iter()
            .find_map(|event| match event {
                HealthEvent::Probe { probe, .. } => Some(probe),
                HealthEvent::Transition { .. } | HealthEvent::EjectionRefused { .. } => None,
            })
            .expect("probe");
        health.handle_probe_result(now, backend, probe, true);
    }
    assert!(health.is_available(backend));
    assert!(now > second);
}

/// Eject backend 0 of two at the epoch, then answer every probe with `healthy` until `until`;
/// returns the transitions of backend 0.
fn eject_then_probe(passive: PassiveParameters, healthy: bool, until: Instant) -> (Health, Vec<HealthEvent>) {
    let mut health = machine(Some(passive), Some(ACTIVE), 2);
    let backend = BackendId(0);
    for _ in 0..passive.consecutive_failures {
        health.handle_outcome(Instant::EPOCH, backend, FAIL);
    }
    let mut transitions = Vec::new();
    let mut rng = SmallRng::seed_from_u64(2);
    while let Some(due) = health.poll_timeout().filter(|due| *due <= until) {
        health.handle_timeout(due, &mut rng);
        for event in drain(&mut health) {
            match event {
                HealthEvent::Probe { backend: probed, probe } => {
                    health.handle_probe_result(due, probed, probe, healthy)
                }
                HealthEvent::Transition { backend: moved, .. } if moved == backend => transitions.push(event),
                HealthEvent::Transition { .. } | HealthEvent::EjectionRefused { .. } => {}
            }
        }
        transitions.extend(
            drain(&mut health)
                .into_iter()
                .filter(|event| matches!(event, HealthEvent::Transition { backend: moved, .. } if *moved == backend)),
        );
    }
    (health, transitions)
}

#[test]
fn probe_success_ends_a_passive_ejection_only_when_configured() {
    // Proves both settings: with probes_end_ejection off, a node failing real requests stays
    // out for its ejection time although it answers probes; on, two passing probes (the
    // healthy threshold, about two intervals) end the ejection early; failing probes never do.
    let backend = BackendId(0);
    let within = Instant::EPOCH + (PASSIVE.base_ejection_time - Duration::from_millis(1));
    let (health, transitions) = eject_then_probe(PASSIVE, true, within);
    assert!(!health.is_available(backend), "{transitions:?}");

    let ending = PassiveParameters {
        probes_end_ejection: true,
        ..PASSIVE
    };
    let (health, transitions) = eject_then_probe(ending, false, within);
    assert!(!health.is_available(backend), "failing probes: {transitions:?}");

    let (health, transitions) = eject_then_probe(ending, true, within);
    assert!(health.is_available(backend), "{transitions:?}");
    assert!(
        matches!(
            transitions.last(),
            Some(HealthEvent::Transition {
                available: true,
                reason: TransitionReason::EjectionEnded,
                ..
            })
        ),
        "{transitions:?}"
    );
    assert_eq!(health.get(backend).map(|h| h.consecutive_failures), Some(0));
}

#[derive(Clone, Debug)]
enum Step {
    Outcome { backend: u64, failure: bool },
    Advance { ms: u64 },
    AnswerProbe { healthy: bool },
    Add,
    Remove { backend: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u64..8, any::<bool>()).prop_map(|(backend, failure)| Step::Outcome { backend, failure }),
        3 => (0u64..20_000).prop_map(|ms| Step::Advance { ms }),
        2 => any::<bool>().prop_map(|healthy| Step::AnswerProbe { healthy }),
        1 => Just(Step::Add),
        1 => (0u64..8).prop_map(|backend| Step::Remove { backend }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The ejected share never exceeds the cap; after handle_timeout(now) nothing is overdue;
    /// transitions agree with is_available; probe ids are unique.
    #[test]
    fn health_invariants(
        seed in any::<u64>(),
        probes_end_ejection in any::<bool>(),
        steps in prop::collection::vec(step(), 0..150),
    ) {
        let passive = PassiveParameters { probes_end_ejection, ..PASSIVE };
        let mut health = machine(Some(passive), Some(ACTIVE), 4);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut now = Instant::EPOCH;
        let mut next_id = 4;
        let mut outstanding: Vec<(BackendId, ProbeId)> = Vec::new();
        let mut seen_probes = std::collections::HashSet::new();
        let mut last_available: std::collections::HashMap<BackendId, bool> = std::collections::HashMap::new();
        for step in steps {
            let ejected_before = health.ejected_count();
            match step {
                Step::Outcome { backend, failure } => {
                    health.handle_outcome(now, BackendId(backend), if failure { FAIL } else { OK });
                    if health.ejected_count() > ejected_before {
                        let allowed = (health.backends.len() * usize::from(PASSIVE.max_ejected_percent) / 100).max(1);
                        prop_assert!(health.ejected_count() <= allowed, "ejected past the share cap");
                    }
                }
                Step::Advance { ms } => {
                    let target = now + Duration::from_millis(ms);
                    // Drive timers in order up to the target, as a runtime would.
                    while let Some(due) = health.poll_timeout().filter(|&due| due <= target) {
                        prop_assert!(due >= now, "a timer in the past: {due:?} < {now:?}");
                        now = due;
                        health.handle_timeout(now, &mut rng);
                    }
                    now = target;
                    health.handle_timeout(now, &mut rng);
                    prop_assert!(health.poll_timeout().is_none_or(|due| due > now), "overdue work after handle_timeout");
                }
                Step::AnswerProbe { healthy } => {
                    if let Some((backend, probe)) = outstanding.pop() {
                        health.handle_probe_result(now, backend, probe, healthy);
                    }
                }
                Step::Add => {
                    health.add(BackendId(next_id), now, &mut rng);
                    next_id += 1;
                }
                Step::Remove { backend } => {
                    health.remove(BackendId(backend));
                    last_available.remove(&BackendId(backend));
                }
            }
            while let Some(event) = health.poll_event() {
                match event {
                    HealthEvent::Probe { backend, probe } => {
                        prop_assert!(seen_probes.insert(probe), "probe id reused");
                        outstanding.push((backend, probe));
                    }
                    HealthEvent::Transition { backend, available, .. } => {
                        let last = last_available.entry(backend).or_insert(true);
                        prop_assert_ne!(*last, available, "a transition that changes nothing");
                        *last = available;
                    }
                    HealthEvent::EjectionRefused { backend } => {
                        prop_assert!(
                            health.get(backend).is_some_and(|h| h.ejected_until.is_none()),
                            "a refused ejection leaves its backend in"
                        );
                    }
                }
            }
            // Applying the transitions in order leaves the driver's view equal to the machine's.
            for tracked in &health.backends {
                let driver_view = last_available.get(&tracked.id).copied().unwrap_or(true);
                prop_assert_eq!(driver_view, tracked.health.is_available());
            }
        }
    }
}
