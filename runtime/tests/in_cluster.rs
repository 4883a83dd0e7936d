//! The Kubernetes client of a pod's service account: the API server from
//! `KUBERNETES_SERVICE_HOST`/`PORT`, over TLS trusting the mounted CA, with the bearer token of
//! the mounted token file, which is re-read after the kubelet rotates it. Against a fake API
//! server over TLS that checks the token.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// A fake API server over TLS (the test PKI's certificate for 127.0.0.1) answering
/// `GET /api/v1/pods` with an empty list to requests bearing `token`, 401 to any other; and
/// the tokens it was shown.
async fn api_server(
    pki: &common::pki::Pki,
    token: Arc<Mutex<String>>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound");
    let shown = Arc::new(Mutex::new(Vec::new()));
    let seen = shown.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, token, seen) = (acceptor.clone(), token.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (token, seen) = (token.clone(), seen.clone());
                    async move {
                        let bearer = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|value| value.to_str().ok())
                            .and_then(|value| value.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock().expect("seen").push(bearer.clone());
                        let expected = token.lock().expect("token").clone();
                        let response = if bearer != expected {
                            http::Response::builder()
                                .status(401)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}"#,
                                )))
                        } else if request.uri().path() == "/api/v1/pods" {
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#,
                                )))
                        } else {
                            http::Response::builder().status(404).body(Full::new(Bytes::new()))
                        };
                        Ok::<_, std::convert::Infallible>(response.expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, shown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_accounts_client_verifies_the_api_server_and_follows_a_rotated_token() {
    // Proves the in-cluster configuration: the client reaches the API server named by host and
    // port over TLS, trusting only the mounted CA, and authenticates with the mounted token;
    // when the kubelet rotates the token file (and the server stops accepting the old one), the
    // client re-reads it (kube-rs does within a minute) and is served again. A client trusting
    // another CA is refused the connection.
    let pki = common::pki::pki();
    let (account, _) = common::pki::pki_files(&pki, "service-account");
    std::fs::copy(account.join("ca.pem"), account.join("ca.crt")).expect("ca.crt");
    std::fs::write(account.join("token"), "token-one").expect("token");
    std::fs::write(account.join("namespace"), "storefront\n").expect("namespace");
    let accepted = Arc::new(Mutex::new("token-one".to_owned()));
    let (api, shown) = api_server(&pki, accepted.clone()).await;

    let config =
        storefront::transport::in_cluster_config("127.0.0.1", &api.port().to_string(), &account).expect("config");
    assert_eq!(config.default_namespace, "storefront");
    let client = kube::Client::try_from(config).expect("client");
    let pods: Api<Pod> = Api::all(client);
    pods.list(&Default::default())
        .await
        .expect("listed with the first token");
    assert_eq!(
        shown.lock().expect("shown").last().map(String::as_str),
        Some("token-one")
    );

    // Rotation: the file holds a new token, and the old one is refused from now on.
    std::fs::write(account.join("token"), "token-two").expect("rotate");
    *accepted.lock().expect("token") = "token-two".to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(80);
    loop {
        if pods.list(&Default::default()).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated token was not read within 80 s; the server was shown {:?}",
            shown.lock().expect("shown")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        shown.lock().expect("shown").last().map(String::as_str),
        Some("token-two")
    );

    // A client trusting another CA does not talk to this server at all.
    let other = common::pki::pki();
    let (elsewhere, _) = common::pki::pki_files(&other, "service-account-other");
    std::fs::copy(elsewhere.join("ca.pem"), elsewhere.join("ca.crt")).expect("ca.crt");
    std::fs::write(elsewhere.join("token"), "token-two").expect("token");
    let before = shown.lock().expect("shown").len();
    let config =
        storefront::transport::in_cluster_config("127.0.0.1", &api.port().to_string(), &elsewhere).expect("config");
    let untrusting: Api<Pod> = Api::all(kube::Client::try_from(config).expect("client"));
    assert!(untrusting.list(&Default::default()).await.is_err());
    assert_eq!(
        shown.lock().expect("shown").len(),
        before,
        "no request reached the server"
    );
    let _ = std::fs::remove_dir_all(account);
    let _ = std::fs::remove_dir_all(elsewhere);
}

#[test]
fn a_missing_service_account_says_what_is_missing() {
    // Proves the error of a proxy outside a pod: the file it could not read is named.
    let missing = std::env::temp_dir().join(format!("storefront-no-account-{}", std::process::id()));
    let error = storefront::transport::in_cluster_config("10.0.0.1", "443", &missing).expect_err("no account");
    assert!(error.contains("ca.crt"), "{error}");
    // An IPv6 API server address is bracketed in the URL.
    let account = std::env::temp_dir().join(format!("storefront-v6-account-{}", std::process::id()));
    let pki = common::pki::pki();
    std::fs::create_dir_all(&account).expect("dir");
    std::fs::write(account.join("ca.crt"), &pki.ca_pem).expect("ca");
    std::fs::write(account.join("token"), "t").expect("token");
    let config = storefront::transport::in_cluster_config("fd00::1", "6443", &account).expect("config");
    assert_eq!(config.cluster_url.to_string(), "https://[fd00::1]:6443/");
    let _ = std::fs::remove_dir_all(account);
}
