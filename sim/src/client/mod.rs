//! Client hosts: DNS caching, keep-alive pools, and a seeded Poisson workload.

mod operations;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::fleet::Service;
use crate::scenario::{Arrivals, CachePolicy, ClientGroup, Signing, Workload};
use crate::sign::Keys;
use operations::{RequestBody, assume_role, operate};

/// The cluster's DNS name as a resolver cache serves it: every node, rotated once per TTL.
#[derive(Clone, Debug)]
pub struct DnsModel {
    /// `host:port` of every node, in their base order.
    pub nodes: Vec<String>,
    /// Resolver cache lifetime.
    pub ttl: Duration,
}

impl DnsModel {
    /// The answer at simulated time `since_start`: the node list rotated by the number of TTLs
    /// elapsed, so everyone resolving within one TTL gets the same first address.
    pub fn resolve(&self, since_start: Duration) -> &str {
        let windows = (since_start.as_nanos() / self.ttl.as_nanos().max(1)) as usize;
        &self.nodes[windows % self.nodes.len()]
    }
}

/// Where a client sends its requests.
#[derive(Clone, Debug)]
pub enum Target {
    /// Straight to the nodes, through the DNS model.
    Direct(DnsModel),
    /// To the proxy replicas behind this Service.
    Proxy(Arc<Service>),
}

/// How one request ended, as the client saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// 2xx or 3xx, body read whole.
    #[default]
    Ok,
    /// 503 (SlowDown or ServiceUnavailable).
    SlowDown,
    /// Another 5xx.
    ServerError,
    /// 403: refused by the proxy's policy or its signature checks.
    Denied,
    /// Another 4xx.
    ClientError,
    /// No connection could be made.
    Connect,
    /// The connection broke before or during the response.
    Reset,
    /// The body ended short of its declared length without an error (must never happen).
    Truncated,
    /// No answer within the client's timeout.
    Timeout,
}

impl Class {
    /// A stable name for the report.
    pub fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::SlowDown => "slow_down",
            Class::ServerError => "server_error",
            Class::Denied => "denied",
            Class::ClientError => "client_error",
            Class::Connect => "connect",
            Class::Reset => "reset",
            Class::Truncated => "truncated",
            Class::Timeout => "timeout",
        }
    }
}

/// One request's record.
#[derive(Clone, Debug)]
pub struct Record {
    /// Simulated time the request was issued, since the run started.
    pub at: Duration,
    /// The operation.
    pub operation: &'static str,
    /// How it ended.
    pub class: Class,
    /// Time to the whole response.
    pub latency: Duration,
    /// Time to the response head.
    pub ttfb: Option<Duration>,
    /// Client group.
    pub group: String,
    /// For PUTs answered 200: the key written and the size sent (checked afterwards: no
    /// acknowledged write lost, none stored at another size, as a body stored with its
    /// aws-chunked framing would be).
    pub written: Option<(String, usize)>,
}

/// Everything a client host needs.
#[derive(Clone)]
pub struct ClientSpec {
    /// Group settings.
    pub group: ClientGroup,
    /// Host index within the group (0-based).
    pub index: usize,
    /// Where requests go.
    pub target: Target,
    /// Request mix and objects.
    pub workload: Workload,
    /// How long to send.
    pub duration: Duration,
    /// Workload RNG seed.
    pub seed: u64,
    /// Where records go.
    pub records: Arc<Mutex<Vec<Record>>>,
    /// Operations issued (every one must leave exactly one record).
    pub issued: Arc<AtomicU64>,
    /// HTTP requests the clients retried (SDK retries after a 5xx or a broken connection).
    pub retried: Arc<AtomicU64>,
}

struct Connection {
    sender: http1::SendRequest<RequestBody>,
    created: Instant,
}

/// A keep-alive pool of at most `size` connections, each replaced after its TTL.
struct Pool {
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
    target: Target,
    cache: CachePolicy,
    cached: Mutex<Option<String>>,
    ttl: Duration,
    start: Instant,
    /// How requests are signed, and with what (none: unsigned).
    signing: Signing,
    keys: Option<Keys>,
    /// Which replica a new connection goes to (its own draws: the workload's stay as they are).
    endpoints: Mutex<StdRng>,
    /// Requests retried, as an SDK retries (shared by the run's clients).
    retried: Arc<AtomicU64>,
}

