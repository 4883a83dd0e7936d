//! Scenario files: what cluster, which clients, what workload, which faults when.

use serde::Deserialize;
use storefront_core::config::ConfigDuration;

/// A scenario, as written in `scenarios/<name>.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (the file name without `.toml`).
    pub name: String,
    /// One line for `--list`.
    pub description: String,
    /// How long clients send requests (simulated time).
    pub duration: ConfigDuration,
    /// The storage cluster.
    pub cluster: ClusterSpec,
    /// How the cluster's DNS name resolves.
    #[serde(default)]
    pub dns: DnsSpec,
    /// Groups of client hosts.
    pub clients: Vec<ClientGroup>,
    /// The request mix.
    #[serde(default)]
    pub workload: Workload,
    /// Faults and changes over time.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Extra proxy configuration (TOML sections such as `[balance]` or `[timeouts]`).
    #[serde(default)]
    pub proxy_config: String,
    /// Extra keys for every pool of the proxy (inside its `[[pools]]` table, such as
    /// `connections = { min_idle = 2 }`).
    #[serde(default)]
    pub pool_config: String,
    /// How the proxies learn their backends: `static` addresses (default), or `dns`, a name
    /// per pool that the simulated DNS answers with every node of the pool, re-resolved
    /// every second (the runtime's own DNS driver, through the simulation's resolver).
    #[serde(default)]
    pub proxy_backends: ProxyBackends,
    /// The modes to run, by report name (`direct`, `proxy-p2c-peak-ewma`, ...); default every
    /// one. A scenario whose clients sign for the proxy or ask it for sessions has no direct
    /// mode: the storage nodes know neither its keys nor its token exchange.
    #[serde(default)]
    pub modes: Vec<String>,
    /// The Kubernetes cluster the clients' pods run in: the API server the proxies watch pods
    /// on and have tokens reviewed by (a host of its own, started when a group is a pod or a
    /// token is given).
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// The proxy replicas: how many per zone, and how the connection-level balancer in front
    /// of them (a Kubernetes Service through kube-proxy) learns which are ready.
    #[serde(default)]
    pub fleet: FleetSpec,
}

/// `[fleet]`: proxy replicas behind a Service. Clients reach their zone's replicas (the
/// Service's topology-aware routing); each new connection goes to a ready replica picked at
/// random, as kube-proxy's rules pick an endpoint. Each replica has its own seed, balancer
/// state and health view, and nothing shared but the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSpec {
    /// Replicas per zone (the cluster without zones: in all). Default 1.
    pub replicas: usize,
    /// How long a replica's readiness change takes to reach the connection balancer (the
    /// kubelet's probe period, the endpoint controller, kube-proxy's sync). Default 1 s.
    pub endpoint_lag: ConfigDuration,
    /// How long a replaced replica's new process takes to start (image present, container
    /// created) in a `rollout`. Default 1 s.
    pub start_delay: ConfigDuration,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            replicas: 1,
            endpoint_lag: ConfigDuration::from_secs(1),
            start_delay: ConfigDuration::from_secs(1),
        }
    }
}

/// `[kubernetes]`: what the simulated API server knows besides the pods.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// ServiceAccount tokens it authenticates (`[[kubernetes.tokens]]`).
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
}

/// A ServiceAccount token the API server authenticates.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The token text.
    pub token: String,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
}

/// How a client group signs its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signing {
    /// Unsigned (anonymous, or known by its address).
    #[default]
    None,
    /// SigV4 in the `Authorization` header; uploads carry their SHA-256 (as awscli over http).
    Header,
    /// SigV4 in the query string (presigned URLs, as `aws s3 presign` makes them).
    Presigned,
    /// SigV4 in the header; uploads as signed aws-chunked streams
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, as the Java SDK sends over http).
    Chunked,
}

/// The pod a client host is, for the simulated Kubernetes (`[clients.pod]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Service account. Default `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// What the proxy's policy is expected to do with a group's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Every request is allowed (and must then succeed as any request does).
    #[default]
    Allowed,
    /// Every request is refused with 403 (one that succeeds breaks an invariant).
    Denied,
}

/// Where the proxies' pools get their backends from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyBackends {
    /// Each node's address, listed in the configuration.
    #[default]
    Static,
    /// One DNS name per pool.
    Dns,
}

