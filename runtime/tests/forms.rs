//! Browser form uploads (PostObject) through the proxy in policy mode: boto3's
//! `generate_presigned_post` forms posted as an HTML form posts them (urllib3's multipart
//! encoder, the file last), SigV2 forms where allowed, and raw forms for what a browser may
//! send badly (a disconnect mid-file, oversized fields, a large file streamed).

mod common;

use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4;
use base64::Engine as _;
use storefront_core::calendar::format_iso8601;
use tokio::io::AsyncWriteExt;

const RULES: &str = r#"
[auth]
mode = "policy"

[[auth.keys]]
access_key = "AKIDAPP"
secret_key = "app-secret"
name = "app-key"

[health.active]
enabled = false

[[policy.rules]]
name = "app-key-uploads"
effect = "allow"
identity = { access_key = "AKIDAPP" }
actions = ["read", "write"]
buckets = ["data"]
keys = ["uploads/*"]
"#;

/// What the scripts share: a boto3 client of the app key and an HTML-form-style POST.
const PRELUDE: &str = r#"
import os, time, urllib3, boto3
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ["S3_URL"]
http = urllib3.PoolManager(retries=False)

def client(secret="app-secret", version="s3v4"):
    return boto3.client("s3", endpoint_url=URL, region_name="us-east-1",
        aws_access_key_id="AKIDAPP", aws_secret_access_key=secret,
        config=Config(signature_version=version, s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}))

def post(form, data, filename="photo.jpg", extra=(), change=None):
    # As a browser posts an HTML form: the fields in order, the file last.
    fields = dict(form["fields"])
    if change:
        fields.update(change)
    fields = list(fields.items()) + list(extra)
    body, content_type = urllib3.encode_multipart_formdata(
        fields + [("file", (filename, data, "image/jpeg"))])
    answer = http.request("POST", form["url"], body=body, headers={"Content-Type": content_type})
    text = answer.data.decode()
    code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else ""
    key = text.split("<Key>")[1].split("</Key>")[0] if "<Key>" in text else ""
    return ("%d %s %s" % (answer.status, code, key)).strip()

def stored(key):
    try:
        return client().get_object(Bucket="data", Key=key)["Body"].read().decode()
    except ClientError as error:
        return "missing (%s)" % error.response["Error"]["Code"]
"#;

#[tokio::test]
async fn boto3_presigned_post_forms_store_what_their_policy_allows_and_nothing_else() {
    // Proves the acceptance case and S3's answers: boto3's generate_presigned_post form, posted
    // as an HTML form, is verified by the proxy (the caller's key is not the backend's), its
    // policy is checked (the key prefix, the size range, exact fields, every field named,
    // expiry), the proxy's own policy authorises it as a write of the form's key, and the
    // backend stores it under `${filename}` replaced, as it answers (201 with the key where
    // the form asks for it). Each refused form leaves nothing behind.
    let (endpoint, _nodes) = common::policy_proxy(RULES).await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
s3 = client()
form = s3.generate_presigned_post("data", "uploads/${filename}",
    Fields={"Content-Type": "image/jpeg"},
    Conditions=[{"Content-Type": "image/jpeg"}, ["content-length-range", 1, 1048576]],
    ExpiresIn=300)
print("stored:", post(form, b"jpeg bytes"))
print("read back:", stored("uploads/photo.jpg"))
print("too large:", post(form, b"x" * 1048577, filename="big.jpg"))
print("big:", stored("uploads/big.jpg"))
print("empty:", post(form, b"", filename="empty.jpg"))
print("outside prefix:", post(form, b"data", change={"key": "elsewhere/${filename}"}))
print("wrong type:", post(form, b"data", filename="type.jpg", change={"Content-Type": "text/html"}))
print("unnamed field:", post(form, b"data", filename="extra.jpg", extra=[("x-amz-meta-owner", "me")]))
print("ignored field:", post(form, b"data", filename="ignored.jpg", extra=[("x-ignore-tracking", "1")]))
sig = form["fields"]["x-amz-signature"]
print("tampered:", post(form, b"data", filename="t.jpg", change={"x-amz-signature": ("0" if sig[0] != "0" else "1") + sig[1:]}))
print("tampered name:", stored("uploads/t.jpg"))
bad = client("not-the-secret").generate_presigned_post("data", "uploads/${filename}", ExpiresIn=300)
print("wrong secret:", post(bad, b"data", filename="w.jpg"))
private = s3.generate_presigned_post("data", "private/${filename}", ExpiresIn=300)
print("proxy policy:", post(private, b"data", filename="p.jpg"))
created = s3.generate_presigned_post("data", "uploads/${filename}",
    Fields={"success_action_status": "201"}, Conditions=[{"success_action_status": "201"}], ExpiresIn=300)
print("created:", post(created, b"created", filename="created.txt"))
soon = s3.generate_presigned_post("data", "uploads/${filename}", ExpiresIn=1)
time.sleep(2.5)
print("expired:", post(soon, b"late", filename="late.jpg"))
print("late:", stored("uploads/late.jpg"))
"#
    );
    let said = common::python(endpoint, &script).await;
    for expected in [
        "stored: 204",
        "read back: jpeg bytes",
        "too large: 400 EntityTooLarge",
        "big: missing (NoSuchKey)",
        "empty: 400 EntityTooSmall",
        "outside prefix: 400 InvalidPolicyDocument",
        "wrong type: 400 InvalidPolicyDocument",
        "unnamed field: 400 InvalidPolicyDocument",
        "ignored field: 204",
        "tampered: 403 SignatureDoesNotMatch",
        "tampered name: missing (NoSuchKey)",
        "wrong secret: 403 SignatureDoesNotMatch",
        "proxy policy: 403 AccessDenied",
        "created: 201  uploads/created.txt",
        "expired: 403 AccessDenied",
        "late: missing (NoSuchKey)",
    ] {
        assert!(said.lines().any(|line| line == expected), "no `{expected}` in:\n{said}");
    }
}

