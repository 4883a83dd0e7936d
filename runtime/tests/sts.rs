//! The token exchange, end to end: a fake Kubernetes API server answering TokenReviews with
//! the real JSON (k8s-openapi types), the proxy's STS endpoint, boto3 with the web-identity
//! environment variables, and the session credentials' limits.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};

const AUDIENCE: &str = "storefront";

/// A Kubernetes API server that authenticates one token, `pod-token` (ServiceAccount
/// etl/spark, for our audience); every other token (another audience, expired, garbage) is
/// unauthenticated, as the real one answers.
async fn fake_api_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect().await.expect("body").to_bytes();
                    let answer = if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
                        let mut review: TokenReview = serde_json::from_slice(&body).expect("a TokenReview");
                        let token = review.spec.token.clone().unwrap_or_default();
                        let wanted = review.spec.audiences.clone().unwrap_or_default();
                        let status = match token.as_str() {
                            "pod-token" if wanted.iter().any(|audience| audience == AUDIENCE) => TokenReviewStatus {
                                authenticated: Some(true),
                                audiences: Some(vec![AUDIENCE.to_owned()]),
                                user: Some(UserInfo {
                                    username: Some("system:serviceaccount:etl:spark".to_owned()),
                                    uid: Some("7f0c".to_owned()),
                                    groups: Some(vec!["system:serviceaccounts".to_owned()]),
                                    extra: Some(
                                        [(
                                            "authentication.kubernetes.io/pod-name".to_owned(),
                                            vec!["spark-exec-1".to_owned()],
                                        )]
                                        .into(),
                                    ),
                                }),
                                error: None,
                            },
                            _ => TokenReviewStatus {
                                authenticated: Some(false),
                                error: Some("[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences]".to_owned()),
                                ..TokenReviewStatus::default()
                            },
                        };
                        review.status = Some(status);
                        http::Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(serde_json::to_vec(&review).expect("json"))))
                    } else {
                        http::Response::builder().status(404).body(Full::new(Bytes::new()))
                    };
                    Ok::<_, Infallible>(answer.expect("response"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

struct Setup {
    endpoint: SocketAddr,
    nodes: Vec<s3_mock::NodeHandle>,
    harness: common::Harness,
}

async fn setup() -> Setup {
    let api = fake_api_server().await;
    let auth = format!(
        r#"[auth]
mode = "policy"

[auth.sts]
audience = "{AUDIENCE}"
master_key = "a test master key of at least thirty-two bytes"
kubernetes_url = "http://{api}"

[health.active]
enabled = false

[[policy.rules]]
name = "spark-writes-its-prefix"
effect = "allow"
identity = {{ namespace = "etl", service_account = "spark" }}
actions = ["read", "write"]
buckets = ["data"]
keys = ["from-pod/*"]
"#
    );
    let harness = common::policy_harness(&auth).await;
    Setup {
        endpoint: harness.endpoint,
        nodes: harness.nodes.clone(),
        harness,
    }
}

/// POST the exchange form with `token` and extra fields; the answer's status and body.
async fn exchange(endpoint: SocketAddr, token: &str, extra: &str) -> (u16, String) {
    let body = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A000000000000%3Arole%2Fs3&RoleSessionName=test&WebIdentityToken={token}{extra}"
    );
    let request = format!(
        "POST / HTTP/1.1\r\nhost: {endpoint}\r\ncontent-type: application/x-www-form-urlencoded; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (mut stream, mut answer) = common::send_raw(endpoint, request.as_bytes()).await;
    use tokio::io::AsyncReadExt;
    let mut rest = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut rest)).await;
    answer.push_str(&rest);
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inside, _)| inside)
}

