//! Objects: writes and reads with their metadata, ranges, conditions, checksums, copies and
//! deletes.

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, MetadataDirective};

use crate::{Ctx, Outcome, code, describe, ensure, ensure_code, ensure_eq, md5_hex, status};

const KEY: &str = "dir/hello world+1.txt";
const BODY: &[u8] = b"hello, storefront";

/// Put an object with a key that needs encoding, a content type and user metadata through
/// one endpoint; read it, and its head, through others.
pub async fn put_get_head(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let put = ctx
        .s3(0)
        .put_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .content_type("text/plain")
        .metadata("owner", "tests")
        .body(ByteStream::from_static(BODY))
        .send()
        .await
        .map_err(|error| format!("PutObject: {}", describe(&error)))?;
    ensure_eq!(
        put.e_tag(),
        Some(format!("\"{}\"", md5_hex(BODY)).as_str()),
        "PutObject ETag"
    );
    let got = ctx
        .s3(2)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .send()
        .await
        .map_err(|error| format!("GetObject: {}", describe(&error)))?;
    ensure_eq!(got.content_type(), Some("text/plain"), "Content-Type");
    ensure_eq!(
        got.metadata()
            .and_then(|metadata| metadata.get("owner"))
            .map(String::as_str),
        Some("tests"),
        "x-amz-meta-owner"
    );
    let body = got
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(body.as_ref(), BODY, "GetObject body");
    let head = ctx
        .s3(1)
        .head_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .send()
        .await
        .map_err(|error| format!("HeadObject: {}", describe(&error)))?;
    ensure_eq!(
        head.content_length(),
        Some(BODY.len() as i64),
        "HeadObject Content-Length"
    );
    ensure_eq!(head.e_tag(), put.e_tag(), "HeadObject ETag");
    Ok(())
}

/// Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires are
/// kept and returned on GET and HEAD, for single-part and multipart objects.
pub async fn representation_headers(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let expires = DateTime::from_secs(1_893_456_000);
    ctx.s3(0)
        .put_object()
        .bucket(ctx.bucket())
        .key("page.html")
        .cache_control("max-age=3600")
        .content_disposition("attachment; filename=\"page.html\"")
        .content_encoding("identity")
        .content_language("en")
        .expires(expires)
        .body(ByteStream::from_static(b"<html></html>"))
        .send()
        .await
        .map_err(|error| format!("PutObject: {}", describe(&error)))?;
    let head = ctx
        .s3(1)
        .head_object()
        .bucket(ctx.bucket())
        .key("page.html")
        .send()
        .await
        .map_err(|error| format!("HeadObject: {}", describe(&error)))?;
    ensure_eq!(head.cache_control(), Some("max-age=3600"), "HEAD Cache-Control");
    ensure_eq!(
        head.content_disposition(),
        Some("attachment; filename=\"page.html\""),
        "HEAD Content-Disposition"
    );
    ensure_eq!(head.content_encoding(), Some("identity"), "HEAD Content-Encoding");
    ensure_eq!(head.content_language(), Some("en"), "HEAD Content-Language");
    ensure_eq!(
        head.expires_string(),
        Some("Tue, 01 Jan 2030 00:00:00 GMT"),
        "HEAD Expires"
    );
    let got = ctx
        .s3(2)
        .get_object()
        .bucket(ctx.bucket())
        .key("page.html")
        .send()
        .await
        .map_err(|error| format!("GetObject: {}", describe(&error)))?;
    ensure_eq!(got.cache_control(), Some("max-age=3600"), "GET Cache-Control");
    ensure_eq!(
        got.expires_string(),
        Some("Tue, 01 Jan 2030 00:00:00 GMT"),
        "GET Expires"
    );
    let upload = ctx
        .s3(0)
        .create_multipart_upload()
        .bucket(ctx.bucket())
        .key("multi.bin")
        .cache_control("no-cache")
        .send()
        .await
        .map_err(|error| format!("CreateMultipartUpload: {}", describe(&error)))?;
    let id = upload.upload_id().unwrap_or_default();
    let part = ctx
        .s3(1)
        .upload_part()
        .bucket(ctx.bucket())
        .key("multi.bin")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from_static(b"one part"))
        .send()
        .await
        .map_err(|error| format!("UploadPart: {}", describe(&error)))?;
    ctx.s3(2)
        .complete_multipart_upload()
        .bucket(ctx.bucket())
        .key("multi.bin")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap_or_default())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|error| format!("CompleteMultipartUpload: {}", describe(&error)))?;
    let head = ctx
        .s3(0)
        .head_object()
        .bucket(ctx.bucket())
        .key("multi.bin")
        .send()
        .await
        .map_err(|error| format!("HeadObject: {}", describe(&error)))?;
    ensure_eq!(
        head.cache_control(),
        Some("no-cache"),
        "multipart object's Cache-Control"
    );
    Ok(())
}

