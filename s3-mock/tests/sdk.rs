//! aws-sdk-s3 against a 3-node mock cluster: every operation, through every node, over one
//! namespace; and SigV4 rejection of a wrong secret.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
};
use common::{SECRET_KEY, client, clients, cluster, code, status};
use s3_mock::ClusterConfig;

const MIB: usize = 1024 * 1024;

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

#[tokio::test]
async fn every_operation_works_through_every_node_over_one_namespace() {
    // Proves the mock is a real S3 server for the SDK: each operation succeeds through some
    // node and its effect is visible through the others.
    let handles = cluster(3, ClusterConfig::default()).await;
    let s3 = clients(&handles);
    let (n1, n2, n3) = (&s3[0], &s3[1], &s3[2]);

    // Buckets.
    n1.create_bucket().bucket("data").send().await.expect("CreateBucket");
    let again = n2.create_bucket().bucket("data").send().await.expect_err("exists");
    assert_eq!(code(&again).as_deref(), Some("BucketAlreadyOwnedByYou"));
    n2.head_bucket()
        .bucket("data")
        .send()
        .await
        .expect("HeadBucket via another node");
    n3.get_bucket_location()
        .bucket("data")
        .send()
        .await
        .expect("GetBucketLocation");
    let buckets = n3.list_buckets().send().await.expect("ListBuckets");
    let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, vec!["data"]);
    let missing = n1
        .head_bucket()
        .bucket("nope")
        .send()
        .await
        .expect_err("no such bucket");
    assert_eq!(status(&missing), Some(404));

    // Objects: write through node 1, read through node 3.
    let body = b"hello, storefront".to_vec();
    let put = n1
        .put_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .content_type("text/plain")
        .metadata("owner", "tests")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("PutObject");
    assert_eq!(put.e_tag(), Some(format!("\"{}\"", md5_hex(&body)).as_str()));
    let got = n3
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .send()
        .await
        .expect("GetObject");
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(
        got.metadata().and_then(|m| m.get("owner")).map(String::as_str),
        Some("tests")
    );
    let etag = got.e_tag().expect("etag").to_owned();
    assert_eq!(
        got.body.collect().await.expect("body").into_bytes().as_ref(),
        body.as_slice()
    );
    let head = n2
        .head_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .send()
        .await
        .expect("HeadObject");
    assert_eq!(head.content_length(), Some(body.len() as i64));

    // Ranges and conditions.
    let ranged = n2
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .range("bytes=7-16")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.content_range(), Some("bytes 7-16/17"));
    assert_eq!(
        ranged.body.collect().await.expect("body").into_bytes().as_ref(),
        b"storefront"
    );
    let suffix = n3
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .range("bytes=-5")
        .send()
        .await
        .expect("suffix");
    assert_eq!(
        suffix.body.collect().await.expect("body").into_bytes().as_ref(),
        b"front"
    );
    let beyond = n1
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .range("bytes=100-200")
        .send()
        .await
        .expect_err("unsatisfiable");
    assert_eq!(code(&beyond).as_deref(), Some("InvalidRange"));
    let not_modified = n1
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("304");
    assert_eq!(status(&not_modified), Some(304));
    let failed = n1
        .get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .if_match("\"0000\"")
        .send()
        .await
        .expect_err("412");
    assert_eq!(status(&failed), Some(412));
    n1.get_object()
        .bucket("data")
        .key("dir/hello world+1.txt")
        .if_match(&etag)
        .send()
        .await
        .expect("If-Match matches");
    let gone = n2
        .get_object()
        .bucket("data")
        .key("absent")
        .send()
        .await
        .expect_err("NoSuchKey");
    assert_eq!(code(&gone).as_deref(), Some("NoSuchKey"));
    let no_bucket = n2
        .get_object()
        .bucket("absent-bucket")
        .key("k")
        .send()
        .await
        .expect_err("NoSuchBucket");
    assert_eq!(code(&no_bucket).as_deref(), Some("NoSuchBucket"));

    // Checksums are verified and echoed.
    let with_crc = n1
        .put_object()
        .bucket("data")
        .key("crc")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from_static(b"checksummed"))
        .send()
        .await
        .expect("PutObject with CRC32");
    let crc = with_crc.checksum_crc32().expect("CRC32 echoed").to_owned();
    let read = n2
        .get_object()
        .bucket("data")
        .key("crc")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("get crc");
    assert_eq!(read.checksum_crc32(), Some(crc.as_str()));

    // Copy.
    n2.copy_object()
        .bucket("data")
        .key("copy.txt")
        .copy_source("data/dir/hello%20world%2B1.txt")
        .send()
        .await
        .expect("CopyObject");
    let copy = n3
        .get_object()
        .bucket("data")
        .key("copy.txt")
        .send()
        .await
        .expect("copied");
    assert_eq!(
        copy.metadata().and_then(|m| m.get("owner")).map(String::as_str),
        Some("tests")
    );
    assert_eq!(
        copy.body.collect().await.expect("body").into_bytes().as_ref(),
        body.as_slice()
    );

    // Listing: V2 with delimiter and pages continued on other nodes; V1 with markers.
    for key in ["logs/a", "logs/b", "logs/c", "logs/deep/x", "zz"] {
        n1.put_object()
            .bucket("data")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let top = n1
        .list_objects_v2()
        .bucket("data")
        .delimiter("/")
        .send()
        .await
        .expect("ListObjectsV2");
    let prefixes: Vec<_> = top.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, vec!["dir/", "logs/"]);
    let keys: Vec<_> = top.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec!["copy.txt", "crc", "zz"]);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        let node = &s3[page % 3];
        let response = node
            .list_objects_v2()
            .bucket("data")
            .prefix("logs/")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .expect("page");
        seen.extend(response.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        token = response.next_continuation_token().map(str::to_owned);
        if !response.is_truncated().unwrap_or(false) {
            break;
        }
    }
    assert_eq!(seen, vec!["logs/a", "logs/b", "logs/c", "logs/deep/x"]);
    let after = n2
        .list_objects_v2()
        .bucket("data")
        .prefix("logs/")
        .start_after("logs/b")
        .send()
        .await
        .expect("start-after");
    assert_eq!(
        after.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(),
        vec!["logs/c", "logs/deep/x"]
    );
    let v1 = n3
        .list_objects()
        .bucket("data")
        .prefix("logs/")
        .max_keys(3)
        .send()
        .await
        .expect("ListObjects");
    assert!(v1.is_truncated().unwrap_or(false));
    let v1_next = n3
        .list_objects()
        .bucket("data")
        .prefix("logs/")
        .marker(v1.next_marker().expect("next marker"))
        .send()
        .await
        .expect("ListObjects page 2");
    assert_eq!(
        v1_next.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(),
        vec!["logs/deep/x"]
    );

    // Multipart: create on node 1, parts through every node, complete on node 3.
    let upload = n1
        .create_multipart_upload()
        .bucket("data")
        .key("big.bin")
        .content_type("application/x-test")
        .send()
        .await
        .expect("CreateMultipartUpload");
    let upload_id = upload.upload_id().expect("upload id").to_owned();
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 * MIB], vec![b'b'; 5 * MIB], b"tail".to_vec()];
    let mut completed = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let number = index as i32 + 1;
        let response = s3[index]
            .upload_part()
            .bucket("data")
            .key("big.bin")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .expect("UploadPart");
        assert_eq!(response.e_tag(), Some(format!("\"{}\"", md5_hex(part)).as_str()));
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(response.e_tag().expect("etag"))
                .build(),
        );
    }
    let listed = n2
        .list_parts()
        .bucket("data")
        .key("big.bin")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("ListParts");
    assert_eq!(
        listed.parts().iter().filter_map(|p| p.size()).collect::<Vec<_>>(),
        vec![5 * MIB as i64, 5 * MIB as i64, 4]
    );
    let uploads = n3
        .list_multipart_uploads()
        .bucket("data")
        .send()
        .await
        .expect("ListMultipartUploads");
    assert_eq!(
        uploads
            .uploads()
            .iter()
            .filter_map(|u| u.upload_id())
            .collect::<Vec<_>>(),
        vec![upload_id.as_str()]
    );
    let done = n3
        .complete_multipart_upload()
        .bucket("data")
        .key("big.bin")
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .expect("CompleteMultipartUpload");
    let mut concatenated_md5s = Vec::new();
    for part in &parts {
        concatenated_md5s.extend(hex::decode(md5_hex(part)).expect("hex"));
    }
    assert_eq!(
        done.e_tag(),
        Some(format!("\"{}-3\"", md5_hex(&concatenated_md5s)).as_str())
    );
    let whole = n1
        .get_object()
        .bucket("data")
        .key("big.bin")
        .send()
        .await
        .expect("get multipart object");
    assert_eq!(whole.content_type(), Some("application/x-test"));
    let bytes = whole.body.collect().await.expect("body").into_bytes();
    assert_eq!(bytes.len(), 10 * MIB + 4);
    assert_eq!(&bytes[10 * MIB..], b"tail");
    let second_part = n2
        .get_object()
        .bucket("data")
        .key("big.bin")
        .part_number(2)
        .send()
        .await
        .expect("part 2");
    assert_eq!(second_part.parts_count(), Some(3));
    assert_eq!(second_part.content_length(), Some(5 * MIB as i64));
    let aborted = n2
        .create_multipart_upload()
        .bucket("data")
        .key("abandoned")
        .send()
        .await
        .expect("create");
    let aborted_id = aborted.upload_id().expect("id");
    n3.abort_multipart_upload()
        .bucket("data")
        .key("abandoned")
        .upload_id(aborted_id)
        .send()
        .await
        .expect("AbortMultipartUpload");
    let after_abort = n1
        .upload_part()
        .bucket("data")
        .key("abandoned")
        .upload_id(aborted_id)
        .part_number(1)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .expect_err("upload is gone");
    assert_eq!(code(&after_abort).as_deref(), Some("NoSuchUpload"));

    // Deletes.
    let not_empty = n1.delete_bucket().bucket("data").send().await.expect_err("not empty");
    assert_eq!(code(&not_empty).as_deref(), Some("BucketNotEmpty"));
    n2.delete_object()
        .bucket("data")
        .key("zz")
        .send()
        .await
        .expect("DeleteObject");
    assert!(
        n3.head_object().bucket("data").key("zz").send().await.is_err(),
        "deleted through another node"
    );
    let listing = n1.list_objects_v2().bucket("data").send().await.expect("list all");
    let identifiers: Vec<ObjectIdentifier> = listing
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .map(|key| ObjectIdentifier::builder().key(key).build().expect("key set"))
        .collect();
    let deleted = n3
        .delete_objects()
        .bucket("data")
        .delete(
            Delete::builder()
                .set_objects(Some(identifiers))
                .build()
                .expect("objects set"),
        )
        .send()
        .await
        .expect("DeleteObjects");
    assert_eq!(deleted.deleted().len(), listing.contents().len());
    n2.delete_bucket().bucket("data").send().await.expect("DeleteBucket");
    assert!(n1.list_buckets().send().await.expect("list").buckets().is_empty());

    // Each node served some of it.
    for handle in &handles {
        assert!(handle.stats().requests_total > 0, "node {} idle", handle.index());
    }
    let operations = handles[0].stats().requests_by_operation;
    assert!(
        operations.contains_key("CreateBucket") && operations.contains_key("PutObject"),
        "{operations:?}"
    );
}