/// The storage cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Number of nodes.
    pub nodes: usize,
    /// Service slots per node.
    #[serde(default = "default_slots")]
    pub slots: usize,
    /// Waiting requests per node before 503 SlowDown.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Service time of an empty request.
    #[serde(default = "default_base")]
    pub base_latency: ConfigDuration,
    /// Bytes per second per slot, in MiB.
    #[serde(default = "default_bandwidth")]
    pub bandwidth_mib: u64,
    /// Data centre of each node, in node order (none: one data centre). With zones, clients
    /// name their zone, resolve a per-zone DNS name, and each zone has its own proxy whose
    /// pool is its zone's nodes, failing over to the other zones when none is available.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Segments a TCP connection carries unread before the sender blocks (turmoil's flow
    /// control; nodes send bodies in frames of at most 64 KiB). Default 64.
    #[serde(default = "default_tcp_window")]
    pub tcp_window: usize,
    /// One-way network latency between hosts of different zones.
    #[serde(default = "default_cross_zone")]
    pub cross_zone_latency: ConfigDuration,
}

impl ClusterSpec {
    /// The zone of node `index` (0-based), if the cluster has zones.
    pub fn zone_of(&self, index: usize) -> Option<&str> {
        self.zones.get(index).map(String::as_str)
    }

    /// The distinct zones, in order of first appearance.
    pub fn zone_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for zone in &self.zones {
            if !names.contains(&zone.as_str()) {
                names.push(zone);
            }
        }
        names
    }
}

fn default_slots() -> usize {
    8
}
fn default_queue() -> usize {
    64
}
fn default_base() -> ConfigDuration {
    ConfigDuration::from_millis(4)
}
fn default_bandwidth() -> u64 {
    500
}
fn default_tcp_window() -> usize {
    64
}
fn default_cross_zone() -> ConfigDuration {
    ConfigDuration::from_millis(2)
}

/// The DNS name of the cluster: every node's address, in an order a resolver cache rotates
/// once per TTL (so every client resolving within one TTL gets the same first address).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Resolver cache lifetime.
    pub ttl: ConfigDuration,
}

impl Default for DnsSpec {
    fn default() -> Self {
        DnsSpec {
            ttl: ConfigDuration::from_secs(30),
        }
    }
}

/// How a client caches DNS answers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Resolve once, keep the answer forever (the JVM with a security manager).
    Forever,
    /// Resolve again for each new connection (honouring the resolver's TTL).
    Ttl,
}

/// A group of identical client hosts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientGroup {
    /// Host name prefix (`spark` gives `spark-1`, `spark-2`, ...).
    pub name: String,
    /// Number of clients.
    pub count: usize,
    /// Clients per host (default 1): more than one run side by side on one host, each with
    /// its own DNS cache, keep-alive pool and workload, sharing its network address (pods on
    /// one Kubernetes node, as far as a proxy behind a Service can tell). Every simulated
    /// millisecond turmoil walks every pair of hosts for every host, so hundreds of clients
    /// are simulated on tens of hosts. Not with `pod`: a pod is known by its own address.
    #[serde(default = "default_per_host")]
    pub per_host: usize,
    /// Requests per second per host (Poisson arrivals).
    pub rate: f64,
    /// DNS caching.
    pub cache: CachePolicy,
    /// Keep-alive connections per host (requests beyond wait for one).
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// A connection is replaced after this long (and the name resolved again under `ttl`).
    #[serde(default = "default_connection_ttl")]
    pub connection_ttl: ConfigDuration,
    /// Read response bodies at most this fast (bytes per second); none: as fast as they come.
    #[serde(default)]
    pub read_rate: Option<u64>,
    /// Retries of a request answered 5xx or broken off, as SDKs make (AWS standard mode: 2
    /// retries, 3 attempts), with exponential backoff from 50 ms.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The group's data centre (required when the cluster has zones).
    #[serde(default)]
    pub zone: Option<String>,
    /// When the group starts sending (a step in load).
    #[serde(default = "default_start")]
    pub start: ConfigDuration,
    /// A request gives up after this long (SDK read timeouts are of this order).
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// PUTs carry `Expect: 100-continue`; the body is sent on `100 Continue`, or after
    /// `continue_wait` without one (as curl and the SDKs do).
    #[serde(default)]
    pub expect_continue: bool,
    /// How long an `Expect: 100-continue` upload waits for the `100` before sending anyway.
    #[serde(default = "default_continue_wait")]
    pub continue_wait: ConfigDuration,
    /// How requests arrive.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// How requests are signed (`none`, `header`, `presigned`, `chunked`).
    #[serde(default)]
    pub sign: Signing,
    /// The access key to sign with (`sign` other than `none`, without `sts_token`).
    #[serde(default)]
    pub access_key: Option<String>,
    /// Its secret.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Sign with session credentials from the proxy's token exchange
    /// (`AssumeRoleWithWebIdentity`), asked for with this ServiceAccount token.
    #[serde(default)]
    pub sts_token: Option<String>,
    /// The group's hosts are pods of the simulated Kubernetes.
    #[serde(default)]
    pub pod: Option<PodSpec>,
    /// What the proxy's policy does with the group's requests.
    #[serde(default)]
    pub expect: Expect,
}

