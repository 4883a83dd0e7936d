//! aws-chunked uploads through the proxy: signed chunk streams are decoded (or re-framed with
//! their checksum trailer) so that the re-signed request verifies at the backend.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use common::harness;

#[tokio::test]
async fn sdk_file_uploads_with_signed_chunks_pass_through() {
    // Proves the Rust SDK's file upload form (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER with an
    // x-amz-checksum-crc32 trailer, checked with a capture listener when this was written) is
    // accepted: the object arrives whole and its checksum is the client's.
    let harness = harness(2, "").await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = std::env::temp_dir().join(format!("storefront-streaming-{}.bin", std::process::id()));
    std::fs::write(&path, &data).expect("temp file");
    let put = s3
        .put_object()
        .bucket("data")
        .key("from-file")
        .body(ByteStream::from_path(&path).await.expect("file stream"))
        .send()
        .await
        .expect("PutObject from a file");
    let _ = std::fs::remove_file(&path);
    let got = s3
        .get_object()
        .bucket("data")
        .key("from-file")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("get");
    if let Some(crc) = put.checksum_crc32() {
        assert_eq!(
            got.checksum_crc32(),
            Some(crc),
            "the trailer checksum reached the backend"
        );
    }
    assert_eq!(
        got.body.collect().await.expect("body").into_bytes().as_ref(),
        data.as_slice()
    );
}

async fn raw_put(endpoint: std::net::SocketAddr, key: &str, headers: &str, body: &[u8]) -> String {
    let mut request = format!(
        "PUT /data/{key} HTTP/1.1\r\nhost: p\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    common::send_raw(endpoint, &request).await.1
}

#[tokio::test]
async fn signed_chunks_without_trailer_are_decoded_and_malformed_ones_refused() {
    // Proves STREAMING-AWS4-HMAC-SHA256-PAYLOAD is decoded to the plain body with its decoded
    // length, and a broken chunk stream is refused without anything stored.
    let harness = harness(1, "").await;
    harness
        .client()
        .create_bucket()
        .bucket("data")
        .send()
        .await
        .expect("create");
    let signature = "0".repeat(64);
    let body = format!(
        "5;chunk-signature={signature}\r\nhello\r\n6;chunk-signature={signature}\r\n world\r\n0;chunk-signature={signature}\r\n\r\n"
    );
    let headers = "x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\r\ncontent-encoding: aws-chunked\r\nx-amz-decoded-content-length: 11\r\n";
    let answer = raw_put(harness.endpoint, "decoded", headers, body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = harness
        .direct(0)
        .get_object()
        .bucket("data")
        .key("decoded")
        .send()
        .await
        .expect("stored");
    assert_eq!(
        stored.body.collect().await.expect("body").into_bytes().as_ref(),
        b"hello world"
    );

    let broken =
        format!("5;chunk-signature={signature}\r\nhelloXX6;chunk-signature={signature}\r\n world\r\n0\r\n\r\n");
    let answer = raw_put(harness.endpoint, "broken", headers, broken.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        harness
            .direct(0)
            .head_object()
            .bucket("data")
            .key("broken")
            .send()
            .await
            .is_err(),
        "a malformed upload was stored"
    );
}
