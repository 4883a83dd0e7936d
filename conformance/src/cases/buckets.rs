//! Buckets: create, head, locate, list, delete; BucketNotEmpty; unfinished uploads.

use crate::{Ctx, Outcome, describe, ensure, ensure_code, status};

/// Create, create again, head (through another endpoint), locate, list, head a missing one,
/// delete, and see it gone.
pub async fn lifecycle(ctx: &Ctx) -> Outcome {
    let bucket = ctx.bucket();
    ctx.create_bucket().await?;
    let again = ctx.s3(1).create_bucket().bucket(bucket).send().await;
    ensure_code!(again, "BucketAlreadyOwnedByYou", "CreateBucket of an existing bucket");
    ctx.s3(1)
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| format!("HeadBucket: {}", describe(&error)))?;
    ctx.s3(2)
        .get_bucket_location()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| format!("GetBucketLocation: {}", describe(&error)))?;
    let listed = ctx
        .s3(2)
        .list_buckets()
        .send()
        .await
        .map_err(|error| format!("ListBuckets: {}", describe(&error)))?;
    ensure!(
        listed.buckets().iter().any(|listed| listed.name() == Some(bucket)),
        "ListBuckets does not list {bucket}"
    );
    let missing = ctx
        .s3(0)
        .head_bucket()
        .bucket(ctx.other_bucket())
        .send()
        .await
        .err()
        .ok_or("HeadBucket of a missing bucket succeeded")?;
    ensure!(
        status(&missing) == Some(404),
        "HeadBucket of a missing bucket: {:?}",
        status(&missing)
    );
    ctx.s3(1)
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| format!("DeleteBucket: {}", describe(&error)))?;
    let listed = ctx
        .s3(0)
        .list_buckets()
        .send()
        .await
        .map_err(|error| format!("ListBuckets: {}", describe(&error)))?;
    ensure!(
        !listed.buckets().iter().any(|listed| listed.name() == Some(bucket)),
        "a deleted bucket is still listed"
    );
    Ok(())
}

/// A bucket with an object is not deleted: BucketNotEmpty.
pub async fn not_empty(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put("k", b"x").await?;
    let refused = ctx.s3(1).delete_bucket().bucket(ctx.bucket()).send().await;
    ensure_code!(refused, "BucketNotEmpty", "DeleteBucket of a bucket with an object");
    Ok(())
}

/// A bucket whose only content is an unfinished multipart upload is deleted (S3 drops the
/// upload with it): `aws s3 rb` after an interrupted copy must not be stuck.
pub async fn only_unfinished_upload(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.s3(0)
        .create_multipart_upload()
        .bucket(ctx.bucket())
        .key("interrupted")
        .send()
        .await
        .map_err(|error| format!("CreateMultipartUpload: {}", describe(&error)))?;
    ctx.s3(1)
        .delete_bucket()
        .bucket(ctx.bucket())
        .send()
        .await
        .map_err(|error| format!("DeleteBucket with only an unfinished upload: {}", describe(&error)))?;
    Ok(())
}
