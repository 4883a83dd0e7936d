//! A mock cluster: N nodes serving one store, as the VIPs of one VAST cluster do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use serde::Serialize;

use crate::capacity::CapacityConfig;
use crate::clock::ModelClock;
use crate::fault::Faults;
use crate::node::{NodeHandle, NodeService, build_node, run_node};
use crate::s3::NodeS3;
use crate::stats::{NodeStats, StatsSnapshot};
use crate::store::{MIN_PART_SIZE_DEFAULT, Store};
use crate::transport::{Bind, Listener, TcpBind, hyper_io};

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Access key and secret every node accepts (SigV4 via s3s); `None` allows anonymous
    /// requests.
    pub credentials: Option<(String, String)>,
    /// Capacity of each node.
    pub capacity: CapacityConfig,
    /// Initial faults of each node.
    pub faults: Faults,
    /// Seed of the nodes' fault RNGs (node i uses seed + i).
    pub seed: u64,
    /// Smallest allowed part (except the last) of a multipart upload.
    pub min_part_size: u64,
    /// Date objects by the wall clock (the demo, the standalone binary: people read these
    /// dates) instead of the model clock, whose dates replay exactly (tests, the simulation).
    pub wall_clock: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            credentials: None,
            capacity: CapacityConfig::default(),
            faults: Faults::default(),
            seed: 0,
            min_part_size: MIN_PART_SIZE_DEFAULT,
            wall_clock: false,
        }
    }
}

/// The nodes' services and handles, before any is bound: the caller serves each service on
/// the transport of its choice ([`run_node`]), or uses [`MockCluster::start_tcp`].
pub struct MockCluster {
    /// Per-node services, in node order.
    pub services: Vec<NodeService>,
    /// Per-node handles, in node order.
    pub handles: Vec<NodeHandle>,
    /// The shared store.
    pub store: Arc<Mutex<Store>>,
}

/// The one key pair a cluster accepts. An unknown access key is `InvalidAccessKeyId`, as S3
/// answers (s3s's `SimpleAuth` says `NotSignedUp`).
struct ClusterKey {
    access_key: String,
    secret_key: SecretKey,
}

#[async_trait::async_trait]
impl S3Auth for ClusterKey {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        if access_key == self.access_key {
            Ok(self.secret_key.clone())
        } else {
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}

impl MockCluster {
    /// Build the nodes of `config` over one new store.
    pub fn build(config: &ClusterConfig) -> Self {
        let store = Arc::new(Mutex::new(Store::new(config.min_part_size)));
        let clock = if config.wall_clock {
            ModelClock::wall()
        } else {
            ModelClock::start()
        };
        let mut services = Vec::with_capacity(config.nodes);
        let mut handles = Vec::with_capacity(config.nodes);
        for index in 0..config.nodes {
            let stats = Arc::new(NodeStats::default());
            let mut builder = S3ServiceBuilder::new(NodeS3::new(store.clone(), stats.clone(), clock.clone()));
            if let Some((access_key, secret_key)) = &config.credentials {
                builder.set_auth(ClusterKey {
                    access_key: access_key.clone(),
                    secret_key: SecretKey::from(secret_key.clone()),
                });
            }
            let (handle, service) = build_node(
                index,
                builder.build(),
                stats,
                config.capacity,
                config.faults,
                config.seed,
            );
            services.push(service);
            handles.push(handle);
        }
        MockCluster {
            services,
            handles,
            store,
        }
    }

    /// Build and serve every node on loopback TCP: node i on `first_port + i`, or on any free
    /// port when `first_port` is 0. Returns once every node listens.
    pub async fn start_tcp(
        config: &ClusterConfig,
        host: std::net::IpAddr,
        first_port: u16,
    ) -> std::io::Result<Vec<NodeHandle>> {
        let cluster = MockCluster::build(config);
        let mut failures = Vec::with_capacity(cluster.services.len());
        for (index, service) in cluster.services.into_iter().enumerate() {
            let port = if first_port == 0 { 0 } else { first_port + index as u16 };
            let bind = TcpBind::new(SocketAddr::new(host, port));
            // Bind here so errors (port taken) surface to the caller; the node serves on it.
            bind.bind_now().await?;
            let (failed, failure) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                if let Err(error) = run_node(bind, service).await {
                    tracing::error!(node = index, %error, "node stopped: cannot bind");
                    let _ = failed.send(error);
                }
            });
            failures.push(failure);
        }
        // Each node listens, or says why it cannot (a node that fails to bind must not leave
        // its caller waiting for an address that never comes).
        for (index, (handle, failure)) in cluster.handles.iter().zip(&mut failures).enumerate() {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while handle.address().is_none() {
                if let Ok(error) = failure.try_recv() {
                    return Err(std::io::Error::new(error.kind(), format!("node {index}: {error}")));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(std::io::Error::other(format!(
                        "node {index} did not listen within 10 s"
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        Ok(cluster.handles)
    }
}

/// One node's entry in the stats document.
#[derive(Debug, Serialize)]
struct NodeEntry {
    node: usize,
    address: Option<SocketAddr>,
    crashed: bool,
    queue_len: usize,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

/// The stats document: every node's counters as a JSON array.
pub fn stats_json(handles: &[NodeHandle]) -> String {
    let entries: Vec<NodeEntry> = handles
        .iter()
        .map(|handle| NodeEntry {
            node: handle.index(),
            address: handle.address(),
            crashed: handle.is_crashed(),
            queue_len: handle.queue_len(),
            stats: handle.stats(),
        })
        .collect();
    serde_json::to_string_pretty(&entries).expect("stats serialise")
}

/// Serve the stats document on `bind` (any path, GET) until the task is dropped.
pub async fn serve_stats<B: Bind>(bind: B, handles: Vec<NodeHandle>) -> std::io::Result<()> {
    let mut listener = bind.bind().await?;
    let handles = Arc::new(handles);
    loop {
        let (io, _) = listener.accept().await?;
        let handles = handles.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request: http::Request<hyper::body::Incoming>| {
                let body = stats_json(&handles);
                async move {
                    let mut response = http::Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(hyper_io(io), service).await;
        });
    }
}
