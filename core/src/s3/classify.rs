//! Classify an HTTP request head into an [`S3Request`].
//!
//! Pure and total: any method, URI and header map gives either an `S3Request` or a
//! [`ClassifyError`], never a panic (a property test feeds it garbage). The rules follow the S3
//! REST API:
//!
//! - **Addressing.** A `Host` (or HTTP/2 `:authority`) equal to `<bucket>.<base>` for one of the
//!   configured base domains is virtual-host style: the bucket is the host's prefix and the
//!   whole path is the key. Any other host (an IP, the base domain itself, a name we do not
//!   serve) is path style: `/<bucket>/<key>`.
//! - **Keys are exact.** The path is percent-decoded once and nothing else: `//` stays (key
//!   `/a` in `/bucket//a`), `..` segments stay (S3 keys may contain them, and the backend will
//!   not normalise them either), `+` stays a plus (S3 decodes `+` as a space only in query
//!   strings). Malformed `%` escapes and keys that are not UTF-8 are errors.
//! - **Operations** come from the method, whether a key is present, the sub-resource query
//!   parameters (`?uploads`, `?uploadId=`, `?partNumber=`, `?list-type=2`, `?delete`,
//!   `?tagging`, ...) and `x-amz-copy-source`. Unknown sub-resources give `Operation::Other`,
//!   which is forwarded but never retried.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Uri};

use super::{Addressing, Body, ClassifyError, CopySource, Operation, Payload, S3Request};

/// The longest key S3 accepts, in bytes of UTF-8.
pub const KEY_LENGTH_MAX: usize = 1024;
/// The longest bucket name we accept. S3 allows 63 for new buckets; legacy buckets and other
/// S3 implementations allow up to 255, and rejecting an existing bucket would break a user.
pub const BUCKET_LENGTH_MAX: usize = 255;
/// The highest part number S3 accepts.
pub const PART_NUMBER_MAX: u32 = 10_000;

/// The default of `server.max_uri_bytes`.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;

/// What classification needs from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// Base domains for virtual-host addressing, lowercase, without port (`s3.example.com`).
    /// Empty means path style only.
    pub base_domains: Vec<String>,
    /// Longest request target (authority, path and query) in bytes (`server.max_uri_bytes`).
    pub max_uri_bytes: usize,
}

impl Default for ClassifyConfig {
    /// Path style only, the default target bound.
    fn default() -> Self {
        ClassifyConfig::with_base_domains(Vec::<String>::new())
    }
}

impl ClassifyConfig {
    /// A configuration with these base domains (lowercased).
    pub fn with_base_domains<I, S>(domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClassifyConfig {
            base_domains: domains
                .into_iter()
                .map(|domain| domain.as_ref().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
        }
    }
}

/// Classify a request head given as `http::request::Parts`.
pub fn classify(parts: &http::request::Parts, config: &ClassifyConfig) -> Result<S3Request, ClassifyError> {
    classify_head(&parts.method, &parts.uri, &parts.headers, config)
}

/// Classify a request head given as its method, URI and headers.
pub fn classify_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    config: &ClassifyConfig,
) -> Result<S3Request, ClassifyError> {
    let length = uri.authority().map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |target| target.as_str().len());
    if length > config.max_uri_bytes {
        return Err(ClassifyError::UriTooLong {
            length,
            limit: config.max_uri_bytes,
        });
    }
    let host = request_host(uri, headers)?;
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(ClassifyError::PathNotAbsolute { path: truncated(path) });
    }
    let virtual_bucket = host.as_deref().and_then(|host| virtual_host_bucket(host, config));

    let (addressing, bucket, key) = match virtual_bucket {
        Some(bucket) => {
            let key = decode_key(&path[1..])?;
            (Addressing::VirtualHost, Some(bucket), key)
        }
        None => {
            let rest = &path[1..];
            let (raw_bucket, raw_key) = match rest.find('/') {
                Some(slash) => (&rest[..slash], &rest[slash + 1..]),
                None => (rest, ""),
            };
            let bucket = if raw_bucket.is_empty() {
                if !raw_key.is_empty() {
                    // `//key` has an empty bucket segment: no S3 resource looks like this.
                    return Err(ClassifyError::InvalidBucketName {
                        bucket: String::new(),
                        reason: "empty bucket segment in path",
                    });
                }
                None
            } else {
                Some(decode_bucket(raw_bucket)?)
            };
            (Addressing::Path, bucket, decode_key(raw_key)?)
        }
    };
    if let Some(bucket) = &bucket {
        validate_bucket(bucket)?;
    }

    let query = Query::parse(uri.query().unwrap_or(""))?;
    let copy_source = match headers.get("x-amz-copy-source") {
        Some(value) => Some(parse_copy_source(value.as_bytes())?),
        None => None,
    };
    let operation = operation(
        method,
        bucket.is_some(),
        key.is_some(),
        &query,
        copy_source.is_some(),
        headers,
    );
    let part_number = match query.part_number.as_deref() {
        Some(raw) => Some(parse_part_number(raw)?),
        None => None,
    };
    let body = body_framing(headers)?;
    let payload = payload_kind(headers);
    let expect_continue = headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));

    Ok(S3Request {
        operation,
        bucket,
        key,
        addressing,
        host,
        upload_id: query.upload_id,
        part_number,
        copy_source,
        body,
        payload,
        expect_continue,
        presigned: query.presigned,
    })
}

