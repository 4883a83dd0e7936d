//! Every S3 operation s3-mock supports, through the proxy, with aws-sdk-s3.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use common::{code, harness, md5_hex};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn every_operation_passes_through_the_proxy() {
    // Proves transparent proxying with re-signing: the SDK talks to the proxy with its own
    // (unknown to the backend) keys, the proxy signs for the backend, every call works.
    let harness = harness(3, "").await;
    let s3 = harness.client();

    s3.create_bucket().bucket("data").send().await.expect("CreateBucket");
    s3.head_bucket().bucket("data").send().await.expect("HeadBucket");
    s3.get_bucket_location()
        .bucket("data")
        .send()
        .await
        .expect("GetBucketLocation");
    let names: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .expect("ListBuckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec!["data"]);

    let body = b"hello through the proxy".to_vec();
    let put = s3
        .put_object()
        .bucket("data")
        .key("dir/a b+c.txt")
        .content_type("text/plain")
        .metadata("owner", "proxy-test")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("PutObject");
    assert_eq!(put.e_tag(), Some(format!("\"{}\"", md5_hex(&body)).as_str()));
    let got = s3
        .get_object()
        .bucket("data")
        .key("dir/a b+c.txt")
        .send()
        .await
        .expect("GetObject");
    assert_eq!(
        got.metadata().and_then(|m| m.get("owner")).map(String::as_str),
        Some("proxy-test")
    );
    assert_eq!(
        got.body.collect().await.expect("body").into_bytes().as_ref(),
        body.as_slice()
    );
    let ranged = s3
        .get_object()
        .bucket("data")
        .key("dir/a b+c.txt")
        .range("bytes=6-12")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(ranged.content_range(), Some("bytes 6-12/23"));
    assert_eq!(
        ranged.body.collect().await.expect("body").into_bytes().as_ref(),
        b"through"
    );
    let head = s3
        .head_object()
        .bucket("data")
        .key("dir/a b+c.txt")
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(body.len() as i64));
    let missing = s3
        .get_object()
        .bucket("data")
        .key("nope")
        .send()
        .await
        .expect_err("NoSuchKey passes through");
    assert_eq!(code(&missing).as_deref(), Some("NoSuchKey"));

    s3.copy_object()
        .bucket("data")
        .key("copy")
        .copy_source("data/dir/a%20b%2Bc.txt")
        .send()
        .await
        .expect("CopyObject");
    for key in ["logs/1", "logs/2", "logs/3"] {
        s3.put_object()
            .bucket("data")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let v2 = s3
        .list_objects_v2()
        .bucket("data")
        .prefix("logs/")
        .max_keys(2)
        .send()
        .await
        .expect("ListObjectsV2");
    let next = s3
        .list_objects_v2()
        .bucket("data")
        .prefix("logs/")
        .continuation_token(v2.next_continuation_token().expect("token"))
        .send()
        .await
        .expect("page 2");
    assert_eq!(v2.contents().len() + next.contents().len(), 3);
    let v1 = s3
        .list_objects()
        .bucket("data")
        .delimiter("/")
        .send()
        .await
        .expect("ListObjects");
    assert_eq!(
        v1.common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .collect::<Vec<_>>(),
        vec!["dir/", "logs/"]
    );

    // Three-part multipart upload.
    let upload = s3
        .create_multipart_upload()
        .bucket("data")
        .key("big")
        .send()
        .await
        .expect("CreateMultipartUpload");
    let id = upload.upload_id().expect("id").to_owned();
    let parts = [vec![1u8; 5 * MIB], vec![2u8; 5 * MIB], vec![3u8; 1000]];
    let mut completed = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let number = index as i32 + 1;
        let response = s3
            .upload_part()
            .bucket("data")
            .key("big")
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .expect("UploadPart");
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(response.e_tag().expect("etag"))
                .build(),
        );
    }
    assert_eq!(
        s3.list_parts()
            .bucket("data")
            .key("big")
            .upload_id(&id)
            .send()
            .await
            .expect("ListParts")
            .parts()
            .len(),
        3
    );
    assert_eq!(
        s3.list_multipart_uploads()
            .bucket("data")
            .send()
            .await
            .expect("ListMultipartUploads")
            .uploads()
            .len(),
        1
    );
    let done = s3
        .complete_multipart_upload()
        .bucket("data")
        .key("big")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .expect("CompleteMultipartUpload");
    assert!(done.e_tag().is_some_and(|etag| etag.ends_with("-3\"")));
    let whole = s3.get_object().bucket("data").key("big").send().await.expect("get big");
    assert_eq!(
        whole.body.collect().await.expect("body").into_bytes().len(),
        10 * MIB + 1000
    );
    let aborted = s3
        .create_multipart_upload()
        .bucket("data")
        .key("gone")
        .send()
        .await
        .expect("create");
    s3.abort_multipart_upload()
        .bucket("data")
        .key("gone")
        .upload_id(aborted.upload_id().expect("id"))
        .send()
        .await
        .expect("AbortMultipartUpload");

    // Deletes.
    s3.delete_object()
        .bucket("data")
        .key("copy")
        .send()
        .await
        .expect("DeleteObject");
    let keys: Vec<ObjectIdentifier> = s3
        .list_objects_v2()
        .bucket("data")
        .send()
        .await
        .expect("list")
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .map(|key| ObjectIdentifier::builder().key(key).build().expect("key"))
        .collect();
    s3.delete_objects()
        .bucket("data")
        .delete(Delete::builder().set_objects(Some(keys)).build().expect("objects"))
        .send()
        .await
        .expect("DeleteObjects");
    s3.delete_bucket().bucket("data").send().await.expect("DeleteBucket");

    // The backends saw signed requests from the proxy, spread over all three nodes.
    for node in &harness.nodes {
        assert!(node.stats().requests_total > 0, "node {} got nothing", node.index());
    }
}
