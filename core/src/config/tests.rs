//! Configuration parsing and validation.

use super::*;

const FULL: &str = r#"
[s3]
base_domains = ["s3.example.com"]

[balance]
algorithm = "least-in-flight"
decay = "5s"

[health.passive]
consecutive_failures = 3

[health.active]
enabled = false

[retry]
max_attempts = 2

[timeouts]
backend_connect = "500ms"
total = "5m"

[routing]
default_pool = "dc1"
failover = "when-unavailable"
rules = [{ bucket = "cold-*", pool = "dc2" }]

[[pools]]
name = "dc1"
zone = "dc1"
failover_to = ["dc2"]
backends = ["10.0.0.1:9000", { address = "10.0.0.2:9000", name = "vast-2", weight = 2 }]

[[pools]]
name = "dc2"
dns = { name = "s3.dc2.example.com", port = 9000 }
"#;

#[test]
fn a_full_file_parses_with_defaults_filled_in() {
    // Proves every section parses and unspecified keys take their documented defaults.
    let config = Config::from_toml(FULL, "full.toml").expect("valid config");
    assert_eq!(config.balance.algorithm, AlgorithmKind::LeastInFlight);
    assert_eq!(config.balance.decay.get(), std::time::Duration::from_secs(5));
    assert_eq!(
        config.balance.default_latency,
        BalanceSection::default().default_latency
    );
    assert_eq!(config.health.passive.consecutive_failures, 3);
    assert_eq!(config.health.passive.base_ejection_time, ConfigDuration::from_secs(30));
    assert!(!config.health.active.enabled);
    assert_eq!(config.timeouts.backend_connect, ConfigDuration::from_millis(500));
    assert_eq!(config.timeouts.total, Some(ConfigDuration::from_secs(300)));
    assert_eq!(config.routing.failover, Failover::WhenUnavailable);
    assert_eq!(config.pools[0].backends[1].weight, 2);
    assert_eq!(config.pools[0].backends[0].name, None);
    assert_eq!(
        config.pools[1].dns.as_ref().map(|dns| dns.refresh),
        Some(ConfigDuration::from_secs(30))
    );
}

#[test]
fn a_typo_names_the_file_the_key_and_the_allowed_keys() {
    // Proves that a misspelt key is an error that says where and what would be accepted.
    let text = "[balance]\nalgoritm = \"random\"\n\n[[pools]]\nname = \"a\"\nbackends = [\"h:1\"]\n";
    let error = Config::from_toml(text, "/etc/storefront.toml").expect_err("typo must fail");
    let message = error.to_string();
    assert!(message.contains("/etc/storefront.toml"), "{message}");
    assert!(message.contains("algoritm"), "{message}");
    assert!(message.contains("algorithm"), "lists the allowed keys: {message}");
    assert!(message.contains("line 2"), "{message}");

    let bad_value = "[balance]\nalgorithm = \"fastest\"\n[[pools]]\nname = \"a\"\nbackends = [\"h:1\"]\n";
    let message = Config::from_toml(bad_value, "c.toml")
        .expect_err("bad enum")
        .to_string();
    assert!(
        message.contains("fastest") && message.contains("p2c-peak-ewma"),
        "{message}"
    );

    let bad_backend = "[[pools]]\nname = \"a\"\nbackends = [{ adress = \"h:1\" }]\n";
    let message = Config::from_toml(bad_backend, "c.toml")
        .expect_err("typo in a table")
        .to_string();
    assert!(message.contains("adress") && message.contains("address"), "{message}");

    let bad_duration = "[timeouts]\nbackend_connect = \"2\"\n[[pools]]\nname = \"a\"\nbackends = [\"h:1\"]\n";
    let message = Config::from_toml(bad_duration, "c.toml")
        .expect_err("no unit")
        .to_string();
    assert!(
        message.contains("invalid duration `2`") && message.contains("backend_connect"),
        "{message}"
    );
}

