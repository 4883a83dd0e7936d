//! Listings: V2 with a delimiter, pages continued through other endpoints, start-after; V1
//! with markers; `encoding-type=url`; `max-keys=0`.

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::EncodingType;

use crate::{Ctx, Outcome, describe, ensure, ensure_eq};

async fn fill(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    for key in [
        "dir/hello world+1.txt",
        "copy.txt",
        "crc",
        "logs/a",
        "logs/b",
        "logs/c",
        "logs/deep/x",
        "zz",
    ] {
        ctx.put(key, b"x").await?;
    }
    Ok(())
}

fn keys(listed: &ListObjectsV2Output) -> Vec<String> {
    listed
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect()
}

/// A delimiter rolls keys up into common prefixes; pages of two, each asked of another
/// endpoint, list every key once in order; start-after starts after.
pub async fn v2_delimiter_and_pages(ctx: &Ctx) -> Outcome {
    fill(ctx).await?;
    let top = ctx
        .s3(0)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .delimiter("/")
        .send()
        .await
        .map_err(|error| format!("ListObjectsV2: {}", describe(&error)))?;
    let prefixes: Vec<&str> = top
        .common_prefixes()
        .iter()
        .filter_map(|prefix| prefix.prefix())
        .collect();
    ensure_eq!(prefixes, vec!["dir/", "logs/"], "common prefixes");
    ensure_eq!(keys(&top), vec!["copy.txt", "crc", "zz"], "top-level keys");
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0..10 {
        let listed = ctx
            .s3(page)
            .list_objects_v2()
            .bucket(ctx.bucket())
            .prefix("logs/")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|error| format!("page {page}: {}", describe(&error)))?;
        seen.extend(keys(&listed));
        token = listed.next_continuation_token().map(str::to_owned);
        if !listed.is_truncated().unwrap_or(false) {
            break;
        }
        ensure!(token.is_some(), "a truncated page without a continuation token");
    }
    ensure_eq!(
        seen,
        vec!["logs/a", "logs/b", "logs/c", "logs/deep/x"],
        "keys over the pages"
    );
    let after = ctx
        .s3(1)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .prefix("logs/")
        .start_after("logs/b")
        .send()
        .await
        .map_err(|error| format!("start-after: {}", describe(&error)))?;
    ensure_eq!(keys(&after), vec!["logs/c", "logs/deep/x"], "keys after logs/b");
    Ok(())
}

/// ListObjects (V1): a delimiter's prefixes, a truncated page and the next from its marker.
pub async fn v1_markers(ctx: &Ctx) -> Outcome {
    fill(ctx).await?;
    let top = ctx
        .s3(1)
        .list_objects()
        .bucket(ctx.bucket())
        .delimiter("/")
        .send()
        .await
        .map_err(|error| format!("ListObjects: {}", describe(&error)))?;
    let prefixes: Vec<&str> = top
        .common_prefixes()
        .iter()
        .filter_map(|prefix| prefix.prefix())
        .collect();
    ensure_eq!(prefixes, vec!["dir/", "logs/"], "V1 common prefixes");
    let first = ctx
        .s3(2)
        .list_objects()
        .bucket(ctx.bucket())
        .prefix("logs/")
        .max_keys(3)
        .send()
        .await
        .map_err(|error| format!("ListObjects page 1: {}", describe(&error)))?;
    ensure!(
        first.is_truncated().unwrap_or(false),
        "three of four keys is a truncated page"
    );
    let marker = first
        .next_marker()
        .map(str::to_owned)
        .or_else(|| {
            first
                .contents()
                .last()
                .and_then(|object| object.key().map(str::to_owned))
        })
        .ok_or("a truncated V1 page names no marker and no last key")?;
    let next = ctx
        .s3(0)
        .list_objects()
        .bucket(ctx.bucket())
        .prefix("logs/")
        .marker(marker)
        .send()
        .await
        .map_err(|error| format!("ListObjects page 2: {}", describe(&error)))?;
    let rest: Vec<&str> = next.contents().iter().filter_map(|object| object.key()).collect();
    ensure_eq!(rest, vec!["logs/deep/x"], "V1 page 2");
    Ok(())
}

/// With `encoding-type=url` keys and prefixes come back percent-encoded (so a `+` or a space
/// survives clients that decode them: `aws s3 rm --recursive` relies on it); without, as
/// they are.
pub async fn encoding_type_url(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    for key in ["dir/a+b c.txt", "dir/plain"] {
        ctx.put(key, b"x").await?;
    }
    let encoded = ctx
        .s3(0)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .prefix("dir/")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .map_err(|error| format!("ListObjectsV2 url-encoded: {}", describe(&error)))?;
    ensure_eq!(
        keys(&encoded),
        vec!["dir/a%2Bb%20c.txt", "dir/plain"],
        "url-encoded keys"
    );
    let v1 = ctx
        .s3(1)
        .list_objects()
        .bucket(ctx.bucket())
        .delimiter(" ")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .map_err(|error| format!("ListObjects url-encoded: {}", describe(&error)))?;
    let prefixes: Vec<&str> = v1
        .common_prefixes()
        .iter()
        .filter_map(|prefix| prefix.prefix())
        .collect();
    ensure_eq!(prefixes, vec!["dir/a%2Bb%20"], "url-encoded common prefixes");
    let raw = ctx
        .s3(2)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .send()
        .await
        .map_err(|error| format!("ListObjectsV2: {}", describe(&error)))?;
    ensure_eq!(keys(&raw), vec!["dir/a+b c.txt", "dir/plain"], "keys as they are");
    Ok(())
}

/// `max-keys=0` is an empty page that is not truncated.
pub async fn max_keys_zero(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put("k", b"x").await?;
    let none = ctx
        .s3(0)
        .list_objects_v2()
        .bucket(ctx.bucket())
        .max_keys(0)
        .send()
        .await
        .map_err(|error| format!("max-keys=0: {}", describe(&error)))?;
    ensure!(none.contents().is_empty(), "max-keys=0 listed objects");
    ensure_eq!(none.is_truncated(), Some(false), "max-keys=0 IsTruncated");
    ensure_eq!(none.key_count(), Some(0), "max-keys=0 KeyCount");
    Ok(())
}