#[tokio::test]
async fn sigv2_forms_are_verified_where_allowed_and_refused_elsewhere() {
    // Proves SigV2 browser forms (AWSAccessKeyId, signature) from boto3 with
    // signature_version='s3': stored with `auth.sigv2 = true`, tampered ones refused, and the
    // same form refused with 400 InvalidRequest where SigV2 is off.
    let script = format!(
        "{PRELUDE}{}",
        r#"
s3 = client(version="s3")
form = s3.generate_presigned_post("data", "uploads/${filename}", ExpiresIn=300)
assert "AWSAccessKeyId" in form["fields"] and "signature" in form["fields"], form
print("v2:", post(form, b"signed with v2", filename="v2.txt"))
print("v2 read back:", stored("uploads/v2.txt"))
signature = form["fields"]["signature"]
tampered = ("B" if signature[0] == "A" else "A") + signature[1:]
print("v2 tampered:", post(form, b"x", filename="v2t.txt", change={"signature": tampered}))
"#
    );
    let (endpoint, _nodes) =
        common::policy_proxy(&RULES.replacen("mode = \"policy\"\n", "mode = \"policy\"\nsigv2 = true\n", 1)).await;
    let said = common::python(endpoint, &script).await;
    for expected in [
        "v2: 204",
        "v2 read back: signed with v2",
        "v2 tampered: 403 SignatureDoesNotMatch",
    ] {
        assert!(said.lines().any(|line| line == expected), "no `{expected}` in:\n{said}");
    }
    let (endpoint, _nodes) = common::policy_proxy(RULES).await;
    let said = common::python(endpoint, &script).await;
    assert!(said.lines().any(|line| line == "v2: 400 InvalidRequest"), "{said}");
    assert!(
        said.lines().any(|line| line == "v2 read back: missing (NoSuchKey)"),
        "{said}"
    );
}

/// A SigV4 form for `key` under a policy with `conditions` (JSON), signed with the app key
/// now; its fields and the boundary `BOUNDARY` in use.
fn signed_fields(key: &str, conditions: &str) -> Vec<(String, String)> {
    let now = SystemTime::now();
    let date = format_iso8601(now).replace(['-', ':'], "");
    let expiration = format_iso8601(now + Duration::from_secs(300));
    let credential = format!("AKIDAPP/{}/us-east-1/s3/aws4_request", &date[..8]);
    let policy = format!(
        r#"{{"expiration": "{expiration}", "conditions": [{{"bucket": "data"}}, {{"key": "{key}"}},
        {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}},
        {{"x-amz-date": "{date}"}}{conditions}]}}"#
    );
    let policy = base64::engine::general_purpose::STANDARD.encode(policy);
    let signing_key = v4::generate_signing_key("app-secret", now, "us-east-1", "s3");
    let signature = v4::calculate_signature(signing_key, policy.as_bytes());
    [
        ("key", key.to_owned()),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_owned()),
        ("x-amz-credential", credential),
        ("x-amz-date", date),
        ("policy", policy),
        ("x-amz-signature", signature),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

const BOUNDARY: &str = "----storefront-form-test";

