//! Browser form uploads (PostObject), as an HTML form posts them: a SigV4-signed policy in the
//! fields, the file last.

use std::time::Duration;

use aws_sigv4::sign::v4;
use base64::Engine as _;
use bytes::Bytes;

use crate::http::{Answer, send};
use crate::{Ctx, Outcome, ensure, ensure_eq};

const BOUNDARY: &str = "----conformance-form";

/// A signed form for `key` (may hold `${filename}`) under `conditions` (JSON, after the
/// bucket, key prefix `uploads/` and credential conditions), valid for `valid`.
struct SignedForm {
    fields: Vec<(String, String)>,
}

impl SignedForm {
    fn new(ctx: &Ctx, key: &str, conditions: &str, valid: Duration) -> SignedForm {
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let expiration = (now + valid)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let target = ctx.target();
        let credential = format!("{}/{}/{}/s3/aws4_request", target.access_key, &date[..8], target.region);
        let policy = format!(
            r#"{{"expiration": "{expiration}", "conditions": [{{"bucket": "{}"}}, ["starts-with", "$key", "uploads/"],
            {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}},
            {{"x-amz-date": "{date}"}}{conditions}]}}"#,
            ctx.bucket()
        );
        let policy = base64::engine::general_purpose::STANDARD.encode(policy);
        let signing_key = v4::generate_signing_key(&target.secret_key, now.into(), &target.region, "s3");
        let signature = v4::calculate_signature(signing_key, policy.as_bytes());
        let fields = [
            ("key", key.to_owned()),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_owned()),
            ("x-amz-credential", credential),
            ("x-amz-date", date),
            ("policy", policy),
            ("x-amz-signature", signature),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        SignedForm { fields }
    }

    /// This form with field `name` set to `value` (added at the end when absent).
    fn with(mut self, name: &str, value: &str) -> SignedForm {
        match self.fields.iter_mut().find(|(field, _)| field == name) {
            Some((_, old)) => *old = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    /// Post it with a file named `file_name` holding `data`, through endpoint `index`.
    async fn post(&self, ctx: &Ctx, index: usize, file_name: &str, data: &[u8]) -> Result<Answer, String> {
        let mut body = Vec::new();
        for (name, value) in &self.fields {
            body.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        send(
            ctx.endpoint(index),
            "POST",
            &format!("/{}", ctx.bucket()),
            &[("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))],
            Bytes::from(body),
        )
        .await
    }
}

async fn absent(ctx: &Ctx, key: &str) -> Outcome {
    let head = ctx.s3(0).head_object().bucket(ctx.bucket()).key(key).send().await;
    ensure!(head.is_err(), "a refused form stored {key}");
    Ok(())
}

/// A signed form stores its file under its key with `${filename}` replaced; with
/// `success_action_status=201` the answer names the key.
pub async fn post_object(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let form = SignedForm::new(ctx, "uploads/${filename}", "", Duration::from_secs(300));
    let answer = form.post(ctx, 0, "photo.jpg", b"jpeg bytes").await?;
    ensure_eq!(answer.status, 204, "form upload ({})", answer.summary());
    ensure_eq!(
        ctx.get(1, "uploads/photo.jpg").await?.as_ref(),
        b"jpeg bytes",
        "the stored file"
    );
    let created = SignedForm::new(
        ctx,
        "uploads/created.txt",
        r#", {"success_action_status": "201"}"#,
        Duration::from_secs(300),
    )
    .with("success_action_status", "201");
    let answer = created.post(ctx, 1, "created.txt", b"created").await?;
    ensure_eq!(answer.status, 201, "form upload asking for 201 ({})", answer.summary());
    let text = String::from_utf8_lossy(&answer.body);
    ensure!(
        text.contains("<Key>uploads/created.txt</Key>"),
        "the 201 answer names no key: {text}"
    );
    Ok(())
}

/// A form whose fields break its policy is refused and stores nothing: a key outside its
/// prefix, a field no condition names.
pub async fn policy_conditions(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let outside = SignedForm::new(ctx, "elsewhere/a.txt", "", Duration::from_secs(300));
    let answer = outside.post(ctx, 0, "a.txt", b"x").await?;
    ensure!(
        answer.status == 400 || answer.status == 403,
        "a key outside the policy's prefix: {}",
        answer.summary()
    );
    absent(ctx, "elsewhere/a.txt").await?;
    let extra = SignedForm::new(ctx, "uploads/extra.txt", "", Duration::from_secs(300)).with("x-amz-meta-owner", "me");
    let answer = extra.post(ctx, 1, "extra.txt", b"x").await?;
    ensure!(
        answer.status == 400 || answer.status == 403,
        "a field the policy does not name: {}",
        answer.summary()
    );
    absent(ctx, "uploads/extra.txt").await?;
    Ok(())
}

/// A file outside the policy's content-length-range: 400 EntityTooLarge or EntityTooSmall,
/// nothing stored.
pub async fn size_range(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let form = SignedForm::new(
        ctx,
        "uploads/${filename}",
        r#", ["content-length-range", 2, 1024]"#,
        Duration::from_secs(300),
    );
    let answer = form.post(ctx, 0, "big.bin", &[7u8; 4096]).await?;
    ensure_eq!(
        (answer.status, answer.code()),
        (400, Some("EntityTooLarge".to_owned())),
        "too large"
    );
    absent(ctx, "uploads/big.bin").await?;
    let answer = form.post(ctx, 1, "small.bin", b"1").await?;
    ensure_eq!(
        (answer.status, answer.code()),
        (400, Some("EntityTooSmall".to_owned())),
        "too small"
    );
    absent(ctx, "uploads/small.bin").await?;
    let answer = form.post(ctx, 2, "fits.bin", &[7u8; 1024]).await?;
    ensure_eq!(answer.status, 204, "exactly the maximum ({})", answer.summary());
    Ok(())
}

/// A tampered signature, and an expired policy: 403, nothing stored.
pub async fn bad_signature(ctx: &Ctx) -> Outcome {
    ctx.create_bucket().await?;
    let form = SignedForm::new(ctx, "uploads/forged.txt", "", Duration::from_secs(300));
    let signature = form
        .fields
        .iter()
        .find(|(name, _)| name == "x-amz-signature")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let flipped = format!(
        "{}{}",
        if signature.starts_with('0') { "1" } else { "0" },
        &signature[1..]
    );
    let answer = form
        .with("x-amz-signature", &flipped)
        .post(ctx, 0, "forged.txt", b"x")
        .await?;
    ensure_eq!(answer.status, 403, "a tampered form signature ({})", answer.summary());
    absent(ctx, "uploads/forged.txt").await?;
    let late = SignedForm::new(ctx, "uploads/late.txt", "", Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = late.post(ctx, 1, "late.txt", b"x").await?;
    ensure_eq!(answer.status, 403, "an expired policy ({})", answer.summary());
    absent(ctx, "uploads/late.txt").await?;
    Ok(())
}
