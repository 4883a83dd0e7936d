//! Typed configuration: the TOML file's schema, its defaults, and its validation.
//!
//! [`Config::from_toml`] parses and validates a file's text. Unknown keys are errors (a typo
//! must not silently fall back to a default), the parser's message names the line, the key and
//! the keys allowed there, and semantic validation ([`Config::validate`]) returns every problem
//! at once, each with its key path (`pools[1].backends[0].address`) and what would be accepted.
//!
//! Every default below carries a sentence saying why it is that value.

mod auth;
mod duration;
mod hedge;
mod server;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use auth::*;
pub use duration::{ConfigDuration, DurationError, parse_duration};
pub use hedge::HedgeSection;
pub use server::*;

use crate::balance::AlgorithmKind;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The client-facing listener.
    #[serde(default)]
    pub server: ServerSection,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// How callers are authenticated.
    #[serde(default)]
    pub auth: AuthSection,
    /// S3 addressing.
    #[serde(default)]
    pub s3: S3Section,
    /// Balancing algorithm and its parameters.
    #[serde(default)]
    pub balance: BalanceSection,
    /// Passive ejection and active probes.
    #[serde(default)]
    pub health: HealthSection,
    /// Retries and the retry budget.
    #[serde(default)]
    pub retry: RetrySection,
    /// Hedged reads.
    #[serde(default)]
    pub hedge: HedgeSection,
    /// Per-phase IO timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// Pool selection.
    #[serde(default)]
    pub routing: RoutingSection,
    /// Backend pools, one per data centre or cluster.
    #[serde(default)]
    pub pools: Vec<PoolSection>,
    /// Who may do what (`[[policy.rules]]`); deny by default.
    #[serde(default)]
    pub policy: PolicySection,
    /// Metrics, traces and the access log.
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

/// `[s3]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// Base domains for virtual-host addressing (`bucket.<base>`). Default: none, so only
    /// path style, which every SDK supports when told `force_path_style` and which needs no
    /// wildcard DNS.
    #[serde(default)]
    pub base_domains: Vec<String>,
}

/// `[balance]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSection {
    /// `round-robin`, `random`, `least-in-flight` or `p2c-peak-ewma`. Default p2c-peak-ewma:
    /// it is the only one that sees both load and latency, so it avoids a slow node as well as
    /// a busy one.
    pub algorithm: AlgorithmKind,
    /// Peak-EWMA time constant. Default 10 s (Finagle's and linkerd's): long enough to smooth
    /// the spread of S3 latencies, short enough that a recovered node is back within a minute.
    pub decay: ConfigDuration,
    /// Latency assumed for a node that has not answered yet. Default 30 ms: above a healthy
    /// S3 node's time to first byte, so a fresh node is fed gradually, not flooded.
    pub default_latency: ConfigDuration,
    /// The least latency a failed attempt counts as. Default 1 s: beyond any healthy first
    /// byte, so a node failing fast loses every comparison until it recovers.
    pub failure_penalty: ConfigDuration,
    /// p2c-peak-ewma: two idle backends whose loads are within this fraction of the lower one
    /// tie (the node picked least recently wins): idle nodes' latencies differ by noise, and
    /// following it piles a light load on one node, while a node slow enough to matter is far
    /// outside a band of 0.25. Backends with requests in flight never tie.
    /// Default 0.25; 0 (with `tie_floor` 0) turns ties off: the lower load always wins.
    pub tie_ratio: f64,
    /// p2c-peak-ewma: loads within this much of each other tie, whatever their ratio. Default
    /// 1 ms: no S3 client tells a millisecond's difference in time to first byte.
    pub tie_floor: ConfigDuration,
    /// p2c-peak-ewma: an idle backend no answer refreshed for this long counts at the pool's
    /// typical latency and is re-measured by its next answer ("0s": never). Default 100 ms:
    /// one slow answer then keeps an idle node out for a tenth of a second, not for most of
    /// `decay`, and a node that is really slow costs one request per 100 ms to re-measure.
    /// With the tie band, one sequential client over three identical nodes stays within 1.08
    /// max/mean (BENCHMARKS.md, "Balance at light load"); without either, up to 1.5.
    pub stale_after: ConfigDuration,
}

impl Default for BalanceSection {
    fn default() -> Self {
        BalanceSection {
            algorithm: AlgorithmKind::P2cPeakEwma,
            decay: ConfigDuration::from_secs(10),
            default_latency: ConfigDuration::from_millis(30),
            failure_penalty: ConfigDuration::from_secs(1),
            tie_ratio: 0.25,
            tie_floor: ConfigDuration::from_millis(1),
            stale_after: ConfigDuration::from_millis(100),
        }
    }
}