/// The form's head and fields up to the file's first byte, and its closing delimiter.
fn form_around(fields: &[(String, String)], file_length: usize) -> (Vec<u8>, Vec<u8>) {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    let length = body.len() + file_length + tail.len();
    let mut head = format!(
        "POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&body);
    (head, tail)
}

#[tokio::test]
async fn a_large_form_streams_through_and_one_cut_short_stores_nothing() {
    // Proves the file is streamed, not buffered, and never committed short: a 24 MiB file
    // arrives whole (its MD5 checked through the backend), and a form whose client disconnects
    // mid-file leaves no object (the backend never saw the closing delimiter).
    let (endpoint, nodes) = common::policy_proxy(RULES).await;
    let direct = common::client(
        nodes[0].address().expect("bound"),
        common::BACKEND_KEY,
        common::BACKEND_SECRET,
    );
    let file: Vec<u8> = (0..24 << 20).map(|index: usize| (index % 251) as u8).collect();
    let (head, tail) = form_around(&signed_fields("uploads/large.bin", ""), file.len());
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    stream.write_all(&head).await.expect("head");
    for piece in file.chunks(1 << 20) {
        stream.write_all(piece).await.expect("file");
    }
    stream.write_all(&tail).await.expect("tail");
    let said = common::read_answer(&mut stream, Duration::from_secs(10)).await;
    assert!(common::status(&said) == "204", "{said}");
    let stored = direct
        .get_object()
        .bucket("data")
        .key("uploads/large.bin")
        .send()
        .await
        .expect("stored");
    let bytes = stored.body.collect().await.expect("body").into_bytes();
    assert_eq!(bytes.len(), file.len());
    assert_eq!(common::md5_hex(&bytes), common::md5_hex(&file));

    let (head, _) = form_around(&signed_fields("uploads/cut.bin", ""), file.len());
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    stream.write_all(&head).await.expect("head");
    stream.write_all(&file[..8 << 20]).await.expect("half the file");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cut = direct.head_object().bucket("data").key("uploads/cut.bin").send().await;
    assert!(cut.is_err(), "a form cut short must store nothing");
}

#[tokio::test]
async fn oversized_fields_and_malformed_forms_get_s3s_errors() {
    // Proves the bound on what is read before the file (the fields of a form are at most
    // 20 KiB, as S3 bounds them) and the errors for forms that are not well-formed: no file,
    // no boundary, a policy that is not base64 JSON, a form without a key.
    let (endpoint, _nodes) = common::policy_proxy(RULES).await;
    let mut fields = signed_fields("uploads/huge.bin", "");
    fields.insert(0, ("x-ignore-padding".to_owned(), "p".repeat(32 * 1024)));
    let (head, tail) = form_around(&fields, 4);
    let mut request = head;
    request.extend_from_slice(b"data");
    request.extend_from_slice(&tail);
    let (_, said) = common::send_raw(endpoint, &request).await;
    assert!(
        said.contains("400") && said.contains("MaxPostPreDataLengthExceededError"),
        "{said}"
    );

    let fields = signed_fields("uploads/none.bin", "");
    let mut body = Vec::new();
    for (name, value) in &fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let mut request = format!(
        "POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (_, said) = common::send_raw(endpoint, &request).await;
    assert!(
        said.contains("400") && said.contains("exactly one file"),
        "no file: {said}"
    );

    let request =
        b"POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data\r\nContent-Length: 4\r\n\r\nabcd";
    let (_, said) = common::send_raw(endpoint, request).await;
    assert!(
        said.contains("400") && said.contains("MalformedPOSTRequest"),
        "no boundary: {said}"
    );

    let mut fields = signed_fields("uploads/p.bin", "");
    fields.retain(|(name, _)| name != "key");
    let (head, tail) = form_around(&fields, 1);
    let mut request = head;
    request.extend_from_slice(b"x");
    request.extend_from_slice(&tail);
    let (_, said) = common::send_raw(endpoint, &request).await;
    assert!(
        said.contains("400") && said.contains("InvalidPolicyDocument"),
        "a key condition without its field: {said}"
    );

    let fields = vec![
        ("key".to_owned(), "uploads/p.bin".to_owned()),
        ("AWSAccessKeyId".to_owned(), "AKIDAPP".to_owned()),
        ("policy".to_owned(), "not base64!".to_owned()),
        ("signature".to_owned(), "x".to_owned()),
    ];
    let (head, tail) = form_around(&fields, 1);
    let mut request = head;
    request.extend_from_slice(b"x");
    request.extend_from_slice(&tail);
    let (_, said) = common::send_raw(endpoint, &request).await;
    // SigV2 is off here: the credential is refused before the policy is read.
    assert!(said.contains("400") && said.contains("InvalidRequest"), "{said}");
}
