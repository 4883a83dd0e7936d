//! Client hosts: DNS caching, keep-alive pools, and a seeded Poisson workload.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::scenario::{Arrivals, CachePolicy, ClientGroup, Signing, Workload};
use crate::sign::{Keys, sign_request, wall_clock};

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

/// Ask the proxy's token exchange for session credentials with the ServiceAccount `token`
/// (`AssumeRoleWithWebIdentity`, as an SDK's web identity provider does): the answer, and the
/// credentials if it gave some.
async fn assume_role(pool: &Pool, token: &str, session: &str, manners: Manners) -> (Answer, Option<Keys>) {
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
        form_encode("arn:aws:iam::000000000000:role/sim"),
        form_encode(session),
        form_encode(token)
    );
    let call = Call {
        body: Bytes::from(form),
        keep_body: true,
        content_type: Some("application/x-www-form-urlencoded"),
        ..Call::new("POST", "/".to_owned())
    };
    let answer = with_retries(pool, &call, manners).await;
    if answer.class != Class::Ok {
        return (answer, None);
    }
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let field = |name: &str| {
        text.split_once(&format!("<{name}>"))
            .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
            .map(|(value, _)| value.to_owned())
    };
    match (field("AccessKeyId"), field("SecretAccessKey"), field("SessionToken")) {
        (Some(access_key), Some(secret_key), Some(session_token)) => (
            answer,
            Some(Keys {
                access_key,
                secret_key,
                session_token: Some(session_token),
            }),
        ),
        _ => (
            Answer {
                class: Class::ServerError,
                ..answer
            },
            None,
        ),
    }
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
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

/// One HTTP exchange to make.
struct Call {
    method: &'static str,
    path: String,
    body: Bytes,
    range: Option<&'static str>,
    /// Keep the response body (small XML answers the client needs).
    keep_body: bool,
    /// The body's `Content-Type`, if it has one that matters (the token exchange's form).
    content_type: Option<&'static str>,
}

impl Call {
    fn new(method: &'static str, path: String) -> Call {
        Call {
            method,
            path,
            body: Bytes::new(),
            range: None,
            keep_body: false,
            content_type: None,
        }
    }
}

/// What came back.
#[derive(Default)]
struct Answer {
    class: Class,
    ttfb: Option<Duration>,
    etag: Option<String>,
    body: Bytes,
}

/// One client operation (a multipart upload is several HTTP requests), each HTTP request
/// retried as the SDKs do.
async fn operate(
    pool: &Pool,
    operation: &'static str,
    key: &str,
    size: usize,
    parts: usize,
    manners: Manners,
) -> Answer {
    let object = format!("/{BUCKET}/{key}");
    let call = match operation {
        "PutObject" => Call {
            body: Bytes::from(vec![7u8; size]),
            ..Call::new("PUT", object)
        },
        "HeadObject" => Call::new("HEAD", object),
        "ListObjectsV2" => Call::new("GET", format!("/{BUCKET}?list-type=2&prefix=objects%2F&max-keys=20")),
        "GetObjectRange" => Call {
            range: Some("bytes=0-1023"),
            ..Call::new("GET", object)
        },
        "MultipartUpload" => return multipart(pool, &object, size, parts, manners).await,
        _ => Call::new("GET", object),
    };
    with_retries(pool, &call, manners).await
}

