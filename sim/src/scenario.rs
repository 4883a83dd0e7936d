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
    /// Number of hosts.
    pub count: usize,
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
}

fn default_retries() -> u32 {
    2
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
            get: 0.6,
            get_range: 0.1,
            head: 0.1,
            put: 0.1,
            list: 0.1,
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
    /// Which node (1-based).
    pub node: usize,
    /// What.
    pub action: Action,
    /// The slow factor, for `slow`.
    #[serde(default)]
    pub factor: Option<f64>,
}

/// What an event does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Multiply the node's service time by `factor`.
    Slow,
    /// Back to normal speed.
    Heal,
    /// The node's host crashes (connections reset, nothing answers).
    Crash,
    /// The node's host comes back.
    Restart,
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
    /// Parse a scenario from TOML text.
    pub fn from_toml(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError::Invalid {
            file: file.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let problem = if scenario.cluster.nodes == 0 {
            Some("cluster.nodes must be at least 1".to_owned())
        } else if scenario.clients.is_empty() {
            Some("at least one [[clients]] group is needed".to_owned())
        } else if let Some(event) = scenario
            .events
            .iter()
            .find(|event| event.node == 0 || event.node > scenario.cluster.nodes)
        {
            Some(format!(
                "an event names node {} (nodes are 1 to {})",
                event.node, scenario.cluster.nodes
            ))
        } else if scenario
            .events
            .iter()
            .any(|event| event.action == Action::Slow && event.factor.is_none())
        {
            Some("a `slow` event needs `factor`".to_owned())
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