#[tokio::test]
async fn boto3_gets_session_credentials_from_the_proxy_and_writes_an_object() {
    // Proves the token exchange with an unmodified SDK: boto3, given only
    // AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN and AWS_ENDPOINT_URL_STS, obtains session
    // credentials from the proxy (its TokenReview accepted the pod token) and writes and reads
    // an object its ServiceAccount's rule allows; a write outside the rule is denied.
    let setup = setup().await;
    let directory = std::env::temp_dir().join(format!("storefront-sts-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("dir");
    let token_file = directory.join("token");
    std::fs::write(&token_file, "pod-token").expect("token");
    let script = r#"
import boto3, botocore, os
s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"], config=botocore.config.Config(s3={"addressing_style": "path"}))
s3.put_object(Bucket="data", Key="from-pod/hello.txt", Body=b"hello from a pod")
print(s3.get_object(Bucket="data", Key="from-pod/hello.txt")["Body"].read().decode())
try:
    s3.put_object(Bucket="data", Key="elsewhere/x.txt", Body=b"no")
    print("UNEXPECTED: allowed")
except botocore.exceptions.ClientError as error:
    print("denied:", error.response["Error"]["Code"])
answer = boto3.client("sts").assume_role_with_web_identity(
    RoleArn=os.environ["AWS_ROLE_ARN"], RoleSessionName="shown",
    WebIdentityToken=open(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]).read())
print("session:", answer["SubjectFromWebIdentityToken"], answer["Credentials"]["AccessKeyId"],
      "expires", answer["Credentials"]["Expiration"].isoformat())
"#;
    let url = format!("http://{}", setup.endpoint);
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &directory)
        .env("AWS_CONFIG_FILE", directory.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", directory.join("none"))
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ROLE_ARN", "arn:aws:iam::000000000000:role/storefront")
        .env("AWS_ROLE_SESSION_NAME", "spark-exec-1")
        .env("AWS_ENDPOINT_URL_STS", &url)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("S3_URL", &url)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("boto3 said:\n{stdout}");
    assert!(output.status.success(), "boto3 failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("hello from a pod"), "{stdout}\n{stderr}");
    assert!(stdout.contains("denied: AccessDenied"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("session: system:serviceaccount:etl:spark ASIA"),
        "{stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&directory);
    assert_eq!(setup.nodes.len(), 2);
}

#[tokio::test]
async fn tokens_for_another_audience_and_expired_or_forged_sessions_are_refused() {
    // Proves the exchange's defences: a token issued for another audience gets no credentials;
    // session credentials work until they expire (then ExpiredToken, as S3 answers), and a
    // session token whose claims were altered, or used with another access key, is invalid.
    let setup = setup().await;
    for token in ["vault-token", "expired-token", "not-a-token"] {
        let (status, answer) = exchange(setup.endpoint, token, "").await;
        assert_eq!(status, 403, "{token}: {answer}");
        assert!(answer.contains("InvalidIdentityToken"), "{answer}");
        assert!(!answer.contains("AccessKeyId"), "{answer}");
    }

    let (status, answer) = exchange(setup.endpoint, "pod-token", "").await;
    assert_eq!(status, 200, "{answer}");
    let access_key = between(&answer, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let secret = between(&answer, "<SecretAccessKey>", "</SecretAccessKey>").to_owned();
    let token = between(&answer, "<SessionToken>", "</SessionToken>").to_owned();
    assert!(access_key.starts_with("ASIA"), "{answer}");
    let session_client =
        |key: &str, secret: &str, token: &str| common::session_client(setup.endpoint, key, secret, Some(token));
    let s3 = session_client(&access_key, &secret, &token);
    s3.put_object()
        .bucket("data")
        .key("from-pod/a")
        .body(ByteStream::from_static(b"a"))
        .send()
        .await
        .expect("a fresh session writes");

    // Forged: claims changed (another namespace), or the token paired with another key.
    let (payload, mac) = token.split_once('.').expect("sealed token");
    let forged_payload = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = String::from_utf8(engine.decode(payload).expect("b64")).expect("json");
        engine.encode(claims.replace("\"etl\"", "\"kube-system\""))
    };
    let forged = session_client(&access_key, &secret, &format!("{forged_payload}.{mac}"));
    let error = forged
        .get_object()
        .bucket("data")
        .key("from-pod/a")
        .send()
        .await
        .expect_err("forged claims");
    assert_eq!(common::code(&error).as_deref(), Some("InvalidAccessKeyId"), "{error:?}");
    let other_key = session_client("ASIAAAAAAAAAAAAAAAAA", &secret, &token);
    let error = other_key
        .get_object()
        .bucket("data")
        .key("from-pod/a")
        .send()
        .await
        .expect_err("token with another key");
    assert_eq!(common::code(&error).as_deref(), Some("InvalidAccessKeyId"), "{error:?}");

    // A session asked for with no lifetime left is expired from the start: no waiting.
    let (status, answer) = exchange(setup.endpoint, "pod-token", "&DurationSeconds=0").await;
    assert_eq!(status, 200, "{answer}");
    let expired = session_client(
        between(&answer, "<AccessKeyId>", "</AccessKeyId>"),
        between(&answer, "<SecretAccessKey>", "</SecretAccessKey>"),
        between(&answer, "<SessionToken>", "</SessionToken>"),
    );
    let error = expired
        .get_object()
        .bucket("data")
        .key("from-pod/a")
        .send()
        .await
        .expect_err("an expired session");
    assert_eq!(common::code(&error).as_deref(), Some("ExpiredToken"), "{error:?}");
    assert_eq!(common::status_of(&error), Some(400), "as S3 answers an expired session");

    // The exchanges are counted: two sessions issued, three tokens refused.
    let admin = common::admin(&setup.harness).await;
    let (_, metrics) = common::admin_call(admin, "GET", "/metrics").await;
    let sessions = |result: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("storefront_sts_sessions_total{")
                    && line.contains(&format!("storefront_sts_result=\"{result}\""))
            })
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse::<u64>().ok())
    };
    assert_eq!(sessions("issued"), Some(2), "{metrics}");
    assert_eq!(sessions("refused"), Some(3), "{metrics}");
}