impl Pool {
    fn address(&self) -> String {
        match &self.target {
            Target::Proxy(service) => service
                .pick(&mut self.endpoints.lock().expect("single-threaded host"))
                .to_owned(),
            Target::Direct(dns) => {
                let now = self.start.elapsed();
                match self.cache {
                    CachePolicy::Ttl => dns.resolve(now).to_owned(),
                    CachePolicy::Forever => {
                        let mut cached = self.cached.lock().expect("single-threaded host");
                        cached.get_or_insert_with(|| dns.resolve(now).to_owned()).clone()
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Connection, Class> {
        let address = self.address();
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, turmoil::net::TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| Class::Connect)?
            .map_err(|_| Class::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Class::Connect)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            created: Instant::now(),
        })
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("single-threaded host");
        while let Some(connection) = idle.pop() {
            if connection.created.elapsed() < self.ttl && !connection.sender.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, connection: Connection) {
        if connection.created.elapsed() < self.ttl && !connection.sender.is_closed() {
            self.idle.lock().expect("single-threaded host").push(connection);
        }
    }
}

/// How a group's hosts behave on the wire.
#[derive(Clone, Copy, Debug)]
struct Manners {
    /// Body bytes per second read (0: stops reading after the head).
    read_rate: Option<u64>,
    /// A request gives up after this long.
    timeout: Duration,
    /// Uploads wait this long for `100 Continue` (none: no `Expect`).
    continue_wait: Option<Duration>,
    /// Retries per HTTP request.
    retries: u32,
}

/// Run one client host: issue requests until the duration ends, then wait for them.
pub async fn run(spec: ClientSpec) -> turmoil::Result {
    let start = Instant::now();
    let pool = Arc::new(Pool {
        permits: Semaphore::new(spec.group.pool.max(1)),
        idle: Mutex::new(Vec::new()),
        target: spec.target.clone(),
        cache: spec.group.cache,
        cached: Mutex::new(None),
        ttl: spec.group.connection_ttl.get(),
        start,
        signing: spec.group.sign,
        keys: match (&spec.group.access_key, &spec.group.secret_key) {
            (Some(access_key), Some(secret_key)) => Some(Keys {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                session_token: None,
            }),
            _ => None,
        },
        endpoints: Mutex::new(StdRng::seed_from_u64(spec.seed ^ 0x05e4_11ce_50ff_1ee7)),
        retried: spec.retried.clone(),
    });
    let manners = Manners {
        read_rate: spec.group.read_rate,
        timeout: spec.group.timeout.get(),
        continue_wait: spec.group.expect_continue.then(|| spec.group.continue_wait.get()),
        retries: spec.group.retries,
    };
    let mut pool = pool;
    if let Some(token) = &spec.group.sts_token {
        // Session credentials first, from the proxy's token exchange (as an SDK configured
        // with a web identity token file does); without them the host sends nothing else.
        spec.issued.fetch_add(1, Ordering::Relaxed);
        let issued = Instant::now();
        let name = format!("{}-{}", spec.group.name, spec.index + 1);
        let (answer, keys) = assume_role(&pool, token, &name, manners).await;
        spec.records.lock().expect("single-threaded host").push(Record {
            at: issued.duration_since(start),
            operation: "AssumeRoleWithWebIdentity",
            class: answer.class,
            latency: issued.elapsed(),
            ttfb: answer.ttfb,
            group: spec.group.name.clone(),
            written: None,
        });
        match keys {
            Some(keys) => Arc::get_mut(&mut pool).expect("no request is in flight yet").keys = Some(keys),
            None => return Ok(()),
        }
    }
    let pool = pool;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start + spec.group.start.get();
    let mut sequence = 0u64;
    let weights = [
        ("GetObject", spec.workload.get),
        ("GetObjectRange", spec.workload.get_range),
        ("HeadObject", spec.workload.head),
        ("PutObject", spec.workload.put),
        ("ListObjectsV2", spec.workload.list),
        ("MultipartUpload", spec.workload.multipart),
    ];
    let total_weight: f64 = weights.iter().map(|(_, weight)| weight.max(0.0)).sum();
    let bursty = spec.group.arrivals == Arrivals::Bursty;
    let arrival_rate = if bursty {
        spec.group.rate / MEAN_BURST
    } else {
        spec.group.rate
    };
    loop {
        // Poisson arrivals (of single requests, or of bursts): exponential gaps.
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        next += Duration::from_secs_f64(-uniform.ln() / arrival_rate.max(1e-9));
        if next.duration_since(start) >= spec.duration {
            break;
        }
        tokio::time::sleep_until(next).await;
        let batch = if bursty {
            // Geometric with mean MEAN_BURST.
            let mut size = 1;
            while rng.random_bool(1.0 - 1.0 / MEAN_BURST) && size < 64 {
                size += 1;
            }
            size
        } else {
            1
        };
        for _ in 0..batch {
            let mut ticket = rng.random_range(0.0..total_weight.max(f64::EPSILON));
            let operation = weights
                .iter()
                .find(|(_, weight)| {
                    let hit = ticket < weight.max(0.0);
                    ticket -= weight.max(0.0);
                    hit
                })
                .map_or("GetObject", |(name, _)| name);
            let object = rng.random_range(0..spec.workload.objects.max(1));
            let size = rng.random_range(spec.workload.size_min..=spec.workload.size_max.max(spec.workload.size_min));
            sequence += 1;
            let key = if matches!(operation, "PutObject" | "MultipartUpload") {
                format!("written/{}-{}-{sequence}", spec.group.name, spec.index)
            } else {
                object_key(object)
            };
            let pool = pool.clone();
            let records = spec.records.clone();
            let group = spec.group.name.clone();
            let parts = spec.workload.parts.max(1);
            spec.issued.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let issued = Instant::now();
                let answer = operate(&pool, operation, &key, size, parts, manners).await;
                let record = Record {
                    at: issued.duration_since(start),
                    operation,
                    class: answer.class,
                    latency: issued.elapsed(),
                    ttfb: answer.ttfb,
                    group,
                    written: (matches!(operation, "PutObject" | "MultipartUpload") && answer.class == Class::Ok).then(
                        || {
                            (
                                key,
                                if operation == "MultipartUpload" {
                                    size * parts
                                } else {
                                    size
                                },
                            )
                        },
                    ),
                };
                records.lock().expect("single-threaded host").push(record);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// How long a client waits for a TCP connection (the AWS SDKs' default is of this order).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Mean requests per burst with bursty arrivals.
const MEAN_BURST: f64 = 8.0;

/// The key of preloaded object `index`.
pub fn object_key(index: usize) -> String {
    format!("objects/{index:05}")
}

/// The bucket every scenario uses.
pub const BUCKET: &str = "sim";
