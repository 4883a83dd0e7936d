//! The simulation's Kubernetes: an API server host that answers the proxy's pod and node
//! watches and its token reviews with the real JSON (k8s-openapi types), and the client side
//! the proxy reaches it with (kube-rs over a turmoil socket), so the proxy's own pod watch
//! and token exchange run unchanged.
//!
//! The pods are the client hosts of the groups that declare one (`[clients.pod]`): their
//! simulated addresses are the pod IPs. The tokens are the scenario's
//! `[[kubernetes.tokens]]`. Nothing changes during a run, so the watches stay quiet after
//! their listing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};

use crate::scenario::TokenSpec;

/// The API server's host name.
pub const HOST: &str = "kubernetes";
/// The API server's port.
pub const PORT: u16 = 6443;

/// The URL proxies are configured with (`auth.pods.kubernetes_url`, `auth.sts.kubernetes_url`).
pub fn url() -> String {
    format!("http://{HOST}:{PORT}")
}

/// A pod the API server lists: a client host and what Kubernetes knows of it.
#[derive(Clone, Debug)]
pub struct SimPod {
    /// The client host (its simulated address is the pod IP).
    pub host: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What the API server knows.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Every pod.
    pub pods: Vec<SimPod>,
    /// Every ServiceAccount token it authenticates.
    pub tokens: Vec<TokenSpec>,
}

type Body = BoxBody<Bytes, Infallible>;

/// Serve the API on this host until the simulation ends.
pub async fn serve(cluster: Arc<Cluster>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let cluster = cluster.clone();
                async move { Ok::<_, Infallible>(answer(&cluster, request).await) }
            });
            // A watch is cut when the proxy shuts down; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: u16, value: &impl serde::Serialize) -> http::Response<Body> {
    let body = serde_json::to_vec(value).expect("k8s-openapi types serialise");
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

/// A watch that reports nothing: the world does not change during a run.
fn quiet_watch() -> http::Response<Body> {
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>()).boxed())
        .expect("valid response")
}

async fn answer(cluster: &Cluster, request: http::Request<Incoming>) -> http::Response<Body> {
    let watching = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
    let path = request.uri().path().to_owned();
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/api/v1/pods") if watching => quiet_watch(),
        ("GET", "/api/v1/pods") => json(200, &list(pods(cluster))),
        ("GET", "/api/v1/nodes") if watching => quiet_watch(),
        ("GET", "/api/v1/nodes") => json(200, &list(Vec::<Node>::new())),
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
            let Ok(body) = request.into_body().collect().await else {
                return json(400, &serde_json::json!({"kind": "Status", "status": "Failure"}));
            };
            match serde_json::from_slice::<TokenReview>(&body.to_bytes()) {
                Ok(review) => json(201, &reviewed(cluster, review)),
                Err(_) => json(400, &serde_json::json!({"kind": "Status", "status": "Failure"})),
            }
        }
        _ => json(
            404,
            &serde_json::json!({"kind": "Status", "status": "Failure", "code": 404}),
        ),
    }
}

fn list<T: k8s_openapi::ListableResource>(items: Vec<T>) -> k8s_openapi::List<T> {
    k8s_openapi::List {
        items,
        metadata: ListMeta {
            resource_version: Some("1".to_owned()),
            ..ListMeta::default()
        },
    }
}

/// The pods, their IPs looked up in the simulated network (every host exists by now).
fn pods(cluster: &Cluster) -> Vec<Pod> {
    cluster
        .pods
        .iter()
        .enumerate()
        .map(|(index, pod)| Pod {
            metadata: ObjectMeta {
                uid: Some(format!("uid-{index}")),
                name: Some(pod.host.clone()),
                namespace: Some(pod.namespace.clone()),
                resource_version: Some("1".to_owned()),
                labels: Some(pod.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(pod.service_account.clone()),
                node_name: Some("worker".to_owned()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_owned()),
                pod_ip: Some(turmoil::lookup(pod.host.as_str()).to_string()),
                ..PodStatus::default()
            }),
        })
        .collect()
}

/// A TokenReview answered: a known token is its service account's, for the audiences asked
/// (as a projected token issued for them would be); anything else is unauthenticated.
fn reviewed(cluster: &Cluster, mut review: TokenReview) -> TokenReview {
    let token = review.spec.token.clone().unwrap_or_default();
    review.status = Some(match cluster.tokens.iter().find(|known| known.token == token) {
        Some(known) => TokenReviewStatus {
            authenticated: Some(true),
            audiences: review.spec.audiences.clone(),
            user: Some(UserInfo {
                username: Some(format!(
                    "system:serviceaccount:{}:{}",
                    known.namespace, known.service_account
                )),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        },
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some("invalid bearer token".to_owned()),
            ..TokenReviewStatus::default()
        },
    });
    review
}

/// The proxy's side: each request on a fresh turmoil connection to the API server (the
/// watches hold theirs open), spoken with hyper's HTTP/1 client.
#[derive(Clone, Debug)]
pub struct ApiConnection;

impl tower_service::Service<http::Request<kube::client::Body>> for ApiConnection {
    type Response = http::Response<Incoming>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<kube::client::Body>) -> Self::Future {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((HOST, PORT)).await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            request
                .headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_static(HOST));
            Ok(sender.send_request(request).await?)
        })
    }
}

/// A kube-rs client of the simulated API server.
pub fn client() -> kube::Client {
    kube::Client::new(ApiConnection, "default")
}
