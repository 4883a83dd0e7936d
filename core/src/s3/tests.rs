//! Classification over real-world request shapes, and totality over garbage.

use http::{HeaderMap, HeaderValue, Method, Uri};
use proptest::prelude::*;

use super::*;

fn config() -> ClassifyConfig {
    ClassifyConfig::with_base_domains(["s3.example.com", "s3.dc1.example.com", "localhost"])
}

fn head(method: &str, uri: &str, host: &str, extra: &[(&str, &str)]) -> Result<S3Request, ClassifyError> {
    let mut headers = HeaderMap::new();
    if !host.is_empty() {
        headers.insert(
            "host",
            HeaderValue::from_str(host).expect("test host is a valid header"),
        );
    }
    for (name, value) in extra {
        headers.append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("test method");
    let uri: Uri = uri.parse().expect("test uri");
    classify_head(&method, &uri, &headers, &config())
}

/// A classification case: method, uri, host, extra headers → operation, bucket, key, addressing.
#[rustfmt::skip]
type Case = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)], Operation, Option<&'static str>, Option<&'static str>, Addressing);

/// A rejection case: method, uri, host, extra headers → a predicate over the error.
#[rustfmt::skip]
type BadCase<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], fn(&ClassifyError) -> bool);

#[test]
#[rustfmt::skip]
fn classification_table() {
    // Proves operation, bucket, key and addressing for the request shapes real SDKs send.
    use Addressing::{Path, VirtualHost};
    use Operation::*;
    let cases: &[Case] = &[
        ("GET", "/", "127.0.0.1:9000", &[], ListBuckets, None, None, Path),
        ("PUT", "/bkt", "127.0.0.1:9000", &[], CreateBucket, Some("bkt"), None, Path),
        ("PUT", "/bkt/", "127.0.0.1:9000", &[], CreateBucket, Some("bkt"), None, Path),
        ("DELETE", "/bkt", "h", &[], DeleteBucket, Some("bkt"), None, Path),
        ("HEAD", "/bkt", "h", &[], HeadBucket, Some("bkt"), None, Path),
        ("GET", "/bkt?location", "h", &[], GetBucketLocation, Some("bkt"), None, Path),
        ("GET", "/bkt?location=", "h", &[], GetBucketLocation, Some("bkt"), None, Path),
        ("GET", "/bkt", "h", &[], ListObjects, Some("bkt"), None, Path),
        ("GET", "/bkt?prefix=a%2Fb&delimiter=%2F&marker=x", "h", &[], ListObjects, Some("bkt"), None, Path),
        ("GET", "/bkt?list-type=2&prefix=logs%2F&continuation-token=abc%3D%3D", "h", &[], ListObjectsV2, Some("bkt"), None, Path),
        ("GET", "/bkt?list-type=2&x-id=ListObjectsV2", "h", &[], ListObjectsV2, Some("bkt"), None, Path),
        ("GET", "/bkt?versions", "h", &[], ListObjectVersions, Some("bkt"), None, Path),
        ("GET", "/bkt?uploads", "h", &[], ListMultipartUploads, Some("bkt"), None, Path),
        ("GET", "/bkt?uploads=", "h", &[], ListMultipartUploads, Some("bkt"), None, Path),
        ("GET", "/bkt?policy", "h", &[], GetBucketPolicy, Some("bkt"), None, Path),
        ("PUT", "/bkt?policy", "h", &[], PutBucketPolicy, Some("bkt"), None, Path),
        ("DELETE", "/bkt?policy", "h", &[], DeleteBucketPolicy, Some("bkt"), None, Path),
        ("POST", "/bkt?delete", "h", &[], DeleteObjects, Some("bkt"), None, Path),
        ("POST", "/bkt?delete=", "h", &[], DeleteObjects, Some("bkt"), None, Path),
        ("POST", "/bkt", "h", &[("content-type", "multipart/form-data; boundary=x")], PostObject, Some("bkt"), None, Path),
        ("POST", "/bkt", "h", &[], Other, Some("bkt"), None, Path),
        ("GET", "/bkt?acl", "h", &[], Other, Some("bkt"), None, Path),
        ("PUT", "/bkt?versioning", "h", &[], Other, Some("bkt"), None, Path),
        ("GET", "/bkt/key", "h", &[], GetObject, Some("bkt"), Some("key"), Path),
        ("GET", "/bkt/key?partNumber=2", "h", &[], GetObject, Some("bkt"), Some("key"), Path),
        ("GET", "/bkt/key?response-content-type=text%2Fplain&versionId=3", "h", &[], GetObject, Some("bkt"), Some("key"), Path),
        ("GET", "/bkt/a/b/c.txt", "h", &[], GetObject, Some("bkt"), Some("a/b/c.txt"), Path),
        ("GET", "/bkt/a%20b", "h", &[], GetObject, Some("bkt"), Some("a b"), Path),
        ("GET", "/bkt/a+b", "h", &[], GetObject, Some("bkt"), Some("a+b"), Path),
        ("GET", "/bkt/a%2Bb", "h", &[], GetObject, Some("bkt"), Some("a+b"), Path),
        ("GET", "/bkt/dir%2Ffile", "h", &[], GetObject, Some("bkt"), Some("dir/file"), Path),
        ("GET", "/bkt//double", "h", &[], GetObject, Some("bkt"), Some("/double"), Path),
        ("GET", "/bkt/a//b/", "h", &[], GetObject, Some("bkt"), Some("a//b/"), Path),
        ("GET", "/bkt/logs/../secret", "h", &[], GetObject, Some("bkt"), Some("logs/../secret"), Path),
        ("GET", "/bkt/logs%2F..%2Fsecret", "h", &[], GetObject, Some("bkt"), Some("logs/../secret"), Path),
        ("GET", "/bkt/%E6%97%A5%E6%9C%AC%E8%AA%9E.txt", "h", &[], GetObject, Some("bkt"), Some("日本語.txt"), Path),
        ("GET", "/bkt/caf%C3%A9", "h", &[], GetObject, Some("bkt"), Some("café"), Path),
        ("GET", "/bkt/100%25", "h", &[], GetObject, Some("bkt"), Some("100%"), Path),
        ("GET", "/bkt/key?tagging", "h", &[], GetObjectTagging, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key?tagging", "h", &[], PutObjectTagging, Some("bkt"), Some("key"), Path),
        ("DELETE", "/bkt/key?tagging", "h", &[], DeleteObjectTagging, Some("bkt"), Some("key"), Path),
        ("GET", "/bkt/key?acl", "h", &[], Other, Some("bkt"), Some("key"), Path),
        ("POST", "/bkt/key?restore", "h", &[], Other, Some("bkt"), Some("key"), Path),
        ("HEAD", "/bkt/key", "h", &[], HeadObject, Some("bkt"), Some("key"), Path),
        ("HEAD", "/bkt/key?partNumber=1", "h", &[], HeadObject, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key", "h", &[("content-length", "5")], PutObject, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key?x-id=PutObject", "h", &[], PutObject, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key", "h", &[("x-amz-copy-source", "/src/a%20b")], CopyObject, Some("bkt"), Some("key"), Path),
        ("DELETE", "/bkt/key", "h", &[], DeleteObject, Some("bkt"), Some("key"), Path),
        ("DELETE", "/bkt/key?versionId=v1", "h", &[], DeleteObject, Some("bkt"), Some("key"), Path),
        ("POST", "/bkt/key?uploads", "h", &[], CreateMultipartUpload, Some("bkt"), Some("key"), Path),
        ("POST", "/bkt/key?uploads=", "h", &[], CreateMultipartUpload, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key?partNumber=2&uploadId=x", "h", &[], UploadPart, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key?uploadId=x&partNumber=2", "h", &[], UploadPart, Some("bkt"), Some("key"), Path),
        ("PUT", "/bkt/key?partNumber=2&uploadId=x", "h", &[("x-amz-copy-source", "src/k")], UploadPartCopy, Some("bkt"), Some("key"), Path),
        ("POST", "/bkt/key?uploadId=x", "h", &[], CompleteMultipartUpload, Some("bkt"), Some("key"), Path),
        ("DELETE", "/bkt/key?uploadId=x", "h", &[], AbortMultipartUpload, Some("bkt"), Some("key"), Path),
        ("GET", "/bkt/key?uploadId=x&max-parts=10", "h", &[], ListParts, Some("bkt"), Some("key"), Path),
        ("PATCH", "/bkt/key", "h", &[], Other, Some("bkt"), Some("key"), Path),
        ("OPTIONS", "/bkt/key", "h", &[], Other, Some("bkt"), Some("key"), Path),
        ("PUT", "/", "h", &[], Other, None, None, Path),
        // Virtual-host style, with and without port, upper-case host, dotted bucket names.
        ("GET", "/", "bkt.s3.example.com", &[], ListObjects, Some("bkt"), None, VirtualHost),
        ("GET", "/?list-type=2", "bkt.s3.example.com:9000", &[], ListObjectsV2, Some("bkt"), None, VirtualHost),
        ("GET", "/key", "BKT.S3.Example.COM", &[], GetObject, Some("bkt"), Some("key"), VirtualHost),
        ("GET", "/a/b", "my.bucket.s3.example.com", &[], GetObject, Some("my.bucket"), Some("a/b"), VirtualHost),
        ("GET", "//x", "bkt.s3.example.com", &[], GetObject, Some("bkt"), Some("/x"), VirtualHost),
        ("GET", "/k", "bkt.s3.dc1.example.com", &[], GetObject, Some("bkt"), Some("k"), VirtualHost),
        ("PUT", "/", "bkt.localhost:9000", &[], CreateBucket, Some("bkt"), None, VirtualHost),
        ("POST", "/key?uploads", "bkt.s3.example.com", &[], CreateMultipartUpload, Some("bkt"), Some("key"), VirtualHost),
        // The base domain itself, an IP, and an unknown host are path style.
        ("GET", "/bkt/k", "s3.example.com", &[], GetObject, Some("bkt"), Some("k"), Path),
        ("GET", "/bkt/k", "s3.example.com:443", &[], GetObject, Some("bkt"), Some("k"), Path),
        ("GET", "/bkt/k", "[::1]:9000", &[], GetObject, Some("bkt"), Some("k"), Path),
        ("GET", "/bkt/k", "other.example.org", &[], GetObject, Some("bkt"), Some("k"), Path),
        ("GET", "/bkt/k", "", &[], GetObject, Some("bkt"), Some("k"), Path),
    ];
    for (method, uri, host, extra, operation, bucket, key, addressing) in cases {
        let request = head(method, uri, host, extra)
            .unwrap_or_else(|error| panic!("{method} {uri} (host {host}): {error}"));
        assert_eq!(request.operation, *operation, "{method} {uri} host {host}");
        assert_eq!(
            request.bucket.as_deref(),
            *bucket,
            "{method} {uri} host {host}"
        );
        assert_eq!(request.key.as_deref(), *key, "{method} {uri} host {host}");
        assert_eq!(
            request.addressing, *addressing,
            "{method} {uri} host {host}"
        );
    }
}

#[test]
fn multipart_and_copy_details_are_parsed() {
    // Proves that upload ids, part numbers, copy sources and body framing are extracted exactly.
    let request = head(
        "PUT",
        "/bkt/key?partNumber=7&uploadId=abc%2Bdef",
        "h",
        &[
            ("x-amz-copy-source", "/src-bucket/dir%2Fa%20b?versionId=v%3D1"),
            ("content-length", "0"),
        ],
    )
    .expect("valid request");
    assert_eq!(request.operation, Operation::UploadPartCopy);
    assert_eq!(request.part_number, Some(7));
    assert_eq!(request.upload_id.as_deref(), Some("abc+def"));
    let source = request.copy_source.expect("copy source parsed");
    assert_eq!(source.bucket, "src-bucket");
    assert_eq!(source.key, "dir/a b");
    assert_eq!(source.version_id.as_deref(), Some("v=1"));
    assert_eq!(request.body, Body::Empty);

    let upload = head(
        "PUT",
        "/bkt/key",
        "h",
        &[
            ("transfer-encoding", "chunked"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
            ("expect", "100-Continue"),
        ],
    )
    .expect("valid request");
    assert_eq!(upload.body, Body::Chunked);
    assert_eq!(upload.payload, Payload::StreamingSigned { trailer: true });
    assert!(upload.expect_continue);

    let presigned = head(
        "GET",
        "/bkt/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab",
        "h",
        &[],
    )
    .expect("valid request");
    assert!(presigned.presigned);
    assert_eq!(presigned.operation, Operation::GetObject);
}

#[test]
#[rustfmt::skip]
fn malformed_requests_give_typed_errors() {
    // Proves each malformed input is rejected with its own error, never a wrong classification.
    let long_key = format!("/bkt/{}", "k".repeat(KEY_LENGTH_MAX + 1));
    let cases: &[BadCase] = &[
        ("GET", "/bkt/a%zz", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidPercentEncoding { .. })
        }),
        ("GET", "/bkt/a%4", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidPercentEncoding { .. })
        }),
        ("GET", "/bkt/%FF%FE", "h", &[], |e| {
            matches!(e, ClassifyError::KeyNotUtf8)
        }),
        ("GET", &long_key, "h", &[], |e| {
            matches!(e, ClassifyError::KeyTooLong { length: 1025 })
        }),
        ("GET", "//key", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidBucketName { .. })
        }),
        ("GET", "/b%2Fx/key", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidBucketName { .. })
        }),
        ("PUT", "/bkt/k?partNumber=0&uploadId=x", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidPartNumber { .. })
        }),
        ("PUT", "/bkt/k?partNumber=10001&uploadId=x", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidPartNumber { .. })
        }),
        ("PUT", "/bkt/k?partNumber=-1&uploadId=x", "h", &[], |e| {
            matches!(e, ClassifyError::InvalidPartNumber { .. })
        }),
        ("PUT", "/bkt/k", "h", &[("x-amz-copy-source", "nokey")], |e| matches!(e, ClassifyError::InvalidCopySource { .. })),
        ("PUT", "/bkt/k", "h", &[("content-length", "5"), ("transfer-encoding", "chunked")], |e| matches!(e, ClassifyError::ConflictingFraming)),
        ("PUT", "/bkt/k", "h", &[("content-length", "5"), ("content-length", "6")], |e| matches!(e, ClassifyError::InvalidContentLength { .. })),
        ("PUT", "/bkt/k", "h", &[("content-length", "+5")], |e| {
            matches!(e, ClassifyError::InvalidContentLength { .. })
        }),
        ("PUT", "/bkt/k", "h", &[("transfer-encoding", "gzip")], |e| matches!(e, ClassifyError::InvalidTransferEncoding)),
        ("GET", "/bkt/k", "bad host!", &[], |e| {
            matches!(e, ClassifyError::InvalidHost { .. })
        }),
        ("GET", "/bkt/k", "h:port", &[], |e| {
            matches!(e, ClassifyError::InvalidHost { .. })
        }),
        ("GET", "/bkt/k", "[::1", &[], |e| {
            matches!(e, ClassifyError::InvalidHost { .. })
        }),
    ];
    for (method, uri, host, extra, expected) in cases {
        match head(method, uri, host, extra) {
            Ok(request) => panic!("{method} {uri}: accepted as {request:?}"),
            Err(error) => assert!(
                expected(&error),
                "{method} {uri}: unexpected error {error:?}"
            ),
        }
    }
    // Errors map to S3 codes that SDKs do not retry.
    let error = head("GET", "/bkt/a%zz", "h", &[]).expect_err("malformed");
    assert_eq!(error.to_response().code, ErrorCode::InvalidUri);
    assert_eq!(error.to_response().status(), 400);
}