/// `[health]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `[health.passive]`
    #[serde(default)]
    pub passive: PassiveSection,
    /// `[health.active]`
    #[serde(default)]
    pub active: ActiveSection,
}

/// `[health.passive]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveSection {
    /// Default on: passive ejection costs nothing and catches a dead node on its first errors.
    pub enabled: bool,
    /// Default 5 (Envoy's): one or two errors are noise on a busy node; five in a row are not.
    pub consecutive_failures: u32,
    /// Default 30 s (Envoy's): long enough for a restarting S3 node to come back.
    pub base_ejection_time: ConfigDuration,
    /// Default 300 s (Envoy's): a flapping node is out for at most five minutes at a time.
    pub max_ejection_time: ConfigDuration,
    /// Default 50 %: a cluster-wide brown-out must not eject the whole pool (at least one
    /// backend may always be ejected, so three-node pools still eject).
    pub max_ejected_percent: u8,
    /// Default on (Envoy's `successful_active_health_check_uneject_host`): when active probes
    /// pass `healthy_threshold` times in a row after an ejection, the ejection ends, so a
    /// restarted node is back within seconds. Off: only the ejection time ends it, for nodes
    /// that answer probes while failing real requests.
    pub probes_end_ejection: bool,
    /// Backend answers that count as the node failing (toward ejection, and as the failure
    /// penalty in the balancer's latency estimate). Default 429, 500, 502, 503, 504: what the
    /// AWS SDKs retry as transient. Any other answer (a 4xx, `501 Not Implemented`, `505`)
    /// says the request was wrong, not the node: passed back, never held against the node,
    /// so no caller can eject a healthy node by choosing what to ask.
    pub failure_statuses: Vec<u16>,
}

/// 429, 500, 502, 503, 504 (see [`crate::outcome::StatusSet::TRANSIENT`]).
fn transient_statuses() -> Vec<u16> {
    crate::outcome::StatusSet::TRANSIENT.iter().collect()
}

impl Default for PassiveSection {
    fn default() -> Self {
        PassiveSection {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_time: ConfigDuration::from_secs(30),
            max_ejection_time: ConfigDuration::from_secs(300),
            max_ejected_percent: 50,
            probes_end_ejection: true,
            failure_statuses: transient_statuses(),
        }
    }
}

/// `[health.active]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveSection {
    /// Default on: probes find a node that came back while it received no traffic.
    pub enabled: bool,
    /// Default 5 s: a node's return is noticed within seconds at a negligible request rate.
    pub interval: ConfigDuration,
    /// Default 500 ms: spreads probes of many proxy replicas apart.
    pub jitter: ConfigDuration,
    /// Default 2 s: an S3 node that cannot answer a HEAD in two seconds is not serving.
    pub timeout: ConfigDuration,
    /// Default 2: one lucky answer does not prove recovery.
    pub healthy_threshold: u32,
    /// Default 3: a node is not marked down for one lost probe.
    pub unhealthy_threshold: u32,
    /// Request path probed with `HEAD` (signed with the pool's credentials). Default `/`; any
    /// answer but a server failure counts as healthy (a 403 or a 501 Not Implemented from a
    /// node still proves that it serves).
    pub path: String,
}

impl Default for ActiveSection {
    fn default() -> Self {
        ActiveSection {
            enabled: true,
            interval: ConfigDuration::from_secs(5),
            jitter: ConfigDuration::from_millis(500),
            timeout: ConfigDuration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            path: "/".to_owned(),
        }
    }
}

/// `[retry]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Attempts per request, the first included. Default 3: a dead node and one more failure
    /// are survived; more attempts mostly add latency.
    pub max_attempts: u32,
    /// Retries allowed per request over the window. Default 0.2 (linkerd's): retries add at
    /// most a fifth to the load of a struggling cluster.
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of traffic. Default 10 (linkerd's): light traffic
    /// is still retried.
    pub budget_min_per_second: f64,
    /// The budget's window. Default 10 s (linkerd's).
    pub budget_window: ConfigDuration,
    /// Backend answers retried on another backend (where the retry rules allow: idempotent
    /// requests, or any request the node did not process: 429 and 503). Default 429, 500,
    /// 502, 503, 504. Any other answer goes straight back to the client.
    pub retry_statuses: Vec<u16>,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            budget_window: ConfigDuration::from_secs(10),
            retry_statuses: transient_statuses(),
        }
    }
}