/// Byte ranges: a middle range with its Content-Range, a suffix, and one beyond the end.
pub async fn ranges(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put(KEY, BODY).await?;
    let ranged = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .range("bytes=7-16")
        .send()
        .await
        .map_err(|error| format!("ranged GET: {}", describe(&error)))?;
    ensure_eq!(ranged.content_range(), Some("bytes 7-16/17"), "Content-Range");
    let body = ranged
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(body.as_ref(), b"storefront", "ranged body");
    let suffix = ctx
        .s3(2)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .range("bytes=-5")
        .send()
        .await
        .map_err(|error| format!("suffix GET: {}", describe(&error)))?;
    let body = suffix
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(body.as_ref(), b"front", "suffix body");
    let beyond = ctx
        .s3(0)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .range("bytes=100-200")
        .send()
        .await;
    ensure_code!(beyond, "InvalidRange", "a range beyond the end");
    Ok(())
}

/// If-None-Match with the ETag is 304, If-Match with another is 412, with its own it reads.
pub async fn conditional_reads(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put(KEY, BODY).await?;
    let etag = format!("\"{}\"", md5_hex(BODY));
    let not_modified = ctx
        .s3(0)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .if_none_match(&etag)
        .send()
        .await
        .err()
        .ok_or("If-None-Match with the ETag returned the object")?;
    ensure_eq!(status(&not_modified), Some(304), "If-None-Match status");
    let failed = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .if_match("\"0000\"")
        .send()
        .await
        .err()
        .ok_or("If-Match with another ETag returned the object")?;
    ensure_eq!(status(&failed), Some(412), "If-Match status");
    ctx.s3(2)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .if_match(&etag)
        .send()
        .await
        .map_err(|error| format!("If-Match with its ETag: {}", describe(&error)))?;
    Ok(())
}

/// NoSuchKey and NoSuchBucket.
pub async fn missing(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let gone = ctx.s3(1).get_object().bucket(ctx.bucket()).key("absent").send().await;
    ensure_code!(gone, "NoSuchKey", "GetObject of a missing key");
    let no_bucket = ctx.s3(2).get_object().bucket(ctx.other_bucket()).key("k").send().await;
    ensure_code!(no_bucket, "NoSuchBucket", "GetObject in a missing bucket");
    Ok(())
}

/// A CRC32 the SDK computes is verified, kept and echoed on a read that asks for it.
pub async fn checksums(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let put = ctx
        .s3(0)
        .put_object()
        .bucket(ctx.bucket())
        .key("crc")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from_static(b"checksummed"))
        .send()
        .await
        .map_err(|error| format!("PutObject with CRC32: {}", describe(&error)))?;
    let crc = put.checksum_crc32().ok_or("no CRC32 echoed on PutObject")?.to_owned();
    let read = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key("crc")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|error| format!("GetObject with checksum mode: {}", describe(&error)))?;
    ensure_eq!(read.checksum_crc32(), Some(crc.as_str()), "CRC32 on GetObject");
    Ok(())
}

/// A file body, which the SDK streams (over http: signed aws-chunked with a checksum trailer),
/// is stored as its plain bytes.
pub async fn streamed_file_upload(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let data: Vec<u8> = (0..3 << 20).map(|index: usize| (index % 241) as u8).collect();
    // Unique in the process too: targets run side by side in one test binary, with the same
    // bucket names.
    static FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "conformance-{}-{file}-{}.bin",
        std::process::id(),
        ctx.bucket()
    ));
    std::fs::write(&path, &data).map_err(|error| format!("write {}: {error}", path.display()))?;
    let body = ByteStream::from_path(&path).await.map_err(|error| error.to_string());
    let sent = match body {
        Ok(body) => ctx
            .s3(0)
            .put_object()
            .bucket(ctx.bucket())
            .key("file.bin")
            .body(body)
            .send()
            .await
            .map_err(|error| format!("PutObject from a file: {}", describe(&error))),
        Err(error) => Err(error),
    };
    let _ = std::fs::remove_file(&path);
    sent?;
    let stored = ctx.get(1, "file.bin").await?;
    ensure!(
        stored.len() == data.len(),
        "stored {} bytes of {}",
        stored.len(),
        data.len()
    );
    ensure!(
        md5_hex(&stored) == md5_hex(&data),
        "the stored bytes differ from the file's"
    );
    Ok(())
}

