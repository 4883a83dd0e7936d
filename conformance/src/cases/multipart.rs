//! Multipart uploads: parts through several endpoints, listing, completion and its ETag,
//! part reads, abort, the minimum part size, and parts copied from objects.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::{Ctx, Outcome, describe, ensure, ensure_code, ensure_eq, md5_hex};

const MIB: usize = 1024 * 1024;

async fn create(ctx: &Ctx, index: usize, key: &str) -> Result<String, String> {
    ctx.s3(index)
        .create_multipart_upload()
        .bucket(ctx.bucket())
        .key(key)
        .content_type("application/x-test")
        .send()
        .await
        .map_err(|error| format!("CreateMultipartUpload: {}", describe(&error)))?
        .upload_id()
        .map(str::to_owned)
        .ok_or_else(|| "CreateMultipartUpload gave no upload id".to_owned())
}

async fn complete(ctx: &Ctx, index: usize, key: &str, id: &str, parts: Vec<CompletedPart>) -> Result<String, String> {
    let done = ctx
        .s3(index)
        .complete_multipart_upload()
        .bucket(ctx.bucket())
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|error| format!("CompleteMultipartUpload: {}", describe(&error)))?;
    Ok(done.e_tag().unwrap_or_default().to_owned())
}

fn part(number: i32, etag: Option<&str>) -> CompletedPart {
    CompletedPart::builder()
        .part_number(number)
        .e_tag(etag.unwrap_or_default())
        .build()
}

/// Three parts through three endpoints; ListParts and ListMultipartUploads; completion with
/// S3's multipart ETag; the whole object and `?partNumber=2`.
pub async fn upload(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let id = create(ctx, 0, "big.bin").await?;
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 * MIB], vec![b'b'; 5 * MIB], b"tail".to_vec()];
    let mut completed = Vec::new();
    for (index, data) in parts.iter().enumerate() {
        let number = index as i32 + 1;
        let sent = ctx
            .s3(index)
            .upload_part()
            .bucket(ctx.bucket())
            .key("big.bin")
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .map_err(|error| format!("UploadPart {number}: {}", describe(&error)))?;
        ensure_eq!(
            sent.e_tag(),
            Some(format!("\"{}\"", md5_hex(data)).as_str()),
            "part {number}'s ETag"
        );
        completed.push(part(number, sent.e_tag()));
    }
    let listed = ctx
        .s3(1)
        .list_parts()
        .bucket(ctx.bucket())
        .key("big.bin")
        .upload_id(&id)
        .send()
        .await
        .map_err(|error| format!("ListParts: {}", describe(&error)))?;
    let sizes: Vec<i64> = listed.parts().iter().filter_map(|part| part.size()).collect();
    ensure_eq!(sizes, vec![5 * MIB as i64, 5 * MIB as i64, 4], "ListParts sizes");
    let uploads = ctx
        .s3(2)
        .list_multipart_uploads()
        .bucket(ctx.bucket())
        .send()
        .await
        .map_err(|error| format!("ListMultipartUploads: {}", describe(&error)))?;
    let ids: Vec<&str> = uploads
        .uploads()
        .iter()
        .filter_map(|upload| upload.upload_id())
        .collect();
    ensure_eq!(ids, vec![id.as_str()], "ListMultipartUploads ids");
    let etag = complete(ctx, 2, "big.bin", &id, completed).await?;
    let mut concatenated = Vec::new();
    for data in &parts {
        concatenated.extend(hex::decode(md5_hex(data)).map_err(|error| error.to_string())?);
    }
    ensure_eq!(etag, format!("\"{}-3\"", md5_hex(&concatenated)), "the multipart ETag");
    let whole = ctx
        .s3(0)
        .get_object()
        .bucket(ctx.bucket())
        .key("big.bin")
        .send()
        .await
        .map_err(|error| format!("GetObject: {}", describe(&error)))?;
    ensure_eq!(
        whole.content_type(),
        Some("application/x-test"),
        "the upload's content type"
    );
    let bytes = whole
        .body
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .into_bytes();
    ensure_eq!(bytes.len(), 10 * MIB + 4, "the object's length");
    ensure_eq!(&bytes[10 * MIB..], b"tail", "the last part");
    let second = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key("big.bin")
        .part_number(2)
        .send()
        .await
        .map_err(|error| format!("GET partNumber=2: {}", describe(&error)))?;
    ensure_eq!(second.parts_count(), Some(3), "x-amz-mp-parts-count");
    ensure_eq!(second.content_length(), Some(5 * MIB as i64), "part 2's length");
    Ok(())
}