/// `[timeouts]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSection {
    /// A complete request head, from the accept (or, once bytes of a next request arrived,
    /// from the previous response's end): a connection that sends none in time is closed,
    /// whether or not it sent a byte (with HTTP/2: one that opens no stream). Default 30 s:
    /// generous for slow links, short enough that silent or half-open connections cannot
    /// hold the connection limit.
    pub client_header: ConfigDuration,
    /// A keep-alive connection with nothing arriving after a response is closed after this
    /// long. Default 20 s: below `client_header`, and about what S3 itself allows; the SDKs
    /// retry a request on a connection the server closed under them.
    pub client_idle: ConfigDuration,
    /// A TLS handshake (and a load balancer's PROXY header) from the accept. Default 10 s.
    pub tls_handshake: ConfigDuration,
    /// Silence between request body chunks (slow writer). Default 30 s.
    pub client_body_idle: ConfigDuration,
    /// A client not accepting response bytes (slow reader). Default 30 s: past it the client
    /// connection closes and the backend connection is discarded, so a stuck client never
    /// pins a backend.
    pub response_write_idle: ConfigDuration,
    /// Opening a backend connection. Default 2 s: loopback and LAN connects take
    /// milliseconds; a node that has not accepted in two seconds is down, try another.
    pub backend_connect: ConfigDuration,
    /// A backend not accepting request-body bytes (nginx's `proxy_send_timeout`). Default
    /// 30 s: a node that has taken nothing for that long is stuck, and without this limit
    /// an upload to it would wait forever (the first-byte timeout only starts once the whole
    /// body is sent).
    pub backend_send_idle: ConfigDuration,
    /// From request sent to response head. Default 60 s: S3 nodes answer a large
    /// CompleteMultipartUpload or a copy only when done, which can take tens of seconds.
    pub backend_first_byte: ConfigDuration,
    /// Silence between backend response body chunks. Default 30 s.
    pub backend_body_idle: ConfigDuration,
    /// Deadline for a whole exchange. Default none: object sizes vary too much for one.
    pub total: Option<ConfigDuration>,
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        TimeoutsSection {
            client_header: ConfigDuration::from_secs(30),
            client_idle: ConfigDuration::from_secs(20),
            tls_handshake: ConfigDuration::from_secs(10),
            client_body_idle: ConfigDuration::from_secs(30),
            response_write_idle: ConfigDuration::from_secs(30),
            backend_connect: ConfigDuration::from_secs(2),
            backend_send_idle: ConfigDuration::from_secs(30),
            backend_first_byte: ConfigDuration::from_secs(60),
            backend_body_idle: ConfigDuration::from_secs(30),
            total: None,
        }
    }
}

/// When a request may leave its pool (`routing.failover`; see [`crate::route`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failover {
    /// Never: the chosen pool serves or fails.
    #[default]
    Never,
    /// Only when the chosen pool has no available backend, or, for a retry the policy allows,
    /// no available backend the request has not already tried.
    WhenUnavailable,
}

/// `[routing]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// Pool for callers whose zone has no pool. Default: the first pool.
    #[serde(default)]
    pub default_pool: Option<String>,
    /// `never` or `when-unavailable`. Default never: data centres stay apart unless an
    /// operator decides otherwise.
    #[serde(default)]
    pub failover: Failover,
    /// Bucket rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

/// `[[routing.rules]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Bucket glob (`*` wildcard).
    pub bucket: String,
    /// Pool name.
    pub pool: String,
}

/// `pools[].tls`: connect to the pool's backends over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsSection {
    /// PEM file of the CA certificates that sign the backends' certificates (a custom CA, as
    /// storage clusters usually have).
    pub ca_file: String,
    /// Name to verify the backends' certificates against. Default: the host part of each
    /// backend address.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `[[pools]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Unique pool name.
    pub name: String,
    /// Zone / data centre served.
    #[serde(default)]
    pub zone: Option<String>,
    /// Pools to fail over to (with `routing.failover = "when-unavailable"`).
    #[serde(default)]
    pub failover_to: Vec<String>,
    /// Static backends: `"host:port"` or `{ address = "host:port", name = "...", weight = 2 }`.
    #[serde(default)]
    pub backends: Vec<BackendEntry>,
    /// Or a DNS name whose every A/AAAA record is a backend.
    #[serde(default)]
    pub dns: Option<DnsSection>,
    /// SigV4 region the backends expect. Default `us-east-1`, what VAST, Ceph and MinIO accept
    /// unless configured otherwise.
    #[serde(default = "default_region")]
    pub region: String,
    /// Credentials the proxy signs with for this pool. Without them requests go unsigned
    /// (for anonymous backends).
    #[serde(default)]
    pub credentials: Option<CredentialsSection>,
    /// Backend connection pooling.
    #[serde(default)]
    pub connections: ConnectionsSection,
    /// TLS to the backends (none: plain HTTP).
    #[serde(default)]
    pub tls: Option<BackendTlsSection>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// `pools[].credentials`: each secret given inline, or read from a file, or from an
