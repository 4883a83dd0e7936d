//! The process-level sections: `[telemetry]`, `[server]`, `[admin]`.

use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// `[telemetry]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Whether requests, attempts, health and connection events are recorded as metrics.
    /// Default true. False leaves only what is read at collection time in `/metrics` (backend
    /// gauges, process figures, build info): for measuring what recording costs, or a proxy
    /// whose operators scrape nothing.
    pub metrics: bool,
    /// Buckets that appear by name in metric attributes (`storefront.bucket`); every other
    /// bucket is `_other`. Default none (and no bucket attribute at all): bucket names are
    /// unbounded, and each one multiplies every request series.
    pub metric_buckets: Vec<String>,
    /// Where the access log goes, one JSON line per request: `"stdout"` (the default, as a
    /// container's log collector expects), `"stderr"`, `"off"`, or a file path (appended to).
    /// Taken at start: a reload does not move it.
    pub access_log: String,
    /// Whether access log lines name the object key. Default true (S3's own server access
    /// logs do); false where keys are sensitive.
    pub access_log_keys: bool,
    /// Lines the access log holds for its writer before it drops (and counts) new ones rather
    /// than hold up a request. Default 8192.
    pub access_log_queue: usize,
    /// OpenTelemetry export over OTLP/HTTP (protobuf); off unless given.
    pub otlp: Option<OtlpSection>,
    /// Traces: a server span per request, a client span per attempt, exported through
    /// `[telemetry.otlp]`; off unless given. Taken at start: a reload does not change it.
    pub traces: Option<TracesSection>,
}

/// `[telemetry.traces]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSection {
    /// The share of traces the proxy starts itself (requests without a caller's
    /// `traceparent`) that are recorded, 0 to 1. A caller's decision, when it sent one, is
    /// followed either way (parent-based sampling). Default 0.01: one request in a hundred is
    /// plenty to see where time goes at the request rates a proxy of a data platform serves.
    pub sample_ratio: f64,
    /// Whether server spans name the object key (`aws.s3.key`). Default false: keys can carry
    /// what a tracing backend's readers must not see; buckets are always named.
    pub keys: bool,
    /// Spans held for the exporter before new ones are dropped (and counted) rather than
    /// wait. Default 4096 (a few MiB at most).
    pub queue: usize,
}

impl Default for TracesSection {
    fn default() -> Self {
        TracesSection {
            sample_ratio: 0.01,
            keys: false,
            queue: 4096,
        }
    }
}

/// `[telemetry.otlp]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSection {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`, or `https://` with
    /// `ca_file`); metrics go to `/v1/metrics` under it, spans to `/v1/traces`.
    pub endpoint: String,
    /// How often metrics are exported. Default 10 s (the collector aggregates further).
    pub interval: ConfigDuration,
    /// How long one export may take before it is dropped (and counted). Default 5 s: a slow
    /// collector must not pile exports up.
    pub timeout: ConfigDuration,
    /// The PEM CA bundle an `https://` collector's certificate must chain to (required for
    /// https: the proxy carries no system root store).
    pub ca_file: Option<String>,
}

impl Default for OtlpSection {
    fn default() -> Self {
        OtlpSection {
            endpoint: String::new(),
            interval: ConfigDuration::from_secs(10),
            timeout: ConfigDuration::from_secs(5),
            ca_file: None,
        }
    }
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            metrics: true,
            metric_buckets: Vec::new(),
            access_log: "stdout".to_owned(),
            access_log_keys: true,
            access_log_queue: 8192,
            otlp: None,
            traces: None,
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address the proxy listens on. Default `127.0.0.1:9000`: loopback until an operator
    /// opens it up deliberately.
    pub listen: String,
    /// Client connections open at once. Past it a new connection is refused at once (plain
    /// HTTP: answered `503 SlowDown` with `Retry-After`, which SDKs back off from; TLS:
    /// closed before any handshake work), never left waiting in the accept backlog, so a
    /// client can tell a busy proxy from a dead one. Default 4096: far above what one proxy
    /// replica should carry, and a cap on file descriptors when clients misbehave.
    pub max_connections: usize,
    /// Client connections one address may hold at once (after PROXY protocol); past it, as
    /// past `max_connections`. Default 1024, a quarter of the default limit: one host cannot
    /// take the whole proxy. 0: no bound (behind a load balancer that sends no PROXY header,
    /// every client has the balancer's few addresses).
    pub max_connections_per_client: usize,
    /// Largest request head in bytes (HTTP/1.1 read buffer). Default 64 KiB: S3 heads with many
    /// user metadata headers stay far below; anything larger is rejected with 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query) in bytes. Default 8 KiB (nginx's and HAProxy's
    /// bound): the longest S3 key is 1 KiB, percent-encoded at most 3 KiB, and presigned
    /// parameters add under 2 KiB; anything longer is answered `414`.
    pub max_uri_bytes: usize,
    /// Most header fields in a request. Default 100: hyper's own default, above any SDK's.
    pub max_headers: usize,
    /// How long the proxy drains before it stops accepting, once told to terminate (SIGTERM,
    /// or after `/admin/drain`): `/readyz` answers 503, idle keep-alive connections close,
    /// every response carries `Connection: close`, and connections still arriving (the
    /// endpoint removal takes a while to reach every node's kube-proxy or a load balancer)
    /// are served one request each. Default 5 s: endpoint changes reach kube-proxy within a
    /// second or two. 0: stop accepting at once.
    pub drain_delay: ConfigDuration,
    /// How long shutdown waits for in-flight requests, after the drain delay. Default 30 s
    /// (Kubernetes' default grace period).
    pub shutdown_grace: ConfigDuration,
    /// Serve HTTPS with this certificate (none: plain HTTP).
    pub tls: Option<ServerTlsSection>,
    /// Load balancers whose connections start with a PROXY protocol v2 header giving the real
    /// client address (which identity and logs then use). Default none: nobody can claim an
    /// address. A connection from these networks without a valid header is closed.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// `[server.tls]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSection {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:9000".to_owned(),
            max_connections: 4096,
            max_connections_per_client: 1024,
            max_header_bytes: 64 * 1024,
            max_uri_bytes: crate::s3::DEFAULT_MAX_URI_BYTES,
            max_headers: 100,
            drain_delay: ConfigDuration::from_secs(5),
            shutdown_grace: ConfigDuration::from_secs(30),
            tls: None,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[admin]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/admin/...`). Default
    /// `127.0.0.1:9090`: admin calls change state and must not be reachable by clients.
    pub listen: String,
    /// Whether the proxy reloads its configuration file by itself when the file's content
    /// changes (as a Kubernetes ConfigMap mounted as a directory changes), like SIGHUP: a file
    /// that does not validate is refused (logged, counted) and the running configuration
    /// stays. Default true.
    pub watch_config: bool,
    /// How often the file is read to see whether it changed. Default 2 s: a ConfigMap update
    /// takes a minute to reach the pod anyway, and reading a small file costs nothing.
    pub watch_interval: ConfigDuration,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9090".to_owned(),
            watch_config: true,
            watch_interval: ConfigDuration::from_secs(2),
        }
    }
}
