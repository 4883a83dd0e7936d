//! boto3 and awscli, unmodified, against a 3-node mock cluster (path-style addressing).
//!
//! Needs `python3` with boto3 and the `aws` command: `bash ci/test.sh` (the README's test
//! command) installs them when missing.

mod common;

use common::{ACCESS_KEY, SECRET_KEY, cluster};
use s3_mock::ClusterConfig;

#[tokio::test]
async fn boto3_and_awscli_use_the_cluster() {
    // Proves the mock serves real Python clients: put/get/list, multipart, awscli ls and cp,
    // server-side copies of a large object (UploadPartCopy), rm --recursive and rb.
    let handles = cluster(3, ClusterConfig::default()).await;
    let endpoints: Vec<String> = handles
        .iter()
        .map(|handle| format!("http://{}", handle.address().expect("bound")))
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_clients.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args(&endpoints)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .await
        .expect("python3 runs (install it, with boto3 and awscli: `bash ci/test.sh` does)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python clients failed (missing boto3/awscli? `bash ci/test.sh` installs them):\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("python clients OK"));
}
