//! Storefront's S3 conformance suite, run like rustls runs BoGo: every operation, request form
//! and error case a real fleet sends, with aws-sdk-s3 (and raw HTTP for what SDKs do not send:
//! browser forms, presigned URLs fetched as a browser would), against any S3 endpoint.
//!
//! A [`Target`] is one S3 service: one or more endpoints over one namespace (a cluster's node
//! VIPs, or a proxy) and a key pair. [`run`] runs every [`case`](cases) in order, each in its
//! own bucket (created and removed by the case), and reports each case's result; cases that
//! talk to several endpoints write through one and read through another. Nothing here knows
//! Storefront: the CLI (`cargo run -p conformance -- --endpoint URL ...`) runs the suite
//! against any endpoint, and the tests run it against s3-mock, through the proxy, and against
//! s3s-fs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, retry::RetryConfig};
use aws_smithy_http_client::tls;

pub mod cases;
pub mod http;

/// One S3 service to test.
#[derive(Clone, Debug)]
pub struct Target {
    /// A name for reports.
    pub name: String,
    /// Base URLs (`http://host:port`) of one namespace; cases rotate over them.
    pub endpoints: Vec<String>,
    /// The access key the suite signs with.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// The region it signs for.
    pub region: String,
    /// Prefix of the buckets the cases create (`<prefix>-<case number>`).
    pub bucket_prefix: String,
    /// Whether SigV2 is expected to be accepted (its cases are skipped otherwise).
    pub sigv2: bool,
}

impl Target {
    /// A target at `endpoints` signing with `access_key`/`secret_key` in `us-east-1`.
    pub fn new(name: &str, endpoints: Vec<String>, access_key: &str, secret_key: &str) -> Target {
        Target {
            name: name.to_owned(),
            endpoints,
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: "us-east-1".to_owned(),
            bucket_prefix: "conformance".to_owned(),
            sigv2: false,
        }
    }
}

/// What a case gets: clients of the target's endpoints and its own bucket's name.
pub struct Ctx {
    target: Target,
    clients: Vec<aws_sdk_s3::Client>,
    bucket: String,
}

/// An aws-sdk-s3 client for `endpoint` (path style, no SDK retries: a case sees each answer).
pub fn client(endpoint: &str, access_key: &str, secret_key: &str, region: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(http)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "conformance"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl Ctx {
    /// The client of endpoint `index` (modulo the number of endpoints).
    pub fn s3(&self, index: usize) -> &aws_sdk_s3::Client {
        &self.clients[index % self.clients.len()]
    }

    /// The case's bucket (not created yet).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A second bucket name of the case's own.
    pub fn other_bucket(&self) -> String {
        format!("{}-b", self.bucket)
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Endpoint `index` (modulo the number of endpoints).
    pub fn endpoint(&self, index: usize) -> &str {
        &self.target.endpoints[index % self.target.endpoints.len()]
    }

    /// A client of endpoint 0 with other credentials.
    pub fn client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        client(self.endpoint(0), access_key, secret_key, &self.target.region)
    }

    /// Create the case's bucket.
    pub async fn create_bucket(&self) -> Outcome {
        self.s3(0)
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|error| format!("CreateBucket {}: {}", self.bucket, describe(&error)))?;
        Ok(())
    }

    /// Put `data` at `key` in the case's bucket through endpoint 0.
    pub async fn put(&self, key: &str, data: &[u8]) -> Outcome {
        self.s3(0)
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.to_vec()))
            .send()
            .await
            .map_err(|error| format!("PutObject {key}: {}", describe(&error)))?;
        Ok(())
    }

    /// The object at `key` in the case's bucket, read through endpoint `index`.
    pub async fn get(&self, index: usize, key: &str) -> Result<bytes::Bytes, String> {
        let object = self
            .s3(index)
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| format!("GetObject {key}: {}", describe(&error)))?;
        object
            .body
            .collect()
            .await
            .map(|body| body.into_bytes())
            .map_err(|error| format!("GetObject {key} body: {error}"))
    }

    /// Remove `bucket` and everything in it, best effort (a case's cleanup).
    pub async fn remove_bucket(&self, bucket: &str) {
        let s3 = self.s3(0);
        if let Ok(uploads) = s3.list_multipart_uploads().bucket(bucket).send().await {
            for upload in uploads.uploads() {
                let _ = s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(upload.key().unwrap_or_default())
                    .upload_id(upload.upload_id().unwrap_or_default())
                    .send()
                    .await;
            }
        }
        let mut token = None;
        loop {
            let Ok(page) = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.clone())
                .send()
                .await
            else {
                break;
            };
            for object in page.contents() {
                let _ = s3
                    .delete_object()
                    .bucket(bucket)
                    .key(object.key().unwrap_or_default())
                    .send()
                    .await;
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let _ = s3.delete_bucket().bucket(bucket).send().await;
    }
}

