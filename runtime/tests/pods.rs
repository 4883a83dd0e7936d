//! Pod identity by source IP, end to end: a fake Kubernetes API server serving the pod list
//! and watch stream with the real JSON (k8s-openapi types), the proxy's kube-rs watch, and
//! requests from the pods' (loopback) addresses as pods come and go.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use tokio::sync::broadcast;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn pod(uid: &str, version: u64, namespace: &str, ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.to_owned()),
            name: Some(format!("pod-{uid}")),
            namespace: Some(namespace.to_owned()),
            resource_version: Some(version.to_string()),
            labels: Some(BTreeMap::from([("app".to_owned(), uid.to_owned())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("worker".to_owned()),
            node_name: Some("node-a".to_owned()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some(ip.to_owned()),
            ..PodStatus::default()
        }),
    }
}

/// The fake API server: `GET /api/v1/pods` lists `initial`; with `watch=true` it streams what
/// is sent on the returned channel (one watch event JSON per line).
async fn fake_api_server(initial: Vec<Pod>) -> (SocketAddr, broadcast::Sender<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (events, _) = broadcast::channel::<String>(64);
    let sender = events.clone();
    let listed = Arc::new(Mutex::new(initial));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let events = events.clone();
            let listed = listed.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let events = events.clone();
                    let listed = listed.clone();
                    async move {
                        let watching = request.uri().query().is_some_and(|query| query.contains("watch=true"));
                        let body: Body = if request.uri().path() == "/api/v1/nodes" {
                            if watching {
                                // No node changes: the watch stays open and quiet.
                                StreamBody::new(
                                    futures::stream::pending::<Result<hyper::body::Frame<Bytes>, Infallible>>(),
                                )
                                .boxed()
                            } else {
                                let list = k8s_openapi::List::<Node> {
                                    items: vec![node("node-a", "dc2")],
                                    metadata: ListMeta {
                                        resource_version: Some("1".to_owned()),
                                        ..ListMeta::default()
                                    },
                                };
                                Full::new(Bytes::from(serde_json::to_vec(&list).expect("json"))).boxed()
                            }
                        } else if request.uri().path() != "/api/v1/pods" {
                            Full::new(Bytes::new()).boxed()
                        } else if watching {
                            let receiver = events.subscribe();
                            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                                match receiver.recv().await {
                                    Ok(line) => Some((
                                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(line + "\n"))),
                                        receiver,
                                    )),
                                    Err(_) => None,
                                }
                            });
                            StreamBody::new(stream).boxed()
                        } else {
                            let list = k8s_openapi::List::<Pod> {
                                items: listed.lock().expect("list").clone(),
                                metadata: ListMeta {
                                    resource_version: Some("1".to_owned()),
                                    ..ListMeta::default()
                                },
                            };
                            Full::new(Bytes::from(serde_json::to_vec(&list).expect("json"))).boxed()
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(body)
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, sender)
}

