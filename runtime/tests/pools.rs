//! Several pools (data centres) and HTTP/2 clients.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3_mock::{ClusterConfig, MockCluster};
use storefront::App;
use storefront::transport::TcpConnector;
use storefront_core::config::Config;

#[tokio::test]
async fn bucket_rules_keep_each_pool_on_its_own_nodes() {
    // Proves routing across pools: buckets matching a rule go to their pool's nodes only, the
    // rest to the default pool; each pool's nodes are a separate S3 cluster (bulkheads).
    let credentials = Some((common::BACKEND_KEY.to_owned(), common::BACKEND_SECRET.to_owned()));
    let config = ClusterConfig {
        nodes: 2,
        credentials,
        ..ClusterConfig::default()
    };
    let hot = MockCluster::start_tcp(&config, common::local(), 0)
        .await
        .expect("hot cluster");
    let cold = MockCluster::start_tcp(&config, common::local(), 0)
        .await
        .expect("cold cluster");
    let list = |nodes: &[s3_mock::NodeHandle]| {
        nodes
            .iter()
            .map(|n| format!("\"{}\"", n.address().expect("bound")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[routing]\ndefault_pool = \"hot\"\nrules = [{{ bucket = \"cold-*\", pool = \"cold\" }}]\n\n\
         [[pools]]\nname = \"hot\"\nzone = \"dc1\"\nbackends = [{}]\n[pools.credentials]\naccess_key = \"{k}\"\nsecret_key = \"{s}\"\n\n\
         [[pools]]\nname = \"cold\"\nzone = \"dc2\"\nbackends = [{}]\n[pools.credentials]\naccess_key = \"{k}\"\nsecret_key = \"{s}\"\n",
        list(&hot),
        list(&cold),
        k = common::BACKEND_KEY,
        s = common::BACKEND_SECRET,
    );
    let config = Config::from_toml(&text, "pools.toml").expect("valid");
    let resolved = storefront::settings::resolve_credentials(&config, "pools.toml").expect("credentials");
    let app = App::with_seed(config, resolved, None, TcpConnector, common::TEST_SEED).expect("app");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let s3 = common::client(endpoint, "caller", "secret");
    for bucket in ["cold-archive", "hot-data"] {
        s3.create_bucket().bucket(bucket).send().await.expect("create");
        for index in 0..10 {
            s3.put_object()
                .bucket(bucket)
                .key(format!("k{index}"))
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .expect("put");
        }
    }
    let puts = |nodes: &[s3_mock::NodeHandle]| -> u64 {
        nodes
            .iter()
            .map(|n| n.stats().requests_by_operation.get("PutObject").copied().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (puts(&hot), puts(&cold)),
        (10, 10),
        "each bucket's writes stay in its pool"
    );
    let direct = common::client(
        cold[0].address().expect("bound"),
        common::BACKEND_KEY,
        common::BACKEND_SECRET,
    );
    let names: Vec<String> = direct
        .list_buckets()
        .send()
        .await
        .expect("list")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        vec!["cold-archive"],
        "the cold cluster holds only the cold bucket"
    );
}

#[tokio::test]
async fn http2_clients_are_served() {
    // Proves the server speaks HTTP/2 (prior knowledge) as well as HTTP/1.1.
    let harness = common::harness(1, "").await;
    harness
        .client()
        .create_bucket()
        .bucket("h2bucket")
        .send()
        .await
        .expect("create");
    let stream = tokio::net::TcpStream::connect(harness.endpoint).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::head(format!("http://{}/h2bucket", harness.endpoint))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let _ = response.into_body().collect().await;
}
