//! Test harness: an s3-mock cluster, a storefront proxy in front of it (in-process), and
//! aws-sdk-s3 clients for both.
#![allow(dead_code)]

pub mod collector;
pub mod exposition;
pub mod pki;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, retry::RetryConfig};
use aws_smithy_http_client::tls;
use s3_mock::{ClusterConfig, MockCluster, NodeHandle};
use storefront::App;
use storefront::transport::TcpConnector;
use storefront_core::config::Config;

pub const BACKEND_KEY: &str = "backend-key";
pub const BACKEND_SECRET: &str = "backend-secret";

pub struct Harness {
    pub nodes: Vec<NodeHandle>,
    pub app: Arc<App<TcpConnector>>,
    pub endpoint: SocketAddr,
}

impl Harness {
    /// An SDK client for the proxy (any credentials: the proxy runs in trust mode).
    pub fn client(&self) -> aws_sdk_s3::Client {
        client(self.endpoint, "caller-key", "caller-secret")
    }

    /// An SDK client straight to node `index`, with the backend credentials.
    pub fn direct(&self, index: usize) -> aws_sdk_s3::Client {
        client(self.nodes[index].address().expect("bound"), BACKEND_KEY, BACKEND_SECRET)
    }
}

/// The seed of every test proxy's RNG: a production proxy seeds from OS entropy, a test replays
/// the same picks run after run (as every test did before proxies had their own seeds).
pub const TEST_SEED: u64 = 1;

/// The proxy's configuration for `nodes`, plus `extra` TOML sections before the pools.
pub fn config_text(nodes: &[NodeHandle], extra: &str) -> String {
    let backends: Vec<String> = nodes
        .iter()
        .map(|node| format!("\"{}\"", node.address().expect("bound")))
        .collect();
    // The tests read records through metrics and answers; an access log line per request
    // would only fill their output (the access log's own tests turn it on).
    let telemetry = if extra.contains("[telemetry]") {
        ""
    } else {
        "[telemetry]\naccess_log = \"off\"\n\n"
    };
    format!(
        "[auth]\nmode = \"trust\"\n\n{telemetry}{extra}\n\n[[pools]]\nname = \"dc1\"\nbackends = [{}]\n\n[pools.credentials]\naccess_key = \"{BACKEND_KEY}\"\nsecret_key = \"{BACKEND_SECRET}\"\n",
        backends.join(", ")
    )
}

/// A cluster of `count` nodes and a proxy in front configured with `extra` (active health
/// checks off unless `extra` turns them on, so tests count only their own requests).
pub async fn harness(count: usize, extra: &str) -> Harness {
    harness_with(count, ClusterConfig::default(), extra).await
}

pub async fn harness_with(count: usize, mut cluster: ClusterConfig, extra: &str) -> Harness {
    cluster.nodes = count;
    cluster.credentials = Some((BACKEND_KEY.into(), BACKEND_SECRET.into()));
    let nodes = MockCluster::start_tcp(&cluster, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .expect("mock cluster");
    let extra = if extra.contains("[health.active]") {
        extra.to_owned()
    } else {
        format!("[health.active]\nenabled = false\n{extra}")
    };
    let (app, endpoint) = serve_text(&config_text(&nodes, &extra)).await;
    Harness { nodes, app, endpoint }
}

/// One s3-mock node on loopback (IPv6 where [`local`] says so), with the backend credentials.
pub async fn one_node() -> Vec<NodeHandle> {
    MockCluster::start_tcp(
        &ClusterConfig {
            nodes: 1,
            credentials: Some((BACKEND_KEY.into(), BACKEND_SECRET.into())),
            ..Default::default()
        },
        local(),
        0,
    )
    .await
    .expect("cluster")
}

/// A proxy configured by `text`, serving on a free loopback port.
pub async fn serve_text(text: &str) -> (Arc<App<TcpConnector>>, SocketAddr) {
    let config = Config::from_toml(text, "test.toml").unwrap_or_else(|error| panic!("{error}\n{text}"));
    let credentials = storefront::settings::resolve_credentials(&config, "test.toml").expect("credentials");
    serve(config, credentials, None).await
}

/// A proxy of `config`, serving on a free loopback port; reloadable from `path` if given.
pub async fn serve(
    config: Config,
    credentials: Vec<Option<storefront::settings::KeyPair>>,
    path: Option<std::path::PathBuf>,
) -> (Arc<App<TcpConnector>>, SocketAddr) {
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let app = App::with_seed(config, credentials, path, TcpConnector, TEST_SEED).expect("app");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    (app, endpoint)
}

/// An aws-sdk-s3 client for `address` (path style, no SDK retries).
pub fn client(address: SocketAddr, key: &str, secret: &str) -> aws_sdk_s3::Client {
    session_client(address, key, secret, None)
}

/// [`client`] with a session token beside the key pair.
pub fn session_client(address: SocketAddr, key: &str, secret: &str, token: Option<&str>) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(http)
        .endpoint_url(format!("http://{address}"))
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, token.map(str::to_owned), None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The S3 error code of an SDK error.
pub fn code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    error.as_service_error().and_then(|e| e.code()).map(str::to_owned)
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

pub fn local() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// The HTTP status of an SDK error's raw response.
pub fn status_of<E>(error: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}

/// Write `request` to a new connection to `endpoint` and read its first answer (what arrives
/// within 5 s). Returns the connection for further use, and the answer as text.
pub async fn send_raw(endpoint: SocketAddr, request: &[u8]) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    let mut buffer = vec![0u8; 8192];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
    (stream, text)
}