/// 24 MiB in one PUT and one GET, byte for byte.
pub async fn large(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let data: Vec<u8> = (0..24 << 20).map(|index: usize| (index % 251) as u8).collect();
    ctx.put("large.bin", &data).await?;
    let stored = ctx.get(2, "large.bin").await?;
    ensure!(
        stored.len() == data.len(),
        "read {} bytes of {}",
        stored.len(),
        data.len()
    );
    ensure!(
        md5_hex(&stored) == md5_hex(&data),
        "the bytes read differ from those written"
    );
    Ok(())
}

/// `?partNumber=1` of a single-part object is the whole object; part 2 does not exist.
pub async fn part_number_single_part(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put(KEY, BODY).await?;
    let first = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .part_number(1)
        .send()
        .await
        .map_err(|error| format!("GET partNumber=1: {}", describe(&error)))?;
    let body = first
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(body.as_ref(), BODY, "part 1 of a single-part object");
    let head = ctx
        .s3(2)
        .head_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .part_number(1)
        .send()
        .await
        .map_err(|error| format!("HEAD partNumber=1: {}", describe(&error)))?;
    ensure_eq!(head.content_length(), Some(BODY.len() as i64), "HEAD part 1 length");
    let second = ctx
        .s3(0)
        .get_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .part_number(2)
        .send()
        .await
        .err()
        .ok_or("part 2 of a single-part object was served")?;
    ensure_eq!(status(&second), Some(416), "part 2 of a single-part object");
    Ok(())
}

/// CopyObject from an encoded source keeps the bytes and metadata; with REPLACE it takes
/// the new ones.
pub async fn copy(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.s3(0)
        .put_object()
        .bucket(ctx.bucket())
        .key(KEY)
        .content_type("text/plain")
        .metadata("owner", "tests")
        .body(ByteStream::from_static(BODY))
        .send()
        .await
        .map_err(|error| format!("PutObject: {}", describe(&error)))?;
    ctx.s3(1)
        .copy_object()
        .bucket(ctx.bucket())
        .key("copy.txt")
        .copy_source(format!("{}/dir/hello%20world%2B1.txt", ctx.bucket()))
        .send()
        .await
        .map_err(|error| format!("CopyObject: {}", describe(&error)))?;
    let copy = ctx
        .s3(2)
        .get_object()
        .bucket(ctx.bucket())
        .key("copy.txt")
        .send()
        .await
        .map_err(|error| format!("GetObject of the copy: {}", describe(&error)))?;
    ensure_eq!(
        copy.metadata()
            .and_then(|metadata| metadata.get("owner"))
            .map(String::as_str),
        Some("tests"),
        "the copy's metadata"
    );
    let body = copy
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(body.as_ref(), BODY, "the copy's body");
    ctx.s3(0)
        .copy_object()
        .bucket(ctx.bucket())
        .key("replaced.txt")
        .copy_source(format!("{}/dir/hello%20world%2B1.txt", ctx.bucket()))
        .metadata_directive(MetadataDirective::Replace)
        .content_type("application/x-new")
        .metadata("owner", "someone-else")
        .send()
        .await
        .map_err(|error| format!("CopyObject REPLACE: {}", describe(&error)))?;
    let replaced = ctx
        .s3(1)
        .head_object()
        .bucket(ctx.bucket())
        .key("replaced.txt")
        .send()
        .await
        .map_err(|error| format!("HeadObject of the replaced copy: {}", describe(&error)))?;
    ensure_eq!(
        replaced.content_type(),
        Some("application/x-new"),
        "REPLACE content type"
    );
    ensure_eq!(
        replaced
            .metadata()
            .and_then(|metadata| metadata.get("owner"))
            .map(String::as_str),
        Some("someone-else"),
        "REPLACE metadata"
    );
    Ok(())
}