/// environment variable (exactly one of the three for each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    /// Access key id.
    #[serde(default)]
    pub access_key: Option<String>,
    /// File holding the access key id.
    #[serde(default)]
    pub access_key_file: Option<String>,
    /// Environment variable holding the access key id.
    #[serde(default)]
    pub access_key_env: Option<String>,
    /// Secret access key (prefer the file or env forms).
    #[serde(default)]
    pub secret_key: Option<String>,
    /// File holding the secret access key.
    #[serde(default)]
    pub secret_key_file: Option<String>,
    /// Environment variable holding the secret access key.
    #[serde(default)]
    pub secret_key_env: Option<String>,
}

/// `pools[].connections`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsSection {
    /// Requests in flight to one backend at once (each on its own HTTP/1.1 connection).
    /// Default 128: a per-node bulkhead well above a healthy node's useful concurrency.
    pub max_per_backend: usize,
    /// How long a request may wait for a free connection slot before it gets `503 SlowDown`.
    /// Default 1 s: long enough to ride out a burst, short enough that SDKs back off soon.
    pub wait: ConfigDuration,
    /// Requests that may wait for one busy backend's slots at once. Default 128 (as many as
    /// are in flight to it): past it a request gets `503 SlowDown` with `Retry-After` at once,
    /// so an overload is shed, not queued, and what the proxy holds stays bounded whatever
    /// the offered load. 0: no waiting at all.
    pub max_waiting: usize,
    /// Idle connections are closed after this long. Default 60 s: below the usual 65-120 s
    /// keep-alive of S3 servers, so the proxy closes first and never reuses a connection the
    /// server is closing.
    pub idle_timeout: ConfigDuration,
    /// Idle connections kept open to each available backend, opened ahead of need. Default 0:
    /// connections are opened by the requests that need them.
    pub min_idle: usize,
    /// Open connections ahead of a rising load (from the pool's arrival rate and its trend,
    /// see `storefront_core::warm`). Default false.
    pub warm_ahead: bool,
    /// Connections the warming may open per second to one backend. Default 20: warming never
    /// becomes a storm of dials at a node.
    pub warm_dials_per_second: u32,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            max_per_backend: 128,
            wait: ConfigDuration::from_secs(1),
            max_waiting: 128,
            idle_timeout: ConfigDuration::from_secs(60),
            min_idle: 0,
            warm_ahead: false,
            warm_dials_per_second: 20,
        }
    }
}

/// `pools[].dns`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// The name to resolve.
    pub name: String,
    /// Port of every backend.
    pub port: u16,
    /// Re-resolution interval. Default 30 s: S3 clusters change their VIP sets rarely, and a
    /// removed address is also caught by health checks meanwhile.
    #[serde(default = "default_dns_refresh")]
    pub refresh: ConfigDuration,
}

fn default_dns_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}

/// One static backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendEntry {
    /// `host:port`.
    pub address: String,
    /// Name in logs and the admin API. Default: the address.
    pub name: Option<String>,
    /// Relative capacity. Default 1.
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A backend is written either as a plain `"host:port"` string or as a table; this visitor
/// accepts both while keeping the table's unknown-key errors (an untagged enum would replace
/// them with "did not match any variant").
#[derive(Deserialize)]
#[serde(deny_unknown_fields, remote = "BackendEntry")]
struct BackendEntryTable {
    address: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_weight")]
    weight: u32,
}

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = BackendEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or a table { address = \"host:port\", name = \"...\", weight = 1 }")
            }
            fn visit_str<E: de::Error>(self, address: &str) -> Result<BackendEntry, E> {
                Ok(BackendEntry {
                    address: address.to_owned(),
                    name: None,
                    weight: 1,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BackendEntry, M::Error> {
                BackendEntryTable::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

mod validate;

pub use validate::{ConfigError, Problem};

#[cfg(test)]
mod tests;
