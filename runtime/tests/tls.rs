//! TLS on both sides: clients reach the proxy over HTTPS (HTTP/1.1 and HTTP/2 by ALPN), and the
//! proxy reaches backends over TLS, trusting only the configured CA.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::pki::{Pki, pki, pki_files};
use storefront::App;
use storefront::transport::TcpConnector;
use storefront_core::config::Config;

/// A TLS front for a plain backend: terminates TLS and relays bytes.
async fn tls_relay(pki: &Pki, backend: SocketAddr) -> SocketAddr {
    let config = pki.server_config();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    address
}

fn curl(ca: &Path, args: &[&str]) -> (String, String) {
    let output = std::process::Command::new("curl")
        .arg("--silent")
        .arg("--show-error")
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn https_in_and_tls_to_backends() {
    // Proves TLS end to end: HTTPS from clients (h1 and h2), TLS to a backend behind a custom
    // CA, and refusal of a backend whose certificate the configured CA did not sign.
    let pki = pki();
    let (directory, ca) = pki_files(&pki, "tls");

    let nodes = common::one_node().await;
    let relay = tls_relay(&pki, nodes[0].address().expect("bound")).await;
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[server.tls]\ncert_file = \"{dir}/cert.pem\"\nkey_file = \"{dir}/key.pem\"\n\
         [[pools]]\nname = \"dc1\"\nbackends = [\"{relay}\"]\n[pools.tls]\nca_file = \"{dir}/ca.pem\"\n\
         [pools.credentials]\naccess_key = \"{k}\"\nsecret_key = \"{s}\"\n",
        dir = directory.display(),
        k = common::BACKEND_KEY,
        s = common::BACKEND_SECRET,
    );
    let config = Config::from_toml(&text, "tls.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "tls.toml").expect("credentials");
    let app = App::with_seed(config, credentials, None, TcpConnector, common::TEST_SEED).expect("app");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });

    let url = format!("https://{endpoint}/tlsbucket");
    let ca_for_curl = ca.clone();
    let (out, err) = tokio::task::spawn_blocking(move || {
        curl(
            &ca_for_curl,
            &[
                "-X",
                "PUT",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--http1.1",
                &url,
            ],
        )
    })
    .await
    .expect("curl");
    assert_eq!(out, "200 1.1", "{err}");
    let url = format!("https://{endpoint}/tlsbucket");
    let ca_for_curl = ca.clone();
    let (out, err) = tokio::task::spawn_blocking(move || {
        curl(
            &ca_for_curl,
            &[
                "-I",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--http2",
                &url,
            ],
        )
    })
    .await
    .expect("curl");
    assert_eq!(out, "200 2", "{err}");
    let direct = common::client(
        nodes[0].address().expect("bound"),
        common::BACKEND_KEY,
        common::BACKEND_SECRET,
    );
    direct
        .head_bucket()
        .bucket("tlsbucket")
        .send()
        .await
        .expect("created through TLS on both sides");

    // A CA that did not sign the backend's certificate: the proxy refuses the connection.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).expect("other CA");
    std::fs::write(directory.join("other-ca.pem"), other.cert.pem()).expect("write");
    let text = text
        .replace("/ca.pem", "/other-ca.pem")
        .replace("[server.tls]\n", "[server.tls_unused]\n");
    let text = text
        .lines()
        .filter(|line| {
            !line.starts_with("cert_file") && !line.starts_with("key_file") && !line.starts_with("[server.tls_unused]")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml(&text, "tls.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "tls.toml").expect("credentials");
    let untrusting = App::with_seed(config, credentials, None, TcpConnector, common::TEST_SEED).expect("app");
    let (listener, plain) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = untrusting.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let s3 = common::client(plain, "caller", "secret");
    let error = s3
        .head_bucket()
        .bucket("tlsbucket")
        .send()
        .await
        .expect_err("untrusted backend");
    assert_eq!(common::status_of(&error), Some(503), "{error:?}");
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test]
async fn half_open_tls_handshakes_are_cut_and_count_toward_the_limit() {
    // Proves the handshake deadline: with one connection allowed and a 3 s handshake
    // timeout, a TCP connection that never starts TLS holds the only slot (a second is
    // closed at once, while the first is still open, with no plaintext answer on a TLS port)
    // until the proxy cuts it; then HTTPS is served again.
    let (directory, ca) = pki_files(&pki(), "tls-half-open");
    let text = format!(
        "[auth]\nmode = \"trust\"\n[health.active]\nenabled = false\n[server]\nmax_connections = 1\n\
         [timeouts]\ntls_handshake = \"3s\"\n[server.tls]\ncert_file = \"{dir}/cert.pem\"\nkey_file = \"{dir}/key.pem\"\n\
         [[pools]]\nname = \"dc1\"\nbackends = [\"127.0.0.1:9\"]\n",
        dir = directory.display(),
    );
    let config = Config::from_toml(&text, "tls.toml").expect("valid");
    let credentials = storefront::settings::resolve_credentials(&config, "tls.toml").expect("credentials");
    let app = App::with_seed(config, credentials, None, TcpConnector, common::TEST_SEED).expect("app");
    let (listener, endpoint) = App::<TcpConnector>::bind("127.0.0.1:0").await.expect("bind");
    let serving = app.clone();
    tokio::spawn(async move { serving.serve(listener).await });

    use tokio::io::AsyncReadExt;
    let read_all = |mut stream: tokio::net::TcpStream| async move {
        let mut seen = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut seen))
            .await
            .map(|_| seen)
    };
    let half_open = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    let said = read_all(second).await.expect("the second connection is closed");
    assert!(
        said.is_empty(),
        "plaintext on a TLS port: {:?}",
        String::from_utf8_lossy(&said)
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(half_open.try_read(&mut probe), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "the second was refused only once the first was cut: not at once"
    );
    let said = read_all(half_open).await.expect("the half-open handshake is cut");
    assert!(said.is_empty());
    let url = format!("https://{endpoint}/");
    let (out, err) =
        tokio::task::spawn_blocking(move || curl(&ca, &["--write-out", "%{http_code}", "--output", "/dev/null", &url]))
            .await
            .expect("curl");
    assert_ne!(out, "000", "HTTPS is served again once the slot is free: {err}");
}
