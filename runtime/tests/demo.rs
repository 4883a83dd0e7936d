//! `storefront demo`, as a newcomer runs it: boto3 and awscli, unmodified, against the printed
//! endpoint (path style).

use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn the_demo_serves_boto3_and_awscli() {
    // Proves the README's first command: the demo starts with no setup and real Python clients
    // use it (buckets, objects, listing, multipart, awscli ls and cp).
    let (port, admin) = (free_port(), free_port());
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the demo did not start listening");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../s3-mock/tests/python_clients.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&endpoint)
        .env("AWS_ACCESS_KEY_ID", "demo")
        .env("AWS_SECRET_ACCESS_KEY", "demo")
        .output()
        .await
        .expect("python3 runs (bash ci/test.sh installs boto3 and awscli)");
    demo.kill().await.expect("stop the demo");
    let mut banner = String::new();
    if let Some(mut stdout) = demo.stdout.take() {
        use tokio::io::AsyncReadExt;
        let _ = stdout.read_to_string(&mut banner).await;
    }
    assert!(
        output.status.success(),
        "python clients failed against the demo:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        banner.contains(&endpoint) && banner.contains("aws --endpoint-url"),
        "banner: {banner}"
    );
}