/// The host the client addressed, lowercased and without port: the URI authority (HTTP/2,
/// absolute-form) or else the `Host` header. `None` when neither is present.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, ClassifyError> {
    let raw = match uri.authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => match headers.get(HOST) {
            Some(value) => match value.to_str() {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    return Err(ClassifyError::InvalidHost {
                        host: lossy(value.as_bytes()),
                    });
                }
            },
            None => return Ok(None),
        },
    };
    let without_userinfo = raw.rsplit('@').next().unwrap_or("");
    let host = if let Some(bracketed) = without_userinfo.strip_prefix('[') {
        // IPv6 literal: `[::1]:9000`.
        match bracketed.find(']') {
            Some(end) => &bracketed[..end],
            None => {
                return Err(ClassifyError::InvalidHost { host: truncated(&raw) });
            }
        }
    } else {
        match without_userinfo.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => {
                return Err(ClassifyError::InvalidHost { host: truncated(&raw) });
            }
            None => without_userinfo,
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(ClassifyError::InvalidHost { host: truncated(&raw) });
    }
    Ok(Some(host.to_ascii_lowercase()))
}

/// The bucket named by a virtual-host style `host`, if `host` is `<bucket>.<base>` for one of
/// the base domains. The longest matching base wins, so `s3.dc1.example.com` beats
/// `example.com`.
fn virtual_host_bucket(host: &str, config: &ClassifyConfig) -> Option<String> {
    config
        .base_domains
        .iter()
        .filter_map(|base| {
            let prefix = host.strip_suffix(base.as_str())?.strip_suffix('.')?;
            (!prefix.is_empty()).then_some((base.len(), prefix))
        })
        .max_by_key(|(base_len, _)| *base_len)
        .map(|(_, bucket)| bucket.to_owned())
}

fn decode_bucket(raw: &str) -> Result<String, ClassifyError> {
    let bytes = percent_decode_strict(raw)?;
    String::from_utf8(bytes).map_err(|_| ClassifyError::InvalidBucketName {
        bucket: lossy(raw.as_bytes()),
        reason: "not UTF-8",
    })
}

/// Decode a raw key; an empty key means "no key" (S3 has no empty keys).
fn decode_key(raw: &str) -> Result<Option<String>, ClassifyError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bytes = percent_decode_strict(raw)?;
    if bytes.len() > KEY_LENGTH_MAX {
        return Err(ClassifyError::KeyTooLong { length: bytes.len() });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ClassifyError::KeyNotUtf8)
}

/// Percent-decode, rejecting `%` not followed by two hex digits (the `percent-encoding`
/// crate passes such sequences through, which would let two spellings of one key differ).
fn percent_decode_strict(raw: &str) -> Result<Vec<u8>, ClassifyError> {
    let bytes = raw.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'%' {
            let well_formed = bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
            if !well_formed {
                return Err(ClassifyError::InvalidPercentEncoding { offset: index });
            }
        }
    }
    Ok(percent_encoding::percent_decode(bytes).collect())
}

fn validate_bucket(bucket: &str) -> Result<(), ClassifyError> {
    let reason = if bucket.len() > BUCKET_LENGTH_MAX {
        Some("longer than 255 bytes")
    } else if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        Some("only letters, digits, '.', '-' and '_' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ClassifyError::InvalidBucketName {
            bucket: truncated(bucket),
            reason,
        }),
        None => Ok(()),
    }
}

/// The query parameters that decide the operation; everything else is ignored.
#[derive(Debug, Default)]
struct Query {
    uploads: bool,
    upload_id: Option<String>,
    part_number: Option<String>,
    list_type_2: bool,
    delete: bool,
    tagging: bool,
    policy: bool,
    location: bool,
    versions: bool,
    /// A sub-resource we do not model (`acl`, `lifecycle`, `restore`, ...).
    other_subresource: bool,
    /// `X-Amz-Signature` or `X-Amz-Credential`: a presigned URL.
    presigned: bool,
}