/// A case's result: `Err` says what did not hold.
pub type Outcome = Result<(), String>;

/// A case's body.
pub type CaseFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name (`area/what`).
    pub name: &'static str,
    /// What it runs.
    pub run: CaseFn,
    /// Whether it needs SigV2 accepted.
    pub sigv2: bool,
}

/// The result of one case on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// Passed, failed (why), or skipped (why).
    pub verdict: Verdict,
}

/// A case's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It held.
    Passed,
    /// What did not hold.
    Failed(String),
    /// Not run on this target.
    Skipped(&'static str),
}

/// Every case's result on one target.
#[derive(Clone, Debug)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Results in suite order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Names of the cases that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|result| result.verdict == Verdict::Passed)
            .map(|result| result.name)
            .collect()
    }

    /// Cases that failed, with why.
    pub fn failed(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|result| match &result.verdict {
                Verdict::Failed(why) => Some((result.name, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The report as a table: one line per case, then the counts.
    pub fn table(&self) -> String {
        let mut out = format!("conformance against {}\n", self.target);
        for result in &self.results {
            let (mark, why) = match &result.verdict {
                Verdict::Passed => ("pass", String::new()),
                Verdict::Failed(why) => ("FAIL", format!("  {why}")),
                Verdict::Skipped(why) => ("skip", format!("  {why}")),
            };
            out.push_str(&format!("  {mark}  {}{why}\n", result.name));
        }
        let skipped = self
            .results
            .iter()
            .filter(|result| matches!(result.verdict, Verdict::Skipped(_)))
            .count();
        out.push_str(&format!(
            "  {} passed, {} failed, {skipped} skipped of {}\n",
            self.passed().len(),
            self.failed().len(),
            self.results.len()
        ));
        out
    }
}

/// Run the cases whose names contain `filter` (all for `""`) against `target`, in order.
/// Each case gets its own bucket, removed after it whatever its verdict; a case that runs
/// longer than two minutes fails.
pub async fn run(target: &Target, filter: &str) -> Report {
    let clients = target
        .endpoints
        .iter()
        .map(|endpoint| client(endpoint, &target.access_key, &target.secret_key, &target.region))
        .collect::<Vec<_>>();
    let mut results = Vec::new();
    for (index, case) in cases::all().into_iter().enumerate() {
        if !case.name.contains(filter) {
            continue;
        }
        if case.sigv2 && !target.sigv2 {
            results.push(CaseResult {
                name: case.name,
                verdict: Verdict::Skipped("SigV2 is not expected on this target"),
            });
            continue;
        }
        let ctx = Ctx {
            target: target.clone(),
            clients: clients.clone(),
            bucket: format!("{}-{index:02}", target.bucket_prefix),
        };
        let verdict = match tokio::time::timeout(Duration::from_secs(120), (case.run)(&ctx)).await {
            Ok(Ok(())) => Verdict::Passed,
            Ok(Err(why)) => Verdict::Failed(why),
            Err(_) => Verdict::Failed("timed out after 120 s".to_owned()),
        };
        ctx.remove_bucket(&ctx.bucket).await;
        ctx.remove_bucket(&ctx.other_bucket()).await;
        results.push(CaseResult {
            name: case.name,
            verdict,
        });
    }
    Report {
        target: target.name.clone(),
        results,
    }
}

/// An SDK error with its code, status and message, for a case's failure.
pub fn describe<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{} ({})",
            service.code().unwrap_or("no code"),
            service.message().unwrap_or("no message")
        ),
        None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(error)),
    }
}

/// The S3 error code of an SDK error, if it carries one.
pub fn code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|error| error.code())
        .map(str::to_owned)
}

/// The HTTP status of an SDK error that got a response.
pub fn status<E>(error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}

/// Hex MD5 (S3's ETag of a single-part object).
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// Fail with `message` unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// Fail unless `left == right`, saying what each was.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($what:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err(format!("{}: got {:?}, expected {:?}", format!($($what)+), left, right));
                }
            }
        }
    };
}

/// Expect an SDK call to fail with S3 error `code` (and, given, HTTP `status`).
#[macro_export]
macro_rules! ensure_code {
    ($result:expr, $code:expr, $what:expr) => {
        match $result {
            Ok(_) => return Err(format!("{}: succeeded, expected {}", $what, $code)),
            Err(error) => {
                let got = $crate::code(&error);
                if got.as_deref() != Some($code) {
                    return Err(format!(
                        "{}: got {}, expected {}",
                        $what,
                        $crate::describe(&error),
                        $code
                    ));
                }
            }
        }
    };
}
