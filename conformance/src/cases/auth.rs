//! Signatures: a wrong secret, an unknown key, presigned URLs (SigV4; SigV2 where the target
//! accepts it) fetched as a browser would, and their expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::presigning::PresigningConfig;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{KeyInit, Mac};

use crate::http::{origin_form, send};
use crate::{Ctx, Outcome, ensure, ensure_code, ensure_eq, status};

/// `url` with the first character of the signature after `parameter` changed (its length
/// kept, so only the value is wrong).
fn flip_signature(url: &str, parameter: &str) -> String {
    match url.find(parameter) {
        Some(at) => {
            let at = at + parameter.len();
            let flipped = if url[at..].starts_with('0') { "1" } else { "0" };
            format!("{}{flipped}{}", &url[..at], &url[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// A wrong secret: 403 SignatureDoesNotMatch.
pub async fn wrong_secret(ctx: &Ctx) -> Outcome {
    let refused = ctx
        .client_with(&ctx.target().access_key, "not-the-secret")
        .list_buckets()
        .send()
        .await
        .err()
        .ok_or("a wrong secret was accepted")?;
    ensure_eq!(status(&refused), Some(403), "status for a wrong secret");
    ensure_eq!(
        crate::code(&refused).as_deref(),
        Some("SignatureDoesNotMatch"),
        "code for a wrong secret"
    );
    Ok(())
}

/// An access key nobody issued: 403 InvalidAccessKeyId.
pub async fn unknown_key(ctx: &Ctx) -> Outcome {
    let refused = ctx
        .client_with("AKIDNOBODYISSUED", "whatever")
        .list_buckets()
        .send()
        .await;
    ensure_code!(refused, "InvalidAccessKeyId", "an unknown access key");
    Ok(())
}

/// Presigned PUT and GET URLs, used with no SDK (as `curl` or a browser does); a tampered
/// signature is refused and stores nothing.
pub async fn presigned_get_put(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let config = PresigningConfig::expires_in(Duration::from_secs(300)).map_err(|error| error.to_string())?;
    let put = ctx
        .s3(0)
        .put_object()
        .bucket(ctx.bucket())
        .key("presigned.txt")
        .presigned(config.clone())
        .await
        .map_err(|error| format!("presign PUT: {error}"))?;
    let answer = send(
        ctx.endpoint(0),
        "PUT",
        &origin_form(put.uri()),
        &[],
        Bytes::from_static(b"via a URL"),
    )
    .await?;
    ensure_eq!(answer.status, 200, "presigned PUT ({})", answer.summary());
    let get = ctx
        .s3(1)
        .get_object()
        .bucket(ctx.bucket())
        .key("presigned.txt")
        .presigned(config.clone())
        .await
        .map_err(|error| format!("presign GET: {error}"))?;
    let answer = send(ctx.endpoint(1), "GET", &origin_form(get.uri()), &[], Bytes::new()).await?;
    ensure_eq!(answer.status, 200, "presigned GET ({})", answer.summary());
    ensure_eq!(answer.body.as_ref(), b"via a URL", "presigned GET body");
    let tampered = ctx
        .s3(2)
        .put_object()
        .bucket(ctx.bucket())
        .key("tampered.txt")
        .presigned(config)
        .await
        .map_err(|error| format!("presign PUT: {error}"))?;
    let uri = flip_signature(&origin_form(tampered.uri()), "X-Amz-Signature=");
    let answer = send(ctx.endpoint(2), "PUT", &uri, &[], Bytes::from_static(b"forged")).await?;
    ensure_eq!(answer.status, 403, "tampered presigned PUT ({})", answer.summary());
    let absent = ctx
        .s3(0)
        .head_object()
        .bucket(ctx.bucket())
        .key("tampered.txt")
        .send()
        .await;
    ensure!(absent.is_err(), "a tampered presigned PUT stored an object");
    Ok(())
}

/// A presigned URL past its expiry: 403 AccessDenied.
pub async fn presigned_expired(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put("k", b"x").await?;
    let config = PresigningConfig::expires_in(Duration::from_secs(1)).map_err(|error| error.to_string())?;
    let get = ctx
        .s3(0)
        .get_object()
        .bucket(ctx.bucket())
        .key("k")
        .presigned(config)
        .await
        .map_err(|error| format!("presign GET: {error}"))?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = send(ctx.endpoint(0), "GET", &origin_form(get.uri()), &[], Bytes::new()).await?;
    ensure_eq!(
        (answer.status, answer.code()),
        (403, Some("AccessDenied".to_owned())),
        "expired presigned GET"
    );
    Ok(())
}

/// A SigV2 presigned GET (`AWSAccessKeyId`, `Expires`, `Signature`, as `aws s3 presign` of
/// awscli v1 and `s3cmd signurl` write them): served while valid, refused when tampered.
pub async fn sigv2_presigned(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    ctx.put("v2.txt", b"signed with v2").await?;
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_secs()
        + 300;
    let path = format!("/{}/v2.txt", ctx.bucket());
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(ctx.target().secret_key.as_bytes())
        .map_err(|error| error.to_string())?;
    mac.update(format!("GET\n\n\n{expires}\n{path}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let encoded: String = signature
        .bytes()
        .map(|byte| match byte {
            b'+' => "%2B".to_owned(),
            b'/' => "%2F".to_owned(),
            b'=' => "%3D".to_owned(),
            other => (other as char).to_string(),
        })
        .collect();
    let url = format!(
        "{path}?AWSAccessKeyId={}&Expires={expires}&Signature={encoded}",
        ctx.target().access_key
    );
    let answer = send(ctx.endpoint(0), "GET", &url, &[], Bytes::new()).await?;
    ensure_eq!(answer.status, 200, "SigV2 presigned GET ({})", answer.summary());
    ensure_eq!(answer.body.as_ref(), b"signed with v2", "SigV2 presigned body");
    let tampered = flip_signature(&url, "Signature=");
    let answer = send(ctx.endpoint(0), "GET", &tampered, &[], Bytes::new()).await?;
    ensure_eq!(answer.status, 403, "tampered SigV2 URL ({})", answer.summary());
    Ok(())
}