/// Sub-resources that change which operation a request is, apart from the ones `Query` models.
/// Taken from the S3 signing sub-resource list and the S3 API reference.
const OTHER_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policyStatus",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "torrent",
    "versioning",
    "website",
];

impl Query {
    fn parse(raw: &str) -> Result<Query, ClassifyError> {
        let mut query = Query::default();
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_query_component(raw_name)?;
            let value = || decode_query_component(raw_value);
            match name.as_str() {
                "uploads" => query.uploads = true,
                "uploadId" => query.upload_id = Some(value()?),
                "partNumber" => query.part_number = Some(value()?),
                "list-type" => query.list_type_2 = value()? == "2",
                "delete" => query.delete = true,
                "tagging" => query.tagging = true,
                "policy" => query.policy = true,
                "location" => query.location = true,
                "versions" => query.versions = true,
                // SigV4's presigned parameters, or SigV2's.
                "X-Amz-Signature" | "X-Amz-Credential" | "AWSAccessKeyId" | "Signature" => query.presigned = true,
                other if OTHER_SUBRESOURCES.contains(&other) => query.other_subresource = true,
                _ => {}
            }
        }
        Ok(query)
    }

    /// True when any sub-resource is present (the plain object or bucket operation is meant
    /// only when none is).
    fn any_subresource(&self) -> bool {
        self.uploads
            || self.upload_id.is_some()
            || self.part_number.is_some()
            || self.delete
            || self.tagging
            || self.policy
            || self.location
            || self.versions
            || self.other_subresource
    }
}

/// Form-decode a query component: `%XX` escapes and `+` as space, strictly.
fn decode_query_component(raw: &str) -> Result<String, ClassifyError> {
    let spaced = raw.replace('+', " ");
    let bytes = percent_decode_strict(&spaced)?;
    String::from_utf8(bytes).map_err(|_| ClassifyError::QueryNotUtf8)
}

fn operation(
    method: &Method,
    has_bucket: bool,
    has_key: bool,
    query: &Query,
    copy_source: bool,
    headers: &HeaderMap,
) -> Operation {
    let plain = !query.any_subresource();
    let multipart_ids = query.part_number.is_some() && query.upload_id.is_some();
    match (method.as_str(), has_bucket, has_key) {
        ("GET", false, _) if plain => Operation::ListBuckets,
        (_, false, _) => Operation::Other,

        ("GET", true, false) => {
            if plain {
                if query.list_type_2 {
                    Operation::ListObjectsV2
                } else {
                    Operation::ListObjects
                }
            } else if only(query, |q| q.location) {
                Operation::GetBucketLocation
            } else if only(query, |q| q.policy) {
                Operation::GetBucketPolicy
            } else if only(query, |q| q.uploads) {
                Operation::ListMultipartUploads
            } else if only(query, |q| q.versions) {
                Operation::ListObjectVersions
            } else {
                Operation::Other
            }
        }
        ("HEAD", true, false) if plain => Operation::HeadBucket,
        ("PUT", true, false) if plain => Operation::CreateBucket,
        ("PUT", true, false) if only(query, |q| q.policy) => Operation::PutBucketPolicy,
        ("DELETE", true, false) if plain => Operation::DeleteBucket,
        ("DELETE", true, false) if only(query, |q| q.policy) => Operation::DeleteBucketPolicy,
        ("POST", true, false) if only(query, |q| q.delete) => Operation::DeleteObjects,
        ("POST", true, false) if plain && is_form_upload(headers) => Operation::PostObject,

        ("GET", true, true) if plain => Operation::GetObject,
        // `?partNumber=N` alone on GET/HEAD reads one part of a multipart object.
        ("GET", true, true) if only(query, |q| q.part_number.is_some()) => Operation::GetObject,
        ("GET", true, true) if only(query, |q| q.upload_id.is_some()) => Operation::ListParts,
        ("GET", true, true) if only(query, |q| q.tagging) => Operation::GetObjectTagging,
        ("HEAD", true, true) if plain || only(query, |q| q.part_number.is_some()) => Operation::HeadObject,
        ("PUT", true, true) if plain && copy_source => Operation::CopyObject,
        ("PUT", true, true) if plain => Operation::PutObject,
        ("PUT", true, true) if multipart_ids && only_multipart(query) => {
            if copy_source {
                Operation::UploadPartCopy
            } else {
                Operation::UploadPart
            }
        }
        ("PUT", true, true) if only(query, |q| q.tagging) => Operation::PutObjectTagging,
        ("DELETE", true, true) if plain => Operation::DeleteObject,
        ("DELETE", true, true) if only(query, |q| q.upload_id.is_some()) => Operation::AbortMultipartUpload,
        ("DELETE", true, true) if only(query, |q| q.tagging) => Operation::DeleteObjectTagging,
        ("POST", true, true) if only(query, |q| q.uploads) => Operation::CreateMultipartUpload,
        ("POST", true, true) if only(query, |q| q.upload_id.is_some()) => Operation::CompleteMultipartUpload,
        _ => Operation::Other,
    }
}

