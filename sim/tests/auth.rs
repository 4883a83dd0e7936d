//! The auth scenario: the proxy's identity sources, verification and policy under the
//! simulation, replayed exactly.

use std::collections::BTreeMap;

fn count(map: &BTreeMap<String, BTreeMap<String, u64>>, outer: &str, inner: &str) -> u64 {
    map.get(outer)
        .and_then(|inner_map| inner_map.get(inner))
        .copied()
        .unwrap_or(0)
}

#[test]
fn every_identity_source_is_decided_under_the_simulation_and_replays_exactly() {
    // Proves §4 of "One brain": SigV4 callers (header, presigned, signed aws-chunked), STS
    // sessions, pods from a watch of the simulated Kubernetes API and a DNS-backed pool all run
    // under turmoil. Each allowed group gets every request through (sim::run's invariants: an
    // allowed caller is never refused, an acknowledged upload is stored at the size sent, so a
    // signed-chunk body was decoded); each refused group gets nothing through (an invariant
    // too); the report's decisions name each source; the same seed gives the same JSON.
    let scenario = sim::load("auth").expect("built-in scenario");
    let modes = scenario.modes();
    assert_eq!(modes.len(), 1, "the auth scenario runs through the proxy only");
    let first = sim::run(&scenario, 7, &modes).unwrap_or_else(|error| panic!("{error}"));
    let second = sim::run(&scenario, 7, &modes).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        serde_json::to_string(&first).expect("json"),
        serde_json::to_string(&second).expect("json")
    );
    let report = &first.modes[0];
    let (auth, groups) = (&report.auth, &report.groups);

    // Who was let in, and how they were known.
    assert!(count(auth, "pod", "allowed") > 0, "{auth:?}");
    assert!(count(auth, "access-key", "allowed") > 0, "{auth:?}");
    assert!(count(auth, "session", "allowed") > 0, "{auth:?}");
    for group in ["spark", "etl", "analytics", "reports", "ingest"] {
        let outcomes = &groups[group];
        assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "{group}: {outcomes:?}");
        assert_eq!(outcomes.len(), 1, "{group} must only succeed: {outcomes:?}");
    }
    // The two etl hosts each had one session issued; the forger's token was refused.
    assert_eq!(count(auth, "anonymous", "sts-200"), 2, "{auth:?}");
    assert_eq!(count(auth, "anonymous", "sts-403"), 1, "{auth:?}");
    assert_eq!(groups["forger"], BTreeMap::from([("denied".to_owned(), 1)]));

    // Who was kept out, and why: a pod no rule names is denied by policy; an unknown key is
    // refused before any decision.
    let stranger = groups["stranger"]["denied"];
    assert_eq!(groups["stranger"].len(), 1, "{:?}", groups["stranger"]);
    assert_eq!(count(auth, "pod", "denied"), stranger, "{auth:?}");
    let intruder = groups["intruder"]["denied"];
    assert_eq!(groups["intruder"].len(), 1, "{:?}", groups["intruder"]);
    assert_eq!(
        count(auth, "anonymous", "rejected-InvalidAccessKeyId"),
        intruder,
        "{auth:?}"
    );

    // The DNS-backed pool reached every node.
    assert!(
        report.node_requests.values().all(|&count| count > 0),
        "{:?}",
        report.node_requests
    );
}