#[tokio::test]
async fn a_wrong_secret_gets_signature_does_not_match() {
    // Proves SigV4 is verified: the mock checks the signatures the proxy will produce.
    let handles = cluster(1, ClusterConfig::default()).await;
    let address = handles[0].address().expect("bound");
    client(address, SECRET_KEY)
        .create_bucket()
        .bucket("fine")
        .send()
        .await
        .expect("right secret");
    let error = client(address, "wrong-secret")
        .list_buckets()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(status(&error), Some(403));
    assert_eq!(code(&error).as_deref(), Some("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn listings_encode_keys_on_request_and_max_keys_zero_is_not_truncated() {
    // Proves two listing details S3 has: with `encoding-type=url` keys and prefixes come back
    // percent-encoded (so a `+` or a space survives clients that decode them), without it as
    // they are; `max-keys=0` answers an empty page that is not truncated.
    let handles = cluster(1, ClusterConfig::default()).await;
    let s3 = clients(&handles).remove(0);
    s3.create_bucket().bucket("enc").send().await.expect("create");
    for key in ["dir/a+b c.txt", "dir/plain"] {
        s3.put_object()
            .bucket("enc")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect("put");
    }
    let keys = |listed: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output| -> Vec<String> {
        listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect()
    };
    let encoded = s3
        .list_objects_v2()
        .bucket("enc")
        .prefix("dir/")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("list, url-encoded");
    assert_eq!(keys(&encoded), ["dir/a%2Bb%20c.txt", "dir/plain"]);
    let v1 = s3
        .list_objects()
        .bucket("enc")
        .delimiter(" ")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("list v1, url-encoded");
    let prefixes: Vec<&str> = v1
        .common_prefixes()
        .iter()
        .filter_map(|prefix| prefix.prefix())
        .collect();
    assert_eq!(prefixes, ["dir/a%2Bb%20"]);
    let raw = s3.list_objects_v2().bucket("enc").send().await.expect("list");
    assert_eq!(keys(&raw), ["dir/a+b c.txt", "dir/plain"]);
    let none = s3
        .list_objects_v2()
        .bucket("enc")
        .max_keys(0)
        .send()
        .await
        .expect("max-keys=0");
    assert!(none.contents().is_empty());
    assert_eq!(none.is_truncated(), Some(false));
    assert_eq!(none.key_count(), Some(0));
}