#[test]
fn absolute_form_and_http2_authority_win_over_host_header() {
    // Proves that the URI authority (HTTP/2 :authority) decides virtual-host addressing.
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("other.bucket.s3.example.com"));
    let uri: Uri = "http://bkt.s3.example.com/key".parse().expect("uri");
    let request = classify_head(&Method::GET, &uri, &headers, &config()).expect("valid");
    assert_eq!(request.bucket.as_deref(), Some("bkt"));
    assert_eq!(request.addressing, Addressing::VirtualHost);
}

#[test]
fn dot_segments_are_flagged() {
    // Proves the flag that policy uses to refuse keys a normalising backend would rewrite.
    for (uri, flagged) in [
        ("/b/logs/../secret", true),
        ("/b/./a", true),
        ("/b/a..b", false),
        ("/b/a/..", true),
    ] {
        let request = head("GET", uri, "h", &[]).expect("valid");
        assert_eq!(request.key_has_dot_segments(), flagged, "{uri}");
    }
}

fn any_header_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'%'), Just(b'/'), Just(b':'), Just(b'['), any::<u8>()],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Garbage in gives a value or a typed error, never a panic.
    #[test]
    fn classification_is_total(
        method in "[A-Z]{1,8}",
        path in "/[a-zA-Z0-9%/.+?&=_~ -]{0,60}",
        host in any_header_value(),
        copy_source in prop::option::of(any_header_value()),
        length in prop::option::of(any_header_value()),
        chunked in any::<bool>(),
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&host) {
            headers.insert("host", value);
        }
        if let Some(Ok(value)) = copy_source.map(|bytes| HeaderValue::from_bytes(&bytes)) {
            headers.insert("x-amz-copy-source", value);
        }
        if let Some(Ok(value)) = length.map(|bytes| HeaderValue::from_bytes(&bytes)) {
            headers.insert("content-length", value);
        }
        if chunked {
            headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        }
        let method = Method::from_bytes(method.as_bytes()).expect("uppercase letters form a method");
        if let Ok(uri) = path.replace(' ', "%20").parse::<Uri>()
            && let Ok(request) = classify_head(&method, &uri, &headers, &config()) {
                // A classified key is never empty and never longer than S3 allows.
                if let Some(key) = &request.key {
                    prop_assert!(!key.is_empty() && key.len() <= KEY_LENGTH_MAX);
                }
                prop_assert!(!(request.key.is_some() && request.bucket.is_none()));
            }
    }

    /// Any key that a client percent-encodes component by component comes back exactly.
    #[test]
    fn encoded_keys_round_trip(key in "[^\u{0}]{1,80}") {
        prop_assume!(key.len() <= KEY_LENGTH_MAX);
        let encoded = percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC).to_string();
        let uri: Uri = format!("/bkt/{encoded}").parse().expect("percent-encoded path is a valid URI");
        let request = classify_head(&Method::GET, &uri, &HeaderMap::new(), &config()).expect("valid");
        prop_assert_eq!(request.key.as_deref(), Some(key.as_str()));
    }
}

#[test]
fn a_request_target_past_the_bound_is_refused_with_414() {
    // Proves the target bound: exactly at the limit classifies; one byte over is UriTooLong,
    // answered 414 RequestURITooLong.
    let config = ClassifyConfig {
        max_uri_bytes: 1024,
        ..config()
    };
    let target = |length: usize| {
        let path = "/bkt/k?x=";
        format!("{path}{}", "a".repeat(length - path.len()))
    };
    let head = |uri: &str| {
        let (parts, ()) = http::Request::get(uri)
            .header("host", "h")
            .body(())
            .expect("valid")
            .into_parts();
        parts
    };
    classify(&head(&target(1024)), &config).expect("at the bound");
    let error = classify(&head(&target(1025)), &config).expect_err("past the bound");
    assert_eq!(
        error,
        ClassifyError::UriTooLong {
            length: 1025,
            limit: 1024
        }
    );
    let response = error.to_response();
    assert_eq!(
        (response.code.status(), response.code.as_str()),
        (414, "RequestURITooLong")
    );
}