/// How a group's requests arrive in time.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Independent arrivals (exponential gaps) at `rate`.
    #[default]
    Poisson,
    /// Batches of requests issued together (geometric size, mean 8), the batches Poisson at
    /// `rate / 8`: the same mean rate, far burstier.
    Bursty,
}

fn default_start() -> ConfigDuration {
    ConfigDuration::from_secs(0)
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_continue_wait() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

fn default_retries() -> u32 {
    2
}

fn default_per_host() -> usize {
    1
}

fn default_pool() -> usize {
    4
}
fn default_connection_ttl() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

/// The request mix (weights need not sum to 1) and the objects.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Weight of GET (whole object).
    pub get: f64,
    /// Weight of ranged GET.
    pub get_range: f64,
    /// Weight of HEAD.
    pub head: f64,
    /// Weight of PUT.
    pub put: f64,
    /// Weight of LIST (ListObjectsV2).
    pub list: f64,
    /// Weight of a multipart upload (create, parts, complete: one client operation).
    pub multipart: f64,
    /// Parts per multipart upload (each `size_min..=size_max` bytes).
    pub parts: usize,
    /// Objects preloaded per run.
    pub objects: usize,
    /// Smallest object, bytes.
    pub size_min: usize,
    /// Largest object, bytes.
    pub size_max: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            get: 0.55,
            get_range: 0.1,
            head: 0.1,
            put: 0.1,
            list: 0.1,
            multipart: 0.05,
            parts: 3,
            objects: 64,
            size_min: 1024,
            size_max: 64 * 1024,
        }
    }
}

/// Something that happens to a node at a point in simulated time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When.
    pub at: ConfigDuration,
    /// Which node (1-based), for node actions.
    #[serde(default)]
    pub node: Option<usize>,
    /// Which zone, for `partition` and `repair`.
    #[serde(default)]
    pub zone: Option<String>,
    /// What.
    pub action: Action,
    /// The slow factor, for `slow`; how much longer a stalled request takes, for `stall`.
    #[serde(default)]
    pub factor: Option<f64>,
    /// For `stall`: the share of the node's requests that stall (0 to 1).
    #[serde(default)]
    pub rate: Option<f64>,
    /// For `partition`: only the answers are lost (requests still arrive at the nodes; the
    /// nastiest kind, as every request hangs instead of failing).
    #[serde(default)]
    pub oneway: bool,
}

/// What an event does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Multiply the node's service time by `factor`.
    Slow,
    /// From now on a share `rate` of the node's requests take `factor` times longer (a heavy
    /// tail: a garbage collection, a rebuild). `heal` ends it.
    Stall,
    /// Back to normal speed.
    Heal,
    /// The node's host crashes (connections reset, nothing answers).
    Crash,
    /// The node's host comes back.
    Restart,
    /// Cut the zone's nodes off from every client and proxy.
    Partition,
    /// Heal a partition of the zone.
    Repair,
    /// Replace every proxy replica, one at a time, as a Deployment's rolling update does
    /// (`maxUnavailable: 1`, `maxSurge: 0`): the replica is told to terminate (SIGTERM: it
    /// drains for `server.drain_delay`, then stops and finishes what is in flight), leaves the
    /// Service's endpoints after `fleet.endpoint_lag`, its process is replaced after
    /// `fleet.start_delay`, and the next one follows once the new process is ready and back in
    /// the endpoints.
    Rollout,
}

impl Action {
    /// The action names a node (not a zone).
    pub fn is_node_action(self) -> bool {
        !matches!(self, Action::Partition | Action::Repair | Action::Rollout)
    }

    /// The action names a zone.
    pub fn is_zone_action(self) -> bool {
        matches!(self, Action::Partition | Action::Repair)
    }
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not found among the built-in scenarios or on disk.
    #[error("no scenario `{0}` (see --list)")]
    Unknown(String),
    /// The file does not parse.
    #[error("scenario `{file}`: {message}")]
    Invalid {
        /// Which file.
        file: String,
        /// The parser's message (names the line and key).
        message: String,
    },
}