fn node(name: &str, zone: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: Some("1".to_owned()),
            labels: Some(BTreeMap::from([(
                "topology.kubernetes.io/zone".to_owned(),
                zone.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn event(kind: &str, pod: &Pod) -> String {
    serde_json::json!({ "type": kind, "object": pod }).to_string()
}

/// Ask from `from` until the status is `want` (the watch is asynchronous) or 5 s pass.
async fn status_becomes(from: Ipv4Addr, endpoint: SocketAddr, key: &str, want: &str) -> String {
    let request = format!("GET /data/{key} HTTP/1.1\r\nhost: proxy\r\n\r\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = common::send_from(from, endpoint, request.as_bytes()).await;
        if common::status(&answer) == want || tokio::time::Instant::now() > deadline {
            return common::status(&answer).to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pod_holding_an_address_is_the_caller_as_pods_come_and_go() {
    // Proves pod identity from a kube-rs watch: a request from a pod's IP is that pod
    // (namespace rules apply); after the pod's deletion its IP is nobody; a new pod with the
    // same IP is the new pod, not the old one; two pods claiming one IP are nobody; an address
    // outside the pod networks is not a pod.
    let (api, events) = fake_api_server(vec![pod("a", 1, "etl", "127.0.0.2")]).await;
    let auth = format!(
        r#"[auth]
mode = "policy"

[auth.pods]
networks = ["127.0.0.2/32"]
kubernetes_url = "http://{api}"

[health.active]
enabled = false

[[policy.rules]]
name = "etl-reads-etl"
effect = "allow"
identity = {{ namespace = "etl" }}
actions = ["read"]
buckets = ["data"]
keys = ["etl/*"]

[[policy.rules]]
name = "web-reads-web"
effect = "allow"
identity = {{ namespace = "web" }}
actions = ["read"]
buckets = ["data"]
keys = ["web/*"]
"#
    );
    let (endpoint, nodes) = common::policy_proxy(&auth).await;
    let direct = common::client(
        nodes[0].address().expect("bound"),
        common::BACKEND_KEY,
        common::BACKEND_SECRET,
    );
    for key in ["etl/x", "web/x"] {
        direct
            .put_object()
            .bucket("data")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let pod_ip = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 1);
    assert_eq!(
        status_becomes(other, endpoint, "etl/x", "403").await,
        "403",
        "not a pod address"
    );
    // Each step: a watch event (none for the initial list), then (key, expected status, why).
    let steps = [
        (
            None,
            [("etl/x", "200", "pod a (etl)"), ("web/x", "403", "pod a is not web")],
        ),
        (
            Some(event("DELETED", &pod("a", 2, "etl", "127.0.0.2"))),
            [
                ("etl/x", "403", "deleted pod's IP"),
                ("web/x", "403", "deleted pod's IP"),
            ],
        ),
        (
            Some(event("ADDED", &pod("b", 3, "web", "127.0.0.2"))),
            [("web/x", "200", "pod b (web)"), ("etl/x", "403", "not the old pod")],
        ),
        (
            Some(event("ADDED", &pod("c", 4, "etl", "127.0.0.2"))),
            [
                ("web/x", "403", "two pods, one IP"),
                ("etl/x", "403", "two pods, one IP"),
            ],
        ),
    ];
    for (event, checks) in steps {
        if let Some(event) = event {
            events.send(event).expect("the proxy is watching");
        }
        for (key, want, why) in checks {
            assert_eq!(status_becomes(pod_ip, endpoint, key, want).await, want, "{why}");
        }
    }
}

#[tokio::test]
async fn a_pods_zone_comes_from_its_node_and_routes_its_requests() {
    // Proves that a pod's zone (its node's topology label, from the node watch) feeds routing:
    // with one pool per data centre, the pod on a dc2 node is served by the dc2 pool's node.
    let (api, _events) = fake_api_server(vec![pod("a", 1, "etl", "127.0.0.2")]).await;
    let cluster = s3_mock::ClusterConfig {
        nodes: 2,
        credentials: Some((common::BACKEND_KEY.into(), common::BACKEND_SECRET.into())),
        ..s3_mock::ClusterConfig::default()
    };
    let nodes = s3_mock::MockCluster::start_tcp(&cluster, common::local(), 0)
        .await
        .expect("cluster");
    let pool = |name: &str, node: &s3_mock::NodeHandle| {
        format!(
            "[[pools]]\nname = \"{name}\"\nzone = \"{name}\"\nbackends = [\"{}\"]\n\n[pools.credentials]\naccess_key = \"{}\"\nsecret_key = \"{}\"\n\n",
            node.address().expect("bound"),
            common::BACKEND_KEY,
            common::BACKEND_SECRET
        )
    };
    let text = format!(
        "[auth]\nmode = \"policy\"\n\n[auth.pods]\nnetworks = [\"127.0.0.2/32\"]\nkubernetes_url = \"http://{api}\"\n\n\
         [health.active]\nenabled = false\n\n[routing]\ndefault_pool = \"dc1\"\n\n\
         [[policy.rules]]\nname = \"etl\"\neffect = \"allow\"\nidentity = {{ namespace = \"etl\" }}\nactions = [\"read\"]\nbuckets = [\"data\"]\n\n{}{}",
        pool("dc1", &nodes[0]),
        pool("dc2", &nodes[1])
    );
    let (_, endpoint) = common::serve_text(&text).await;
    let direct = common::client(
        nodes[0].address().expect("bound"),
        common::BACKEND_KEY,
        common::BACKEND_SECRET,
    );
    direct.create_bucket().bucket("data").send().await.expect("create");
    direct
        .put_object()
        .bucket("data")
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("put");
    let gets = |index: usize| {
        nodes[index]
            .stats()
            .requests_by_operation
            .get("GetObject")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        status_becomes(Ipv4Addr::new(127, 0, 0, 2), endpoint, "x", "200").await,
        "200"
    );
    // The zone map may fill after the pod table: ask until the dc2 node serves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gets(1) == 0 && tokio::time::Instant::now() < deadline {
        status_becomes(Ipv4Addr::new(127, 0, 0, 2), endpoint, "x", "200").await;
    }
    let before = (gets(0), gets(1));
    for _ in 0..5 {
        assert_eq!(
            status_becomes(Ipv4Addr::new(127, 0, 0, 2), endpoint, "x", "200").await,
            "200"
        );
    }
    assert_eq!(
        (gets(0), gets(1)),
        (before.0, before.1 + 5),
        "the pod's requests go to its zone's pool"
    );
}

#[tokio::test]
async fn readiness_waits_for_the_pod_table() {
    // Proves that where pods are an identity source, the proxy is not ready until the pod table
    // has its first listing (before it every pod caller would be denied), and is once it has.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_address = silent.local_addr().expect("address");
    // Accepts and never answers: the watch's first list never completes.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let (api, _events) = fake_api_server(vec![pod("a", 1, "etl", "127.0.0.2")]).await;
    let nodes = common::nodes(1).await;
    let proxy_for = |api: SocketAddr| {
        common::config_text(&nodes, "[health.active]\nenabled = false\n").replace(
            "[auth]\nmode = \"trust\"\n",
            &format!(
                "[auth]\nmode = \"policy\"\n\n[auth.pods]\nnetworks = [\"127.0.0.2/32\"]\nkubernetes_url = \"http://{api}\"\n"
            ),
        )
    };
    let (waiting, _) = common::serve_text(&proxy_for(silent_address)).await;
    let (listed, _) = common::serve_text(&proxy_for(api)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listed.proxy.current().readiness().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy whose pod table listed never became ready: {:?}",
            listed.proxy.current().readiness()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let not_ready = waiting.proxy.current().readiness();
    assert!(
        not_ready.is_err_and(|missing| missing.contains("pod table")),
        "a proxy whose pod table never listed is not ready"
    );
}

#[tokio::test]
async fn pod_callers_are_not_denied_across_a_reload() {
    // Proves that the pod watch survives a reload that leaves its settings alone: right after
    // the reload the pod is still known (a fresh watch would start with an empty table and
    // deny it until it relisted), and the proxy stays ready.
    let (api, _events) = fake_api_server(vec![pod("a", 1, "etl", "127.0.0.2")]).await;
    let nodes = common::nodes(1).await;
    let text = |budget: &str| {
        common::config_text(&nodes, &format!("[health.active]\nenabled = false\n[retry]\nbudget_ratio = {budget}\n"))
            .replace(
                "[auth]\nmode = \"trust\"\n",
                &format!(
                    "[auth]\nmode = \"policy\"\n\n[auth.pods]\nnetworks = [\"127.0.0.2/32\"]\nkubernetes_url = \"http://{api}\"\n\n[[policy.rules]]\nname = \"etl-reads\"\neffect = \"allow\"\nidentity = {{ namespace = \"etl\" }}\nactions = [\"read\"]\nbuckets = [\"data\"]\n"
                ),
            )
    };
    let directory = std::env::temp_dir().join(format!("storefront-pods-reload-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("storefront.toml");
    std::fs::write(&path, text("0.2")).expect("write");
    let (config, credentials) = storefront::settings::load(&path).expect("valid file");
    let (app, endpoint) = common::serve(config, credentials, Some(path.clone())).await;
    let pod_ip = Ipv4Addr::new(127, 0, 0, 2);
    // The object does not exist: an allowed pod gets 404, a denied caller 403.
    assert_eq!(
        status_becomes(pod_ip, endpoint, "etl/x", "404").await,
        "404",
        "the pod is known"
    );
    for round in 0..5 {
        std::fs::write(&path, text(if round % 2 == 0 { "0.3" } else { "0.2" })).expect("write");
        app.reload().expect("reload");
        let request = b"GET /data/etl/x HTTP/1.1\r\nhost: proxy\r\n\r\n";
        let answer = common::send_from(pod_ip, endpoint, request).await;
        assert_eq!(
            common::status(&answer),
            "404",
            "round {round}: the pod stays known: {answer}"
        );
        assert!(app.proxy.current().readiness().is_ok(), "round {round}: still ready");
    }
}

#[tokio::test]
async fn the_pod_table_size_and_watch_figures_are_metrics() {
    // Proves the pod watch's gauges: the table's size follows the listing and the watch's
    // events, with no restart or error counted on a healthy watch.
    let (api, events) = fake_api_server(vec![pod("a", 1, "etl", "127.0.0.2"), pod("b", 1, "web", "127.0.0.3")]).await;
    let harness = common::policy_harness(&format!(
        "[auth]\nmode = \"policy\"\n\n[auth.pods]\nnetworks = [\"127.0.0.0/24\"]\nkubernetes_url = \"http://{api}\"\n\n[health.active]\nenabled = false\n"
    ))
    .await;
    let value = |name: &str| {
        harness
            .app
            .metrics
            .render()
            .lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse::<f64>().ok())
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while value("storefront_pods_table_size") != Some(2.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            harness.app.metrics.render()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The watch opens after the listing: the deletion is sent until it lands (it is
    // idempotent).
    while value("storefront_pods_table_size") != Some(1.0) {
        let _ = events.send(event("DELETED", &pod("b", 2, "web", "127.0.0.3")));
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            harness.app.metrics.render()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(value("storefront_pods_watch_restarts_total"), Some(0.0));
    assert_eq!(value("storefront_pods_watch_errors_total"), Some(0.0));
}
