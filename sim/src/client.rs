//! Client hosts: DNS caching, keep-alive pools, and a seeded Poisson workload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::scenario::{CachePolicy, ClientGroup, Workload};

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
    /// To the proxy at this `host:port`.
    Proxy(String),
}

/// How one request ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// 2xx or 3xx, body read whole.
    Ok,
    /// 503 (SlowDown or ServiceUnavailable).
    SlowDown,
    /// Another 5xx.
    ServerError,
    /// A 4xx.
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
    /// For PUTs answered 200: the key written (checked afterwards: no acknowledged write lost).
    pub written: Option<String>,
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
}

/// A client request gives up after this long (SDK default read timeouts are of this order).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
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
}

impl Pool {
    fn address(&self) -> String {
        match &self.target {
            Target::Proxy(address) => address.clone(),
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
        let stream = turmoil::net::TcpStream::connect(address.as_str())
            .await
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
    });
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start;
    let mut sequence = 0u64;
    let weights = [
        ("GetObject", spec.workload.get),
        ("GetObjectRange", spec.workload.get_range),
        ("HeadObject", spec.workload.head),
        ("PutObject", spec.workload.put),
        ("ListObjectsV2", spec.workload.list),
    ];
    let total_weight: f64 = weights.iter().map(|(_, weight)| weight.max(0.0)).sum();
    loop {
        // Poisson arrivals: exponential gaps with mean 1/rate.
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        next += Duration::from_secs_f64(-uniform.ln() / spec.group.rate.max(1e-9));
        if next.duration_since(start) >= spec.duration {
            break;
        }
        tokio::time::sleep_until(next).await;
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
        let key = if operation == "PutObject" {
            format!("written/{}-{}-{sequence}", spec.group.name, spec.index)
        } else {
            object_key(object)
        };
        let pool = pool.clone();
        let records = spec.records.clone();
        let group = spec.group.name.clone();
        let read_rate = spec.group.read_rate;
        let retries = spec.group.retries;
        tasks.spawn(async move {
            let issued = Instant::now();
            let mut attempt = 0;
            let (class, ttfb) = loop {
                let (class, ttfb) = request(&pool, operation, &key, size, read_rate).await;
                let retryable = matches!(
                    class,
                    Class::SlowDown | Class::ServerError | Class::Connect | Class::Reset
                );
                if !retryable || attempt >= retries {
                    break (class, ttfb);
                }
                // SDK-style backoff: 50 ms, 100 ms, ...
                tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(attempt)).await;
                attempt += 1;
            };
            let record = Record {
                at: issued.duration_since(start),
                operation,
                class,
                latency: issued.elapsed(),
                ttfb,
                group,
                written: (operation == "PutObject" && class == Class::Ok).then_some(key),
            };
            records.lock().expect("single-threaded host").push(record);
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The key of preloaded object `index`.
pub fn object_key(index: usize) -> String {
    format!("objects/{index:05}")
}

/// The bucket every scenario uses.
pub const BUCKET: &str = "sim";

async fn request(
    pool: &Pool,
    operation: &'static str,
    key: &str,
    size: usize,
    read_rate: Option<u64>,
) -> (Class, Option<Duration>) {
    let Ok(_permit) = pool.permits.acquire().await else {
        return (Class::Connect, None);
    };
    let mut connection = match pool.take_idle() {
        Some(connection) => connection,
        None => match pool.connect().await {
            Ok(connection) => connection,
            Err(class) => return (class, None),
        },
    };
    let issued = Instant::now();
    let (method, path, body, range) = match operation {
        "PutObject" => ("PUT", format!("/{BUCKET}/{key}"), Bytes::from(vec![7u8; size]), None),
        "HeadObject" => ("HEAD", format!("/{BUCKET}/{key}"), Bytes::new(), None),
        "ListObjectsV2" => (
            "GET",
            format!("/{BUCKET}?list-type=2&prefix=objects%2F&max-keys=20"),
            Bytes::new(),
            None,
        ),
        "GetObjectRange" => ("GET", format!("/{BUCKET}/{key}"), Bytes::new(), Some("bytes=0-1023")),
        _ => ("GET", format!("/{BUCKET}/{key}"), Bytes::new(), None),
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "s3.cluster");
    if let Some(range) = range {
        builder = builder.header(http::header::RANGE, range);
    }
    let request = builder.body(Full::new(body)).expect("valid request");
    let exchange = async {
        connection.sender.ready().await.map_err(|_| Class::Reset)?;
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|_| Class::Reset)?;
        let ttfb = issued.elapsed();
        let status = response.status().as_u16();
        let declared: Option<usize> = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let mut body = response.into_body();
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Class::Reset)?;
            if let Some(data) = frame.data_ref() {
                received += data.len();
                if let Some(rate) = read_rate {
                    tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate.max(1) as f64)).await;
                }
            }
        }
        if method != "HEAD" && declared.is_some_and(|declared| received < declared) {
            return Err(Class::Truncated);
        }
        let class = match status {
            200..=399 => Class::Ok,
            503 => Class::SlowDown,
            500..=599 => Class::ServerError,
            _ => Class::ClientError,
        };
        Ok((class, ttfb))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok((class, ttfb))) => {
            pool.give_back(connection);
            (class, Some(ttfb))
        }
        Ok(Err(class)) => (class, None),
        Err(_) => (Class::Timeout, None),
    }
}
