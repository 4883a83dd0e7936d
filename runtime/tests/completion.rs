//! A CompleteMultipartUpload whose answer was lost: the node committed the object, the client
//! heard nothing, and its retry must not be told the upload does not exist.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::harness_with;
use s3_mock::{ClusterConfig, Faults};

/// Two nodes sharing one store (as a cluster's nodes do), parts of at least 1 KiB.
async fn cluster() -> common::Harness {
    let config = ClusterConfig {
        min_part_size: 1024,
        ..ClusterConfig::default()
    };
    harness_with(2, config, "").await
}

/// An upload of `key` with two parts uploaded (filled with `fills`): its id, the parts as a
/// completion lists them, and the object's bytes.
async fn two_parts(s3: &aws_sdk_s3::Client, key: &str, fills: [u8; 2]) -> (String, CompletedMultipartUpload, Vec<u8>) {
    let upload = s3
        .create_multipart_upload()
        .bucket("data")
        .key(key)
        .send()
        .await
        .expect("create upload");
    let upload_id = upload.upload_id().expect("an upload id").to_owned();
    let mut parts = Vec::new();
    let mut whole = Vec::new();
    for (number, fill) in [(1, fills[0]), (2, fills[1])] {
        let data = vec![fill; 2048];
        whole.extend_from_slice(&data);
        let part = s3
            .upload_part()
            .bucket("data")
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .expect("upload part");
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().expect("a part ETag"))
                .build(),
        );
    }
    (
        upload_id,
        CompletedMultipartUpload::builder().set_parts(Some(parts)).build(),
        whole,
    )
}

#[tokio::test]
async fn a_completion_whose_answer_was_lost_is_answered_as_the_success_it_was() {
    // Proves the recovery end to end with aws-sdk-s3: every successful completion loses its
    // answer (the node commits, then closes the connection); the proxy answers the client an
    // error for the broken attempt (a completion is never retried by the proxy), the SDK
    // retries, the node answers NoSuchUpload, and the proxy, finding the object with the
    // ETag these parts make, answers the success: the client gets that ETag, and the object
    // is there, whole.
    let harness = cluster().await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create bucket");
    let (upload_id, parts, whole) = two_parts(&s3, "lost/answer", *b"ab").await;
    for node in &harness.nodes {
        node.set_faults(Faults {
            lose_completions: true,
            ..Faults::default()
        });
    }
    // The SDK retries the broken completion as SDKs do (a 502 is transient to them).
    let retrying = aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(std::time::Duration::from_millis(10)),
            )
            .build(),
    );
    let completed = retrying
        .complete_multipart_upload()
        .bucket("data")
        .key("lost/answer")
        .upload_id(&upload_id)
        .multipart_upload(parts)
        .send()
        .await
        .expect("the completion succeeds for the client");
    let lost: u64 = harness.nodes.iter().map(|node| node.stats().errors_injected).sum();
    assert_eq!(lost, 1, "exactly one answer was lost: the first try's");
    let object = harness
        .direct(0)
        .get_object()
        .bucket("data")
        .key("lost/answer")
        .send()
        .await
        .expect("the object exists");
    let etag = object.e_tag().expect("an ETag").to_owned();
    assert!(etag.ends_with("-2\""), "a two-part ETag: {etag}");
    assert_eq!(completed.e_tag(), Some(etag.as_str()));
    assert_eq!(completed.key(), Some("lost/answer"));
    assert_eq!(completed.bucket(), Some("data"));
    let body = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(body.as_ref(), whole.as_slice());
}

/// Complete `upload_id` of `key` with `parts`, expecting an S3 error: its code.
async fn refused(
    s3: &aws_sdk_s3::Client,
    key: &str,
    upload_id: &str,
    parts: CompletedMultipartUpload,
) -> Option<String> {
    let error = s3
        .complete_multipart_upload()
        .bucket("data")
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(parts)
        .send()
        .await
        .expect_err("the upload is gone");
    common::code(&error)
}

#[tokio::test]
async fn a_completion_of_another_object_is_still_no_such_upload() {
    // Proves the check cannot invent a success: a completion whose upload is gone (aborted)
    // still gets NoSuchUpload when the object under its key is another one (completed from
    // other parts), and when there is no object at all.
    let harness = cluster().await;
    let s3 = harness.client();
    s3.create_bucket().bucket("data").send().await.expect("create bucket");
    let (first, first_parts, _) = two_parts(&s3, "taken", *b"ab").await;
    s3.complete_multipart_upload()
        .bucket("data")
        .key("taken")
        .upload_id(&first)
        .multipart_upload(first_parts)
        .send()
        .await
        .expect("the first upload completes");
    let (second, second_parts, _) = two_parts(&s3, "taken", *b"cd").await;
    let (third, third_parts, _) = two_parts(&s3, "nothing", *b"ef").await;
    for (key, upload_id) in [("taken", &second), ("nothing", &third)] {
        s3.abort_multipart_upload()
            .bucket("data")
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .expect("abort");
    }
    assert_eq!(
        refused(&s3, "taken", &second, second_parts).await.as_deref(),
        Some("NoSuchUpload")
    );
    assert_eq!(
        refused(&s3, "nothing", &third, third_parts).await.as_deref(),
        Some("NoSuchUpload")
    );
    let lost: u64 = harness.nodes.iter().map(|node| node.stats().errors_injected).sum();
    assert_eq!(lost, 0);
}