impl Scenario {
    /// The modes the scenario runs in (`modes`, default every one).
    pub fn modes(&self) -> Vec<crate::run::Mode> {
        if self.modes.is_empty() {
            crate::run::Mode::ALL.to_vec()
        } else {
            self.modes
                .iter()
                .filter_map(|name| crate::run::Mode::named(name))
                .collect()
        }
    }

    /// Whether the scenario needs the simulated Kubernetes API server.
    pub fn has_kubernetes(&self) -> bool {
        !self.kubernetes.tokens.is_empty() || self.clients.iter().any(|group| group.pod.is_some())
    }

    /// Parse a scenario from TOML text.
    pub fn from_toml(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError::Invalid {
            file: file.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let zones = scenario.cluster.zone_names();
        let problem = if scenario.cluster.nodes == 0 {
            Some("cluster.nodes must be at least 1".to_owned())
        } else if scenario.clients.is_empty() {
            Some("at least one [[clients]] group is needed".to_owned())
        } else if !scenario.cluster.zones.is_empty() && scenario.cluster.zones.len() != scenario.cluster.nodes {
            Some(format!(
                "cluster.zones names {} zones for {} nodes (one per node)",
                scenario.cluster.zones.len(),
                scenario.cluster.nodes
            ))
        } else if let Some(group) = scenario.clients.iter().find(|group| match &group.zone {
            Some(zone) => !zones.contains(&zone.as_str()),
            None => !zones.is_empty(),
        }) {
            Some(format!(
                "clients `{}`: zone {:?} is not one of cluster.zones {zones:?}",
                group.name, group.zone
            ))
        } else if let Some(event) = scenario.events.iter().find(|event| {
            event.action.is_node_action()
                && !event
                    .node
                    .is_some_and(|node| (1..=scenario.cluster.nodes).contains(&node))
        }) {
            Some(format!(
                "a `{:?}` event at {:?} needs `node` from 1 to {}",
                event.action,
                event.at.get(),
                scenario.cluster.nodes
            ))
        } else if let Some(event) = scenario.events.iter().find(|event| {
            event.action.is_zone_action() && !event.zone.as_deref().is_some_and(|zone| zones.contains(&zone))
        }) {
            Some(format!(
                "a `{:?}` event at {:?} needs `zone`, one of cluster.zones {zones:?}",
                event.action,
                event.at.get()
            ))
        } else if let Some(group) = scenario.clients.iter().find(|group| {
            let partial = group.access_key.is_some() != group.secret_key.is_some();
            let sources = usize::from(group.access_key.is_some()) + usize::from(group.sts_token.is_some());
            partial || sources > 1 || (sources == 1) == (group.sign == Signing::None)
        }) {
            Some(format!(
                "clients `{}`: a signing group (`sign` not \"none\") needs `access_key` with `secret_key`, or `sts_token`; other groups neither",
                group.name
            ))
        } else if let Some(mode) = scenario
            .modes
            .iter()
            .find(|mode| crate::run::Mode::named(mode).is_none())
        {
            Some(format!(
                "modes: no mode `{mode}` (one of {})",
                crate::run::Mode::ALL.map(crate::run::Mode::name).join(", ")
            ))
        } else if scenario
            .events
            .iter()
            .any(|event| event.action == Action::Slow && event.factor.is_none())
        {
            Some("a `slow` event needs `factor`".to_owned())
        } else if scenario.events.iter().any(|event| {
            event.action == Action::Stall
                && !(event.factor.is_some() && event.rate.is_some_and(|rate| (0.0..=1.0).contains(&rate)))
        }) {
            Some("a `stall` event needs `factor` and a `rate` from 0 to 1".to_owned())
        } else if let Some(group) = scenario
            .clients
            .iter()
            .find(|group| group.per_host == 0 || (group.per_host != 1 && group.pod.is_some()))
        {
            Some(format!(
                "clients `{}`: `per_host` must be at least 1, and 1 for pods (a pod is known by its own address)",
                group.name
            ))
        } else if scenario.fleet.replicas == 0 {
            Some("fleet.replicas must be at least 1".to_owned())
        } else {
            None
        };
        match problem {
            Some(message) => Err(ScenarioError::Invalid {
                file: file.to_owned(),
                message,
            }),
            None => Ok(scenario),
        }
    }
}
