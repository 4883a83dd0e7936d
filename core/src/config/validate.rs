//! Parsing a configuration file and checking what the schema cannot.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use super::Config;

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path, as in `pools[1].backends[0].address`; empty for the whole file.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// Each problem found (parse errors stop at the first; validation finds all).
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "configuration file `{}`: {count} problem{}",
            self.file,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            if problem.key.is_empty() {
                write!(f, "\n  - {}", problem.message)?;
            } else {
                write!(f, "\n  - `{}`: {}", problem.key, problem.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parse and validate the text of configuration file `file` (the name is only used in
    /// messages).
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                key: String::new(),
                message: error.to_string().trim_end().to_owned(),
            }],
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_owned(),
                problems,
            })
        }
    }

    /// Every semantic problem: references to unknown pools, impossible values, missing
    /// backends. An empty list means the configuration is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |key: String, message: String| problems.push(Problem { key, message });

        for (key, address) in [
            ("server.listen", &self.server.listen),
            ("admin.listen", &self.admin.listen),
        ] {
            if address.parse::<std::net::SocketAddr>().is_err() {
                report(
                    key.into(),
                    format!(
                        "`{address}` is not an IP:port to listen on (for example \"127.0.0.1:9000\" or \"[::]:9000\")"
                    ),
                );
            }
        }
        if self.telemetry.access_log.trim().is_empty() {
            report(
                "telemetry.access_log".into(),
                "is empty: say \"stdout\", \"stderr\", \"off\" or a file path".into(),
            );
        }
        if let Some(otlp) = &self.telemetry.otlp {
            if otlp.endpoint.starts_with("https://") {
                if otlp.ca_file.is_none() {
                    report(
                        "telemetry.otlp.ca_file".into(),
                        "is required for an https:// endpoint: name the PEM CA bundle the collector's certificate chains to".into(),
                    );
                }
            } else if !otlp.endpoint.starts_with("http://") {
                report(
                    "telemetry.otlp.endpoint".into(),
                    format!(
                        "`{}` is not an http:// or https:// URL of an OTLP/HTTP collector",
                        otlp.endpoint
                    ),
                );
            }
        }
        if let Some(traces) = &self.telemetry.traces {
            if !(0.0..=1.0).contains(&traces.sample_ratio) {
                report(
                    "telemetry.traces.sample_ratio".into(),
                    format!("{} is not a share between 0 and 1", traces.sample_ratio),
                );
            }
            if traces.queue == 0 {
                report("telemetry.traces.queue".into(), "must be at least 1".into());
            }
            if self.telemetry.otlp.is_none() {
                report(
                    "telemetry.traces".into(),
                    "needs [telemetry.otlp] with the collector's endpoint to send the spans to".into(),
                );
            }
        }
        if self.telemetry.access_log_queue == 0 {
            report("telemetry.access_log_queue".into(), "must be at least 1".into());
        }
        if self.server.max_connections == 0 {
            report("server.max_connections".into(), "must be at least 1".into());
        }
        if self.server.max_header_bytes < 1024 {
            report(
                "server.max_header_bytes".into(),
                format!("{} is below 1024 bytes", self.server.max_header_bytes),
            );
        }
        if self.server.max_uri_bytes < 1024 {
            report(
                "server.max_uri_bytes".into(),
                format!("{} is below 1024 bytes", self.server.max_uri_bytes),
            );
        }
        if self.server.max_headers == 0 {
            report("server.max_headers".into(), "must be at least 1".into());
        }

        for (index, domain) in self.s3.base_domains.iter().enumerate() {
            let valid = !domain.is_empty()
                && !domain.contains(':')
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !valid {
                report(
                    format!("s3.base_domains[{index}]"),
                    format!("`{domain}` is not a domain name (letters, digits, '.' and '-', no port)"),
                );
            }
        }

        positive(&mut report, "balance.decay", self.balance.decay.get());
        positive(
            &mut report,
            "balance.default_latency",
            self.balance.default_latency.get(),
        );
        if !(0.0..=1.0).contains(&self.balance.tie_ratio) {
            report(
                "balance.tie_ratio".into(),
                format!("{} is not a fraction from 0 to 1", self.balance.tie_ratio),
            );
        }

        let passive = &self.health.passive;
        if passive.consecutive_failures == 0 {
            report(
                "health.passive.consecutive_failures".into(),
                "must be at least 1".into(),
            );
        }
        positive(
            &mut report,
            "health.passive.base_ejection_time",
            passive.base_ejection_time.get(),
        );
        if passive.max_ejection_time < passive.base_ejection_time {
            report(
                "health.passive.max_ejection_time".into(),
                format!(
                    "{} is below base_ejection_time ({})",
                    passive.max_ejection_time, passive.base_ejection_time
                ),
            );
        }
        if passive.max_ejected_percent > 100 {
            report(
                "health.passive.max_ejected_percent".into(),
                format!("{} is not a percentage (0 to 100)", passive.max_ejected_percent),
            );
        }
        let active = &self.health.active;
        positive(&mut report, "health.active.interval", active.interval.get());
        positive(&mut report, "health.active.timeout", active.timeout.get());
        if active.jitter > active.interval {
            report(
                "health.active.jitter".into(),
                format!("{} exceeds interval ({})", active.jitter, active.interval),
            );
        }
        for (key, value) in [
            ("health.active.healthy_threshold", active.healthy_threshold),
            ("health.active.unhealthy_threshold", active.unhealthy_threshold),
        ] {
            if value == 0 {
                report(key.into(), "must be at least 1".into());
            }
        }
        if !active.path.starts_with('/') {
            report(
                "health.active.path".into(),
                format!("`{}` must start with `/`", active.path),
            );
        }

        if !(1..=10).contains(&self.retry.max_attempts) {
            report(
                "retry.max_attempts".into(),
                format!("{} is outside 1 to 10 (1 disables retries)", self.retry.max_attempts),
            );
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            report(
                "retry.budget_ratio".into(),
                format!("{} is outside 0.0 to 1.0", self.retry.budget_ratio),
            );
        }
        if !(self.retry.budget_min_per_second >= 0.0 && self.retry.budget_min_per_second.is_finite()) {
            report(
                "retry.budget_min_per_second".into(),
                format!(
                    "{} must be a finite number at least 0",
                    self.retry.budget_min_per_second
                ),
            );
        }
        positive(&mut report, "retry.budget_window", self.retry.budget_window.get());
        for (key, message) in self.hedge.problems() {
            report(key, message);
        }
        for (key, statuses) in [
            ("health.passive.failure_statuses", &self.health.passive.failure_statuses),
            ("retry.retry_statuses", &self.retry.retry_statuses),
        ] {
            if let Some(status) = statuses.iter().find(|status| !(400..=599).contains(*status)) {
                report(
                    key.into(),
                    format!("{status} is not an error status (400 to 599): only errors can fail a node or be retried"),
                );
            }
        }

        let timeouts = &self.timeouts;
        for (key, value) in [
            ("timeouts.client_header", timeouts.client_header),
            ("timeouts.client_idle", timeouts.client_idle),
            ("timeouts.tls_handshake", timeouts.tls_handshake),
            ("timeouts.client_body_idle", timeouts.client_body_idle),
            ("timeouts.response_write_idle", timeouts.response_write_idle),
            ("timeouts.backend_connect", timeouts.backend_connect),
            ("timeouts.backend_send_idle", timeouts.backend_send_idle),
            ("timeouts.backend_first_byte", timeouts.backend_first_byte),
            ("timeouts.backend_body_idle", timeouts.backend_body_idle),
        ] {
            positive(&mut report, key, value.get());
        }
        if let Some(total) = timeouts.total {
            positive(&mut report, "timeouts.total", total.get());
        }

        if self.pools.is_empty() {
            report("pools".into(), "at least one [[pools]] entry is needed".into());
        }
        let names: Vec<&str> = self.pools.iter().map(|pool| pool.name.as_str()).collect();
        let known = |name: &str| names.contains(&name);
        let allowed = || {
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut seen = HashSet::new();
        for (index, pool) in self.pools.iter().enumerate() {
            let key = format!("pools[{index}]");
            if pool.name.is_empty() {
                report(format!("{key}.name"), "must not be empty".into());
            } else if !seen.insert(pool.name.as_str()) {
                report(
                    format!("{key}.name"),
                    format!("`{}` is used by another pool", pool.name),
                );
            }
            for (target_index, target) in pool.failover_to.iter().enumerate() {
                if !known(target) {
                    report(
                        format!("{key}.failover_to[{target_index}]"),
                        format!("unknown pool `{target}` (pools: {})", allowed()),
                    );
                } else if target == &pool.name {
                    report(
                        format!("{key}.failover_to[{target_index}]"),
                        "a pool cannot fail over to itself".into(),
                    );
                }
            }
            match (&pool.dns, pool.backends.is_empty()) {
                (None, true) => report(
                    key.clone(),
                    "has no backends: give `backends = [\"host:port\", ...]` or `dns = { name = \"...\", port = 9000 }`"
                        .into(),
                ),
                (Some(_), false) => report(key.clone(), "has both `backends` and `dns`; use one".into()),
                _ => {}
            }
            let mut backend_names = HashSet::new();
            for (backend_index, backend) in pool.backends.iter().enumerate() {
                let backend_key = format!("{key}.backends[{backend_index}]");
                if let Err(message) = check_host_port(&backend.address) {
                    report(format!("{backend_key}.address"), message);
                }
                if backend.weight == 0 {
                    report(format!("{backend_key}.weight"), "must be at least 1".into());
                }
                let name = backend.name.as_deref().unwrap_or(&backend.address);
                if !backend_names.insert(name) {
                    report(backend_key, format!("backend `{name}` appears twice in this pool"));
                }
            }
            if pool.connections.min_idle > pool.connections.max_per_backend {
                report(
                    format!("{key}.connections.min_idle"),
                    format!(
                        "{} is more than max_per_backend ({})",
                        pool.connections.min_idle, pool.connections.max_per_backend
                    ),
                );
            }
            if pool.connections.max_per_backend == 0 {
                report(
                    format!("{key}.connections.max_per_backend"),
                    "must be at least 1".into(),
                );
            }
            positive(
                &mut report,
                &format!("{key}.connections.idle_timeout"),
                pool.connections.idle_timeout.get(),
            );
            if let Some(credentials) = &pool.credentials {
                for (what, forms) in [
                    (
                        "access_key",
                        [
                            &credentials.access_key,
                            &credentials.access_key_file,
                            &credentials.access_key_env,
                        ],
                    ),
                    (
                        "secret_key",
                        [
                            &credentials.secret_key,
                            &credentials.secret_key_file,
                            &credentials.secret_key_env,
                        ],
                    ),
                ] {
                    let given = forms.iter().filter(|form| form.is_some()).count();
                    if given != 1 {
                        report(
                            format!("{key}.credentials"),
                            format!("give exactly one of `{what}`, `{what}_file` or `{what}_env` (found {given})"),
                        );
                    }
                }
            }
            if let Some(dns) = &pool.dns {
                if dns.name.is_empty() {
                    report(format!("{key}.dns.name"), "must not be empty".into());
                }
                if dns.port == 0 {
                    report(format!("{key}.dns.port"), "must be 1 to 65535".into());
                }
                positive(&mut report, &format!("{key}.dns.refresh"), dns.refresh.get());
            }
        }
        if let Some(default) = &self.routing.default_pool
            && !known(default)
        {
            report(
                "routing.default_pool".into(),
                format!("unknown pool `{default}` (pools: {})", allowed()),
            );
        }
        let mut cidr_names = HashSet::new();
        for (index, entry) in self.auth.cidrs.iter().enumerate() {
            if entry.name.is_empty() || !cidr_names.insert(entry.name.as_str()) {
                report(
                    format!("auth.cidrs[{index}].name"),
                    format!("`{}` must be a unique, non-empty name", entry.name),
                );
            }
            if entry.networks.is_empty() {
                report(
                    format!("auth.cidrs[{index}].networks"),
                    "must list at least one network such as \"10.0.0.0/8\"".into(),
                );
            }
        }
        let mut access_keys = HashSet::new();
        for (index, key) in self.auth.keys.iter().enumerate() {
            if key.access_key.is_empty() || key.secret_key.is_empty() {
                report(
                    format!("auth.keys[{index}]"),
                    "needs a non-empty access_key and secret_key".into(),
                );
            } else if !access_keys.insert(key.access_key.as_str()) {
                report(
                    format!("auth.keys[{index}].access_key"),
                    format!("`{}` is listed twice", key.access_key),
                );
            }
        }
        positive(&mut report, "auth.max_clock_skew", self.auth.max_clock_skew.get());
        if self.auth.pods.as_ref().is_some_and(|pods| pods.networks.is_empty()) {
            report(
                "auth.pods.networks".into(),
                "must list the cluster's pod networks (for example \"10.244.0.0/16\")".into(),
            );
        }
        if let Some(sts) = &self.auth.sts {
            if sts.audience.is_empty() {
                report("auth.sts.audience".into(), "must name the token audience".into());
            }
            if sts.master_key.is_some() == sts.master_key_file.is_some() {
                report(
                    "auth.sts".into(),
                    "needs exactly one of master_key_file and master_key".into(),
                );
            }
            if sts.master_key.as_ref().is_some_and(|key| key.len() < 32) {
                report("auth.sts.master_key".into(), "must be at least 32 bytes".into());
            }
            positive(&mut report, "auth.sts.duration", sts.duration.get());
        }
        let mut rule_names = HashSet::new();
        for (index, rule) in self.policy.rules.iter().enumerate() {
            let key = |field: &str| format!("policy.rules[{index}].{field}");
            if rule.name.is_empty() {
                report(key("name"), "must not be empty: decisions quote it".into());
            } else if !rule_names.insert(rule.name.as_str()) {
                report(key("name"), format!("`{}` names two rules", rule.name));
            }
            if rule.identity.is_empty() {
                report(
                    key("identity"),
                    "says whom the rule is for: give a field (namespace, labels, access_key, cidr, name) or `any = true`".into(),
                );
            }
            if rule.identity.anonymous
                && (rule.identity.any || {
                    let mut named = rule.identity.clone();
                    named.anonymous = false;
                    !named.is_empty()
                })
            {
                report(
                    key("identity"),
                    "`anonymous = true` matches callers with no identity: it cannot be combined with other fields"
                        .into(),
                );
            }
            if rule.actions.is_empty() {
                report(
                    key("actions"),
                    "must list at least one of read, list, write, delete, multipart, bucket-admin".into(),
                );
            }
            if rule.buckets.is_empty() || rule.buckets.iter().any(String::is_empty) {
                report(key("buckets"), "must list bucket names or globs (\"*\" for all)".into());
            }
            if rule.keys.is_empty() || rule.keys.iter().any(String::is_empty) {
                report(key("keys"), "must list key globs (\"*\" for all, the default)".into());
            }
        }
        for (index, rule) in self.routing.rules.iter().enumerate() {
            if !known(&rule.pool) {
                report(
                    format!("routing.rules[{index}].pool"),
                    format!("unknown pool `{}` (pools: {})", rule.pool, allowed()),
                );
            }
            if rule.bucket.is_empty() {
                report(
                    format!("routing.rules[{index}].bucket"),
                    "must not be empty (use \"*\" for all)".into(),
                );
            }
        }
        problems
    }
}

fn positive(report: &mut impl FnMut(String, String), key: &str, value: Duration) {
    if value.is_zero() {
        report(key.to_owned(), "must be greater than zero".to_owned());
    }
}

/// `host:port` with a non-empty host and a port in 1..=65535 (`[v6]:port` for IPv6).
fn check_host_port(address: &str) -> Result<(), String> {
    let expected = || format!("`{address}` is not host:port (for example \"10.0.0.1:9000\" or \"[::1]:9000\")");
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, rest) = rest.split_once(']').ok_or_else(expected)?;
        (host, rest.strip_prefix(':').ok_or_else(expected)?)
    } else {
        address.rsplit_once(':').ok_or_else(expected)?
    };
    if host.is_empty() || host.contains(':') && !address.starts_with('[') {
        return Err(expected());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(expected()),
    }
}