#[test]
fn validation_reports_every_problem_with_its_key() {
    // Proves that semantic errors are all reported at once, each with its key path.
    let text = r#"
[retry]
max_attempts = 0
budget_ratio = 1.5

[health.passive]
max_ejected_percent = 150
base_ejection_time = "0s"

[routing]
default_pool = "nowhere"
rules = [{ bucket = "x", pool = "ghost" }]

[[pools]]
name = "dc1"
failover_to = ["dc1", "dc9"]
backends = ["10.0.0.1", "10.0.0.1:0", { address = "h:1", weight = 0 }]

[[pools]]
name = "dc1"
"#;
    let error = Config::from_toml(text, "bad.toml").expect_err("invalid");
    let keys: Vec<&str> = error.problems.iter().map(|problem| problem.key.as_str()).collect();
    for expected in [
        "retry.max_attempts",
        "retry.budget_ratio",
        "health.passive.max_ejected_percent",
        "health.passive.base_ejection_time",
        "routing.default_pool",
        "routing.rules[0].pool",
        "pools[0].failover_to[0]",
        "pools[0].failover_to[1]",
        "pools[0].backends[0].address",
        "pools[0].backends[1].address",
        "pools[0].backends[2].weight",
        "pools[1].name",
        "pools[1]",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
    let message = error.to_string();
    assert!(
        message.contains("unknown pool `dc9` (pools: `dc1`, `dc1`)"),
        "{message}"
    );
    assert!(message.starts_with("configuration file `bad.toml`: "), "{message}");
}

#[test]
fn an_empty_file_needs_a_pool() {
    // Proves that defaults alone are not a usable configuration, and the error says what to add.
    let error = Config::from_toml("", "empty.toml").expect_err("no pools");
    assert_eq!(error.problems[0].key, "pools");
}

/// The least configuration that validates.
const POOL: &str = "[[pools]]\nname = \"dc1\"\nbackends = [\"10.0.0.1:9000\"]\n";

#[test]
fn status_lists_have_safe_defaults_and_take_only_error_statuses() {
    // Proves the status classes' configuration: by default the transient answers count
    // against a node and are retried (and 501 is neither); a list may be changed; a list with
    // a status that is not an error is refused, naming its key.
    let config = Config::from_toml(POOL, "empty.toml").expect("valid");
    assert_eq!(config.health.passive.failure_statuses, vec![429, 500, 502, 503, 504]);
    assert_eq!(config.retry.retry_statuses, vec![429, 500, 502, 503, 504]);
    let config = Config::from_toml(
        &format!("[health.passive]\nfailure_statuses = [503]\n[retry]\nretry_statuses = [503, 504]\n{POOL}"),
        "custom.toml",
    )
    .expect("valid");
    assert_eq!(config.health.passive.failure_statuses, vec![503]);
    let error = Config::from_toml(
        &format!("[health.passive]\nfailure_statuses = [200]\n[retry]\nretry_statuses = [503, 99]\n{POOL}"),
        "bad.toml",
    )
    .expect_err("a success cannot fail a node");
    let keys: Vec<&str> = error.problems.iter().map(|problem| problem.key.as_str()).collect();
    assert_eq!(
        keys,
        ["health.passive.failure_statuses", "retry.retry_statuses"],
        "{error}"
    );
    assert!(error.to_string().contains("200 is not an error status"), "{error}");
}

#[test]
fn telemetry_export_settings_are_checked_with_their_keys() {
    // Proves the traces and OTLP checks: a ratio outside 0..1, an empty queue, traces with no
    // collector to send them to, an https collector with no CA to trust, a scheme OTLP/HTTP
    // does not have.
    let problems = |text: &str| -> Vec<String> {
        Config::from_toml(&format!("{text}\n{POOL}"), "t.toml").map_or_else(
            |error| error.problems.into_iter().map(|problem| problem.key).collect(),
            |_| Vec::new(),
        )
    };
    assert_eq!(
        problems("[telemetry.traces]\nsample_ratio = 1.5\nqueue = 0\n"),
        vec![
            "telemetry.traces.sample_ratio",
            "telemetry.traces.queue",
            "telemetry.traces"
        ]
    );
    assert_eq!(
        problems("[telemetry.otlp]\nendpoint = \"https://collector:4318\"\n"),
        vec!["telemetry.otlp.ca_file"]
    );
    assert_eq!(
        problems("[telemetry.otlp]\nendpoint = \"grpc://collector:4317\"\n"),
        vec!["telemetry.otlp.endpoint"]
    );
    assert!(
        problems("[telemetry.otlp]\nendpoint = \"https://c:4318\"\nca_file = \"ca.pem\"\n\n[telemetry.traces]\n")
            .is_empty()
    );
    let config = Config::from_toml(
        &format!("[telemetry.otlp]\nendpoint = \"http://c:4318\"\n[telemetry.traces]\n{POOL}"),
        "t.toml",
    )
    .expect("valid");
    let traces = config.telemetry.traces.expect("traces on");
    assert_eq!((traces.sample_ratio, traces.keys, traces.queue), (0.01, false, 4096));
}

#[test]
fn p2c_ties_and_stale_estimates_are_on_by_default_and_can_be_turned_off() {
    // Proves the light-load defaults reach the balancer's parameters, and that zeros give
    // the plain p2c-peak-ewma choice back (no band, no staleness).
    let pools = "[[pools]]\nname = \"a\"\nbackends = [\"h:1\"]\n";
    let config = Config::from_toml(pools, "c.toml").expect("valid");
    let parameters = crate::pool::PoolParameters::from_config(&config).balance;
    assert_eq!(parameters.ties.ratio, 0.25);
    assert_eq!(parameters.ties.floor_ns, 1e6);
    assert_eq!(parameters.ewma.stale_after, std::time::Duration::from_millis(100));
    let off = format!("[balance]\ntie_ratio = 0.0\ntie_floor = \"0s\"\nstale_after = \"0s\"\n{pools}");
    let parameters =
        crate::pool::PoolParameters::from_config(&Config::from_toml(&off, "c.toml").expect("valid")).balance;
    assert_eq!(parameters.ties, crate::balance::TieBand::NONE);
    assert!(parameters.ewma.stale_after.is_zero());
}
