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

/// A proxy whose default pool `dc2` is two loopback ports nobody listens on (a data centre
/// cut off: every connect fails) and which fails over to `dc1`, two s3-mock nodes holding
/// bucket `bkt` with object `k`; `failover` is the routing policy. Active health is off, so
/// only the requests themselves can find dc2 gone.
async fn partitioned(failover: &str) -> (common::Harness, std::net::SocketAddr) {
    let credentials = Some((common::BACKEND_KEY.to_owned(), common::BACKEND_SECRET.to_owned()));
    let config = ClusterConfig {
        nodes: 2,
        credentials,
        ..ClusterConfig::default()
    };
    let dc1 = MockCluster::start_tcp(&config, common::local(), 0).await.expect("dc1");
    let dc1_list = dc1
        .iter()
        .map(|n| format!("\"{}\"", n.address().expect("bound")))
        .collect::<Vec<_>>()
        .join(", ");
    let dc2_list = format!(
        "\"127.0.0.1:{}\", \"127.0.0.1:{}\"",
        common::free_port(),
        common::free_port()
    );
    let text = format!(
        "[auth]\nmode = \"trust\"\n[telemetry]\naccess_log = \"off\"\n[health.active]\nenabled = false\n\
         [routing]\ndefault_pool = \"dc2\"\nfailover = \"{failover}\"\n\n\
         [[pools]]\nname = \"dc1\"\nzone = \"dc1\"\nbackends = [{dc1_list}]\n[pools.credentials]\naccess_key = \"{k}\"\nsecret_key = \"{s}\"\n\n\
         [[pools]]\nname = \"dc2\"\nzone = \"dc2\"\nfailover_to = [\"dc1\"]\nbackends = [{dc2_list}]\n[pools.credentials]\naccess_key = \"{k}\"\nsecret_key = \"{s}\"\n",
        k = common::BACKEND_KEY,
        s = common::BACKEND_SECRET,
    );
    let (app, endpoint) = common::serve_text(&text).await;
    let harness = common::Harness {
        nodes: dc1,
        app,
        endpoint,
    };
    let direct = harness.direct(0);
    direct.create_bucket().bucket("bkt").send().await.expect("create");
    direct
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(ByteStream::from_static(b"in dc1"))
        .send()
        .await
        .expect("put");
    let admin = common::admin(&harness).await;
    (harness, admin)
}

#[tokio::test]
async fn a_request_whose_pool_is_cut_off_is_retried_in_the_failover_pool() {
    // Proves the cross-pool retry on the real runtime: the first GET is routed to dc2 (health
    // does not know yet that it is gone), fails to connect to both of its nodes, and is
    // retried in dc1: the client, which does not retry itself, gets the object. Without
    // failover the same request fails.
    let (harness, admin) = partitioned("when-unavailable").await;
    let s3 = harness.client();
    let object = s3
        .get_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .expect("retried in dc1");
    let body = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"in dc1");
    let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
    let samples = common::exposition::samples(&metrics);
    let retries = |pool: &str| {
        common::exposition::total(
            &samples,
            "storefront_backend_retries_total",
            &[("storefront_pool", pool)],
        )
    };
    assert_eq!(
        (retries("dc2"), retries("dc1")),
        (1.0, 1.0),
        "a retry in dc2 (its other node), then one in dc1, each counted where it was sent\n{metrics}"
    );
    let gets: u64 = harness
        .nodes
        .iter()
        .map(|n| n.stats().requests_by_operation.get("GetObject").copied().unwrap_or(0))
        .sum();
    assert_eq!(gets, 1, "dc1 served the retry");
    // Writes too: an idempotent PUT crosses the same way.
    s3.put_object()
        .bucket("bkt")
        .key("k2")
        .body(ByteStream::from_static(b"written through the failover pool"))
        .send()
        .await
        .expect("put retried in dc1");

    let (harness, _) = partitioned("never").await;
    let error = harness
        .client()
        .get_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .expect_err("dc2 alone cannot serve it");
    assert_eq!(common::status_of(&error), Some(503), "{error:?}");
}