/// An aborted upload takes no more parts: NoSuchUpload.
pub async fn abort(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let id = create(ctx, 1, "abandoned").await?;
    ctx.s3(2)
        .abort_multipart_upload()
        .bucket(ctx.bucket())
        .key("abandoned")
        .upload_id(&id)
        .send()
        .await
        .map_err(|error| format!("AbortMultipartUpload: {}", describe(&error)))?;
    let late = ctx
        .s3(0)
        .upload_part()
        .bucket(ctx.bucket())
        .key("abandoned")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await;
    ensure_code!(late, "NoSuchUpload", "UploadPart after abort");
    Ok(())
}

/// A part other than the last below 5 MiB fails the completion: EntityTooSmall.
pub async fn part_too_small(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let id = create(ctx, 0, "small").await?;
    let mut completed = Vec::new();
    for number in 1..=2 {
        let sent = ctx
            .s3(0)
            .upload_part()
            .bucket(ctx.bucket())
            .key("small")
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .map_err(|error| format!("UploadPart: {}", describe(&error)))?;
        completed.push(part(number, sent.e_tag()));
    }
    let refused = ctx
        .s3(1)
        .complete_multipart_upload()
        .bucket(ctx.bucket())
        .key("small")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await;
    ensure_code!(refused, "EntityTooSmall", "completing with a small first part");
    Ok(())
}

/// UploadPartCopy (what `boto3 copy()` and `aws s3 cp s3://… s3://…` send for large
/// objects): a byte range of one object and the whole of another become the parts.
pub async fn upload_part_copy(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let source: Vec<u8> = (0..6 * MIB).map(|index| (index % 253) as u8).collect();
    ctx.put("source.bin", &source).await?;
    ctx.put("small.bin", b"and the end").await?;
    let id = create(ctx, 1, "copied.bin").await?;
    let first = ctx
        .s3(2)
        .upload_part_copy()
        .bucket(ctx.bucket())
        .key("copied.bin")
        .upload_id(&id)
        .part_number(1)
        .copy_source(format!("{}/source.bin", ctx.bucket()))
        .copy_source_range(format!("bytes=0-{}", 5 * MIB - 1))
        .send()
        .await
        .map_err(|error| format!("UploadPartCopy with a range: {}", describe(&error)))?;
    let first_etag = first
        .copy_part_result()
        .and_then(|result| result.e_tag())
        .map(str::to_owned);
    ensure_eq!(
        first_etag,
        Some(format!("\"{}\"", md5_hex(&source[..5 * MIB]))),
        "the copied range's ETag"
    );
    let second = ctx
        .s3(0)
        .upload_part_copy()
        .bucket(ctx.bucket())
        .key("copied.bin")
        .upload_id(&id)
        .part_number(2)
        .copy_source(format!("{}/small.bin", ctx.bucket()))
        .send()
        .await
        .map_err(|error| format!("UploadPartCopy of a whole object: {}", describe(&error)))?;
    let second_etag = second
        .copy_part_result()
        .and_then(|result| result.e_tag())
        .map(str::to_owned);
    let beyond = ctx
        .s3(2)
        .upload_part_copy()
        .bucket(ctx.bucket())
        .key("copied.bin")
        .upload_id(&id)
        .part_number(3)
        .copy_source(format!("{}/small.bin", ctx.bucket()))
        .copy_source_range("bytes=0-999")
        .send()
        .await;
    ensure!(beyond.is_err(), "a copy range beyond the source was accepted");
    complete(
        ctx,
        1,
        "copied.bin",
        &id,
        vec![part(1, first_etag.as_deref()), part(2, second_etag.as_deref())],
    )
    .await?;
    let stored = ctx.get(2, "copied.bin").await?;
    let mut expected = source[..5 * MIB].to_vec();
    expected.extend_from_slice(b"and the end");
    ensure!(
        stored.len() == expected.len(),
        "stored {} bytes of {}",
        stored.len(),
        expected.len()
    );
    ensure!(
        stored.as_ref() == expected.as_slice(),
        "the copied parts differ from their sources"
    );
    Ok(())
}