/// A cluster of `count` nodes on loopback that accept the proxy's backend key.
pub async fn nodes(count: usize) -> Vec<NodeHandle> {
    let cluster = ClusterConfig {
        nodes: count,
        credentials: Some((BACKEND_KEY.into(), BACKEND_SECRET.into())),
        ..ClusterConfig::default()
    };
    MockCluster::start_tcp(&cluster, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .expect("mock cluster")
}

/// Two nodes with a bucket `data`, and a proxy whose `[auth]` (and policy) sections are
/// `auth` instead of trust mode. Returns the proxy's endpoint and the nodes.
pub async fn policy_proxy(auth: &str) -> (SocketAddr, Vec<NodeHandle>) {
    let harness = policy_harness(auth).await;
    (harness.endpoint, harness.nodes)
}

/// [`policy_proxy`], with the proxy itself (for its admin listener).
pub async fn policy_harness(auth: &str) -> Harness {
    let nodes = nodes(2).await;
    let (app, endpoint) = serve_text(&config_text(&nodes, "").replace("[auth]\nmode = \"trust\"\n", auth)).await;
    let direct = client(nodes[0].address().expect("bound"), BACKEND_KEY, BACKEND_SECRET);
    direct.create_bucket().bucket("data").send().await.expect("create");
    Harness { nodes, app, endpoint }
}

/// Send `request` from source address `from` and read the whole answer (the proxy closes
/// nothing: read until the head and a short body arrived, or 5 s).
pub async fn send_from(from: Ipv4Addr, endpoint: SocketAddr, request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("bind source");
    let mut stream = socket.connect(endpoint).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_answer(&mut stream, std::time::Duration::from_secs(5)).await
}

/// Read one response's head and body from `stream` within `patience`: up to its
/// Content-Length, or the head alone for a status without a body (204, 304), or until the
/// connection closes.
pub async fn read_answer(stream: &mut tokio::net::TcpStream, patience: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + patience;
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|value| value.trim().parse::<usize>().ok());
            let bodyless = head.get(9..12).is_some_and(|status| status == "204" || status == "304");
            if length.map_or(bodyless, |length| body.len() >= length) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

pub fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

/// A bucket `data` holding `object` of `size` bytes, written through `harness`'s proxy; returns
/// the client.
pub async fn bucket_with_object(harness: &Harness, size: usize) -> aws_sdk_s3::Client {
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    s3.put_object()
        .bucket("data")
        .key("object")
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![5u8; size]))
        .send()
        .await
        .expect("put");
    s3
}

/// HeadObject requests each node of `harness` received.
pub fn head_counts(harness: &Harness) -> Vec<u64> {
    harness
        .nodes
        .iter()
        .map(|node| {
            node.stats()
                .requests_by_operation
                .get("HeadObject")
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// A free loopback port (bound and released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc status")
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("field present")
}

/// The storefront binary as its own process (so its memory and descriptors are its own).
pub struct ProxyProcess {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub endpoint: SocketAddr,
    pub admin: SocketAddr,
    directory: std::path::PathBuf,
}

impl ProxyProcess {
    /// Stop the proxy (if it has not exited already) and remove its configuration.
    pub async fn stop(mut self) {
        if self.child.try_wait().expect("child status").is_none() {
            self.child.kill().await.expect("stop storefront");
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// Run `storefront run` in front of `nodes`, with `server` lines added to `[server]` (after
/// its listen address), `extra` sections before the pools and `tail` after them (such as
/// `[pools.connections]`), named `name` for its temporary directory; returns once it accepts.
pub async fn proxy_process(nodes: &[NodeHandle], server: &str, extra: &str, tail: &str, name: &str) -> ProxyProcess {
    let port = free_port();
    let admin_port = free_port();
    let text = config_text(
        nodes,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[health.active]\nenabled = false\n{extra}"
        ),
    ) + tail;
    let directory = std::env::temp_dir().join(format!("storefront-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("storefront.toml");
    std::fs::write(&path, text).expect("config");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("start storefront");
    let pid = child.id().expect("pid");
    let endpoint: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(endpoint).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    ProxyProcess {
        child,
        pid,
        endpoint,
        admin: format!("127.0.0.1:{admin_port}").parse().expect("addr"),
        directory,
    }
}

/// Run the Python `script` (boto3, awscli) with `S3_URL` pointing at `endpoint` and no AWS
/// configuration of the machine's; its stdout. Fails the test when the script fails.
pub async fn python(endpoint: SocketAddr, script: &str) -> String {
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("S3_URL", format!("http://{endpoint}"))
        .output()
        .await
        .expect("python3 runs (with boto3: `bash ci/test.sh` installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed:\n{stdout}\n{stderr}");
    stdout
}

/// One HTTP/1.1 request to `address` (an admin listener); returns status and body.
pub async fn admin_call(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Serve `harness`'s admin endpoints on a free loopback port; its address.
pub async fn admin(harness: &Harness) -> SocketAddr {
    let (listener, address) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind admin");
    tokio::spawn(storefront::admin::serve(listener, harness.app.clone()));
    address
}

/// `binary` on PATH, if installed (a Debian package `ci/test.sh` installs as root); when it is
/// not and the environment variable `required` says `required` (as CI sets it), the test fails
/// instead of skipping.
pub fn installed(binary: &str, required: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(binary))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var(required).as_deref() != Ok("required"),
            "{required}=required but `{binary}` is not installed"
        );
        eprintln!("`{binary}` is not installed: skipped (CI installs it)");
    }
    found
}