/// Create, upload `parts` parts, complete; the first failure ends the operation (and aborts
/// the upload, best effort).
async fn multipart(pool: &Pool, object: &str, size: usize, parts: usize, manners: Manners) -> Answer {
    let created = with_retries(
        pool,
        &Call {
            keep_body: true,
            ..Call::new("POST", format!("{object}?uploads"))
        },
        manners,
    )
    .await;
    if created.class != Class::Ok {
        return created;
    }
    let text = String::from_utf8_lossy(&created.body);
    let Some(upload_id) = text
        .split_once("<UploadId>")
        .and_then(|(_, rest)| rest.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
    else {
        return Answer {
            class: Class::ServerError,
            ..created
        };
    };
    let mut complete = String::from("<CompleteMultipartUpload>");
    for number in 1..=parts {
        let part = with_retries(
            pool,
            &Call {
                body: Bytes::from(vec![number as u8; size]),
                ..Call::new("PUT", format!("{object}?partNumber={number}&uploadId={upload_id}"))
            },
            manners,
        )
        .await;
        let etag = part.etag.clone().unwrap_or_default();
        if part.class != Class::Ok {
            let _ = attempt(
                pool,
                &Call::new("DELETE", format!("{object}?uploadId={upload_id}")),
                manners,
            )
            .await;
            return Answer {
                ttfb: created.ttfb,
                ..part
            };
        }
        complete.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    complete.push_str("</CompleteMultipartUpload>");
    let done = with_retries(
        pool,
        &Call {
            body: Bytes::from(complete),
            keep_body: true,
            ..Call::new("POST", format!("{object}?uploadId={upload_id}"))
        },
        manners,
    )
    .await;
    // CompleteMultipartUpload can fail inside a 200 (an <Error> body).
    let class = if done.class == Class::Ok && done.body.windows(7).any(|window| window == b"<Error>") {
        Class::ServerError
    } else {
        done.class
    };
    Answer {
        class,
        ttfb: created.ttfb,
        ..done
    }
}

/// An HTTP request, retried (with SDK-style backoff: 50 ms, 100 ms, ...) when answered 5xx or
/// broken off.
async fn with_retries(pool: &Pool, call: &Call, manners: Manners) -> Answer {
    let mut tries = 0;
    loop {
        let answer = attempt(pool, call, manners).await;
        let retryable = matches!(
            answer.class,
            Class::SlowDown | Class::ServerError | Class::Connect | Class::Reset
        );
        if !retryable || tries >= manners.retries {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(tries)).await;
        tries += 1;
    }
}

/// One try of an HTTP request on a pooled connection.
async fn attempt(pool: &Pool, call: &Call, manners: Manners) -> Answer {
    let failed = |class| Answer {
        class,
        ..Answer::default()
    };
    let Ok(_permit) = pool.permits.acquire().await else {
        return failed(Class::Connect);
    };
    let mut connection = match pool.take_idle() {
        Some(connection) => connection,
        None => match pool.connect().await {
            Ok(connection) => connection,
            Err(class) => return failed(class),
        },
    };
    let issued = Instant::now();
    let mut builder = http::Request::builder()
        .method(call.method)
        .uri(call.path.as_str())
        .header(http::header::HOST, "s3.cluster");
    if let Some(range) = call.range {
        builder = builder.header(http::header::RANGE, range);
    }
    if let Some(content_type) = call.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    let expect = manners
        .continue_wait
        .filter(|_| call.method == "PUT" && !call.body.is_empty());
    if expect.is_some() {
        builder = builder.header(http::header::EXPECT, "100-continue");
    }
    let mut head = builder.body(()).expect("valid request");
    let data = match &pool.keys {
        Some(keys) if pool.signing != Signing::None => {
            match sign_request(&mut head, call.body.clone(), pool.signing, keys, wall_clock(pool.start)) {
                Ok(data) => data,
                // The scenario's keys always sign; a failure here is the simulation's bug.
                Err(error) => panic!("signing a simulated request failed: {error}"),
            }
        }
        _ => call.body.clone(),
    };
    let (body, continued) = match expect {
        Some(wait) => {
            let (tell, heard) = tokio::sync::oneshot::channel::<()>();
            (RequestBody::after_continue(data, heard, wait), Some(tell))
        }
        None => (RequestBody::now(data), None),
    };
    let (parts, ()) = head.into_parts();
    let mut request = http::Request::from_parts(parts, body);
    if let Some(tell) = continued {
        let tell = Mutex::new(Some(tell));
        hyper::ext::on_informational(&mut request, move |response| {
            if response.status() == http::StatusCode::CONTINUE
                && let Some(tell) = tell.lock().expect("single-threaded host").take()
            {
                let _ = tell.send(());
            }
        });
    }
    let read_rate = manners.read_rate;
    let keep_body = call.keep_body;
    let head_only = call.method == "HEAD";
    let exchange = async {
        connection.sender.ready().await.map_err(|_| Class::Reset)?;
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|_| Class::Reset)?;
        let ttfb = issued.elapsed();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let declared: Option<usize> = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let mut body = response.into_body();
        let mut received = 0usize;
        let mut kept = Vec::new();
        if read_rate == Some(0) && !head_only && declared != Some(0) {
            // Stops reading: the response is never consumed; the request times out.
            std::future::pending::<()>().await;
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Class::Reset)?;
            if let Some(data) = frame.data_ref() {
                received += data.len();
                if keep_body {
                    kept.extend_from_slice(data);
                }
                if let Some(rate) = read_rate {
                    tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate.max(1) as f64)).await;
                }
            }
        }
        if !head_only && declared.is_some_and(|declared| received < declared) {
            return Err(Class::Truncated);
        }
        let class = match status {
            200..=399 => Class::Ok,
            403 => Class::Denied,
            503 => Class::SlowDown,
            500..=599 => Class::ServerError,
            _ => Class::ClientError,
        };
        Ok(Answer {
            class,
            ttfb: Some(ttfb),
            etag,
            body: Bytes::from(kept),
        })
    };
    match tokio::time::timeout(manners.timeout, exchange).await {
        Ok(Ok(answer)) => {
            pool.give_back(connection);
            answer
        }
        Ok(Err(class)) => failed(class),
        Err(_) => failed(Class::Timeout),
    }
}

/// A request body: all at once, or (with `Expect: 100-continue`) once the `100 Continue`
/// arrives or the wait runs out, whichever is first.
pub struct RequestBody {
    data: Option<Bytes>,
    gate: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl RequestBody {
    fn now(data: Bytes) -> RequestBody {
        RequestBody {
            data: (!data.is_empty()).then_some(data),
            gate: None,
        }
    }

    fn after_continue(data: Bytes, heard: tokio::sync::oneshot::Receiver<()>, wait: Duration) -> RequestBody {
        RequestBody {
            data: Some(data),
            gate: Some(Box::pin(async move {
                let _ = tokio::time::timeout(wait, heard).await;
            })),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(gate) = self.gate.as_mut() {
            if gate.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            self.gate = None;
        }
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}