/// True when the sub-resource that `pick` selects is the only one present.
fn only(query: &Query, pick: impl Fn(&Query) -> bool) -> bool {
    if !pick(query) {
        return false;
    }
    let mut count = 0;
    for present in [
        query.uploads,
        query.upload_id.is_some(),
        query.part_number.is_some(),
        query.delete,
        query.tagging,
        query.policy,
        query.location,
        query.versions,
        query.other_subresource,
    ] {
        count += usize::from(present);
    }
    count == 1
}

/// True when the sub-resources are exactly `partNumber` and `uploadId`.
fn only_multipart(query: &Query) -> bool {
    !(query.uploads
        || query.delete
        || query.tagging
        || query.policy
        || query.location
        || query.versions
        || query.other_subresource)
}

fn is_form_upload(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        value.to_str().is_ok_and(|text| {
            text.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
    })
}

fn parse_part_number(raw: &str) -> Result<u32, ClassifyError> {
    match raw.parse::<u32>() {
        Ok(number) if (1..=PART_NUMBER_MAX).contains(&number) => Ok(number),
        _ => Err(ClassifyError::InvalidPartNumber { value: truncated(raw) }),
    }
}

/// Parse `x-amz-copy-source`: `[/]bucket/key[?versionId=...]`, URL-encoded.
fn parse_copy_source(raw: &[u8]) -> Result<CopySource, ClassifyError> {
    let invalid = || ClassifyError::InvalidCopySource { value: lossy(raw) };
    let text = std::str::from_utf8(raw).map_err(|_| invalid())?;
    let text = text.strip_prefix('/').unwrap_or(text);
    let (path, version) = match text.split_once('?') {
        Some((path, query)) => {
            let version = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("versionId="))
                .map(decode_query_component)
                .transpose()?;
            (path, version)
        }
        None => (text, None),
    };
    let (raw_bucket, raw_key) = path.split_once('/').ok_or_else(invalid)?;
    let bucket = decode_bucket(raw_bucket)?;
    validate_bucket(&bucket)?;
    let key = decode_key(raw_key)?.ok_or_else(invalid)?;
    Ok(CopySource {
        bucket,
        key,
        version_id: version,
    })
}

fn body_framing(headers: &HeaderMap) -> Result<Body, ClassifyError> {
    let chunked = match headers.get(TRANSFER_ENCODING) {
        Some(value) => {
            let text = value.to_str().map_err(|_| ClassifyError::InvalidTransferEncoding)?;
            // Only `chunked` (last) is a framing the proxy can forward; HTTP forbids others
            // without it, and anything else would need a decoder we do not run.
            let last = text.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(ClassifyError::InvalidTransferEncoding);
            }
            true
        }
        None => false,
    };
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = match lengths.next() {
        Some(first) => {
            let parse = |value: &http::HeaderValue| {
                value
                    .to_str()
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| ClassifyError::InvalidContentLength {
                        value: lossy(value.as_bytes()),
                    })
            };
            let length = parse(first)?;
            for other in lengths {
                if parse(other)? != length {
                    return Err(ClassifyError::InvalidContentLength {
                        value: lossy(other.as_bytes()),
                    });
                }
            }
            Some(length)
        }
        None => None,
    };
    match (chunked, length) {
        (true, Some(_)) => Err(ClassifyError::ConflictingFraming),
        (true, None) => Ok(Body::Chunked),
        (false, Some(0)) | (false, None) => Ok(Body::Empty),
        (false, Some(length)) => Ok(Body::Length(length)),
    }
}

fn payload_kind(headers: &HeaderMap) -> Payload {
    let Some(value) = headers.get("x-amz-content-sha256") else {
        return Payload::Absent;
    };
    match value.as_bytes() {
        b"UNSIGNED-PAYLOAD" => Payload::Unsigned,
        b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::StreamingUnsigned { trailer: true },
        b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Payload::StreamingSigned { trailer: false },
        b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Payload::StreamingSigned { trailer: true },
        hash if hash.len() == 64 && hash.iter().all(u8::is_ascii_hexdigit) => Payload::Sha256,
        _ => Payload::Other,
    }
}

/// At most 256 bytes of `text`, for error messages that echo user input.
fn truncated(text: &str) -> String {
    const ECHO_LENGTH_MAX: usize = 256;
    if text.len() <= ECHO_LENGTH_MAX {
        return text.to_owned();
    }
    let mut end = ECHO_LENGTH_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn lossy(bytes: &[u8]) -> String {
    truncated(&String::from_utf8_lossy(bytes))
}