/// `x-amz-copy-source-if-*`: a copy whose source condition fails is 412 and copies nothing;
/// one whose conditions hold copies.
pub async fn copy_source_conditions(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put("source", BODY).await?;
    let source = format!("{}/source", ctx.bucket());
    let etag = format!("\"{}\"", md5_hex(BODY));
    let past = DateTime::from_secs(946_684_800);
    let future = DateTime::from_secs(4_102_444_800);
    let attempts = [
        (
            "if-match another",
            ctx.s3(0).copy_object().copy_source_if_match("\"0000\""),
        ),
        (
            "if-none-match its own",
            ctx.s3(1).copy_object().copy_source_if_none_match(&etag),
        ),
        (
            "if-unmodified-since 2000",
            ctx.s3(2).copy_object().copy_source_if_unmodified_since(past),
        ),
        (
            "if-modified-since 2100",
            ctx.s3(0).copy_object().copy_source_if_modified_since(future),
        ),
    ];
    for (what, attempt) in attempts {
        let refused = attempt
            .bucket(ctx.bucket())
            .key("copy")
            .copy_source(&source)
            .send()
            .await
            .err()
            .ok_or_else(|| format!("copy-source {what}: copied"))?;
        ensure_eq!(status(&refused), Some(412), "copy-source {what}");
        ensure_eq!(
            code(&refused).as_deref(),
            Some("PreconditionFailed"),
            "copy-source {what} code"
        );
    }
    let absent = ctx.s3(1).head_object().bucket(ctx.bucket()).key("copy").send().await;
    ensure!(absent.is_err(), "a refused copy left an object");
    ctx.s3(2)
        .copy_object()
        .bucket(ctx.bucket())
        .key("copy")
        .copy_source(&source)
        .copy_source_if_match(&etag)
        .copy_source_if_modified_since(past)
        .send()
        .await
        .map_err(|error| format!("copy whose conditions hold: {}", describe(&error)))?;
    ensure_eq!(ctx.get(0, "copy").await?.as_ref(), BODY, "the copy");
    Ok(())
}

/// DeleteObject (seen through another endpoint), a missing key's delete succeeds, and
/// DeleteObjects of a listing deletes every key; then the bucket goes.
pub async fn delete(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    for key in ["a", "b/c", "d e+f"] {
        ctx.put(key, b"x").await?;
    }
    ctx.s3(1)
        .delete_object()
        .bucket(ctx.bucket())
        .key("a")
        .send()
        .await
        .map_err(|error| format!("DeleteObject: {}", describe(&error)))?;
    ensure!(
        ctx.s3(2)
            .head_object()
            .bucket(ctx.bucket())
            .key("a")
            .send()
            .await
            .is_err(),
        "deleted through one endpoint, still there through another"
    );
    ctx.s3(0)
        .delete_object()
        .bucket(ctx.bucket())
        .key("never-was")
        .send()
        .await
        .map_err(|error| format!("DeleteObject of a missing key: {}", describe(&error)))?;
    let listing = ctx
        .s3(0)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .send()
        .await
        .map_err(|error| format!("ListObjectsV2: {}", describe(&error)))?;
    let identifiers: Vec<aws_sdk_s3::types::ObjectIdentifier> = listing
        .contents()
        .iter()
        .filter_map(|object| object.key())
        .filter_map(|key| aws_sdk_s3::types::ObjectIdentifier::builder().key(key).build().ok())
        .collect();
    let deleted = ctx
        .s3(2)
        .delete_objects()
        .bucket(ctx.bucket())
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(identifiers))
                .build()
                .map_err(|error| error.to_string())?,
        )
        .send()
        .await
        .map_err(|error| format!("DeleteObjects: {}", describe(&error)))?;
    ensure_eq!(deleted.deleted().len(), listing.contents().len(), "keys deleted");
    ensure_eq!(listing.contents().len(), 2, "keys listed before DeleteObjects");
    ctx.s3(1)
        .delete_bucket()
        .bucket(ctx.bucket())
        .send()
        .await
        .map_err(|error| format!("DeleteBucket of the emptied bucket: {}", describe(&error)))?;
    Ok(())
}
