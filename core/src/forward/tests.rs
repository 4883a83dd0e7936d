//! The forwarding plan for the request heads real clients send, as a table.

use super::*;
use crate::s3::{ClassifyConfig, classify};

const SHA: &str = "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824";
const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=AKID/20261201/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

struct Case {
    /// Which client sends this, and how.
    client: &'static str,
    method: &'static str,
    uri: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// The backend's path and query.
    backend_uri: &'static str,
    body: BodyFraming,
    payload: PayloadHash,
    /// Headers the backend must get, with their values.
    kept: &'static [(&'static str, &'static str)],
    /// Headers it must not get.
    dropped: &'static [&'static str],
}

fn head(case: &Case) -> http::request::Parts {
    let mut builder = http::Request::builder().method(case.method).uri(case.uri);
    for (name, value) in case.headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid test head").into_parts().0
}

const CREDENTIALS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

#[test]
fn real_clients_heads_are_planned_as_the_backend_must_see_them() {
    // Proves the plan for each request form real clients send: the backend's URI, the body's
    // framing and length, the payload hash signed, the headers kept (checksums, ranges, form
    // types, metadata) and dropped (credentials, Expect, Host, hop-by-hop).
    let cases = [
        Case {
            client: "awscli / boto3 over http: PutObject with a signed body hash, a CRC32 and Expect",
            method: "PUT",
            uri: "/bucket/key.txt",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("expect", "100-continue"),
                ("x-amz-checksum-crc32", "NhCmhg=="),
                ("x-amz-sdk-checksum-algorithm", "CRC32"),
                ("x-amz-date", "20261201T000000Z"),
                ("x-amz-content-sha256", SHA),
                ("authorization", AUTH),
                ("content-length", "5"),
            ],
            backend_uri: "/bucket/key.txt",
            body: BodyFraming::Raw { length: Some(5) },
            payload: PayloadHash::Sha256(SHA.to_ascii_lowercase()),
            kept: &[("x-amz-checksum-crc32", "NhCmhg=="), ("content-length", "5")],
            dropped: &["expect", "host"],
        },
        Case {
            client: "awscli / boto3 over https: unsigned aws-chunked with a trailing checksum, HTTP chunked",
            method: "PUT",
            uri: "/bucket/key.txt",
            headers: &[
                ("host", "storefront:9000"),
                ("expect", "100-continue"),
                ("transfer-encoding", "chunked"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
                ("x-amz-decoded-content-length", "5"),
                ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
            ],
            backend_uri: "/bucket/key.txt",
            body: BodyFraming::Raw { length: None },
            payload: PayloadHash::StreamingUnsignedTrailer,
            kept: &[
                ("content-encoding", "aws-chunked"),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
                ("x-amz-decoded-content-length", "5"),
            ],
            dropped: &["transfer-encoding", "expect"],
        },
        Case {
            client: "the Rust SDK: signed aws-chunked with a trailer (file body over http)",
            method: "PUT",
            uri: "/bucket/key.bin",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
                ("x-amz-decoded-content-length", "5"),
                ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
                ("content-length", "281"),
            ],
            backend_uri: "/bucket/key.bin",
            body: BodyFraming::ReframeSigned,
            payload: PayloadHash::StreamingUnsignedTrailer,
            kept: &[
                ("content-encoding", "aws-chunked"),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
            ],
            dropped: &["content-length"],
        },
        Case {
            client: "a signed aws-chunked upload without trailers (older SDKs)",
            method: "PUT",
            uri: "/bucket/key.bin",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("content-encoding", "aws-chunked, gzip"),
                ("x-amz-decoded-content-length", "5"),
                ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
                ("content-length", "180"),
            ],
            backend_uri: "/bucket/key.bin",
            body: BodyFraming::DecodeSigned { decoded_length: 5 },
            payload: PayloadHash::Unsigned,
            kept: &[("content-length", "5"), ("content-encoding", "gzip")],
            dropped: &["x-amz-decoded-content-length"],
        },
        Case {
            client: "rclone: UNSIGNED-PAYLOAD above 2 MiB, Expect: 100-Continue (capital C)",
            method: "PUT",
            uri: "/bucket/big.parquet",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("expect", "100-Continue"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ("x-amz-meta-mtime", "1764547200.5"),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
                ("content-length", "3145728"),
            ],
            backend_uri: "/bucket/big.parquet",
            body: BodyFraming::Raw {
                length: Some(3_145_728),
            },
            payload: PayloadHash::Unsigned,
            kept: &[("x-amz-meta-mtime", "1764547200.5")],
            dropped: &["expect"],
        },
        Case {
            client: "minio-py: CreateMultipartUpload as `?uploads=`",
            method: "POST",
            uri: "/bucket/key?uploads=",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
            ],
            backend_uri: "/bucket/key?uploads=",
            body: BodyFraming::Empty,
            payload: PayloadHash::Sha256(EMPTY_SHA.to_owned()),
            kept: &[],
            dropped: &[],
        },
        Case {
            client: "s5cmd: a ranged GET, path style, empty body hash",
            method: "GET",
            uri: "/bucket/dir/part-0001?partNumber=2",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("range", "bytes=0-1023"),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", "20261201T000000Z"),
                ("authorization", AUTH),
            ],
            backend_uri: "/bucket/dir/part-0001?partNumber=2",
            body: BodyFraming::Empty,
            payload: PayloadHash::Sha256(EMPTY_SHA.to_owned()),
            kept: &[("range", "bytes=0-1023")],
            dropped: &[],
        },
        Case {
            client: "a presigned GET (aws s3 presign, boto3 generate_presigned_url) with a version",
            method: "GET",
            uri: "/bucket/key?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
            headers: &[("host", "127.0.0.1:9000")],
            backend_uri: "/bucket/key?versionId=3",
            body: BodyFraming::Empty,
            payload: PayloadHash::Unsigned,
            kept: &[],
            dropped: &[],
        },
        Case {
            client: "a SigV2 presigned GET (awscli v1 presign, s3cmd signurl) with a version",
            method: "GET",
            uri: "/bucket/key?AWSAccessKeyId=AKID&Expires=1796083200&versionId=3&Signature=qgk2%2B6Sv9%2FoM7G3qLEjTH1a1l1g%3D",
            headers: &[("host", "127.0.0.1:9000")],
            backend_uri: "/bucket/key?versionId=3",
            body: BodyFraming::Empty,
            payload: PayloadHash::Unsigned,
            kept: &[],
            dropped: &[],
        },
        Case {
            client: "a SigV2 header-signed PUT (boto3 with signature_version='s3')",
            method: "PUT",
            uri: "/bucket/key",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
                ("authorization", "AWS AKID:qgk2+6Sv9/oM7G3qLEjTH1a1l1g="),
                ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
                ("content-length", "5"),
            ],
            backend_uri: "/bucket/key",
            body: BodyFraming::Raw { length: Some(5) },
            payload: PayloadHash::Unsigned,
            kept: &[("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="), ("content-length", "5")],
            dropped: &["authorization", "host"],
        },
        Case {
            client: "a presigned PUT: only signature parameters in the query",
            method: "PUT",
            uri: "/bucket/upload.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
            headers: &[("host", "127.0.0.1:9000"), ("content-length", "7")],
            backend_uri: "/bucket/upload.bin",
            body: BodyFraming::Raw { length: Some(7) },
            payload: PayloadHash::Unsigned,
            kept: &[("content-length", "7")],
            dropped: &[],
        },
        Case {
            client: "a browser form upload (PostObject)",
            method: "POST",
            uri: "/bucket",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("content-type", "multipart/form-data; boundary=----x"),
                ("origin", "https://app.example"),
                ("content-length", "1000"),
            ],
            backend_uri: "/bucket",
            body: BodyFraming::Raw { length: Some(1000) },
            payload: PayloadHash::Unsigned,
            kept: &[
                ("content-type", "multipart/form-data; boundary=----x"),
                ("origin", "https://app.example"),
            ],
            dropped: &[],
        },
        Case {
            client: "virtual-host style (SDK default): the bucket moves into the path",
            method: "GET",
            uri: "/photos/2026/a.jpg?response-content-type=image%2Fjpeg",
            headers: &[
                ("host", "media.s3.example.com"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ],
            backend_uri: "/media/photos/2026/a.jpg?response-content-type=image%2Fjpeg",
            body: BodyFraming::Empty,
            payload: PayloadHash::Unsigned,
            kept: &[],
            dropped: &[],
        },
        Case {
            client: "any client behind a proxy: hop-by-hop headers and those Connection names",
            method: "GET",
            uri: "/bucket/key",
            headers: &[
                ("host", "127.0.0.1:9000"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic eA=="),
                ("upgrade", "h2c"),
                ("x-amz-security-token", "session"),
                ("x-amz-meta-name", "kept"),
            ],
            backend_uri: "/bucket/key",
            body: BodyFraming::Empty,
            payload: PayloadHash::Unsigned,
            kept: &[("x-amz-meta-name", "kept")],
            dropped: &[
                "connection",
                "x-hop",
                "keep-alive",
                "te",
                "proxy-authorization",
                "upgrade",
            ],
        },
    ];
    let config = ClassifyConfig::with_base_domains(&["s3.example.com".to_owned()]);
    for case in &cases {
        let parts = head(case);
        let request = classify(&parts, &config).unwrap_or_else(|error| panic!("{}: {error:?}", case.client));
        let plan = plan(&parts, &request).unwrap_or_else(|error| panic!("{}: {error:?}", case.client));
        assert_eq!(plan.method.as_str(), case.method, "{}", case.client);
        assert_eq!(plan.uri.to_string(), case.backend_uri, "{}", case.client);
        assert_eq!(plan.body, case.body, "{}", case.client);
        assert_eq!(plan.payload_hash, case.payload, "{}", case.client);
        for (name, value) in case.kept {
            assert_eq!(
                plan.headers.get(*name).and_then(|value| value.to_str().ok()),
                Some(*value),
                "{}: {name}",
                case.client
            );
        }
        for name in case.dropped.iter().chain(&CREDENTIALS).chain(&["host", "expect"]) {
            assert!(
                !plan.headers.contains_key(*name),
                "{}: {name} must not reach the backend",
                case.client
            );
        }
    }
}

#[test]
fn a_signed_stream_without_its_decoded_length_cannot_be_forwarded() {
    // Proves that a signed aws-chunked upload without trailers and without a numeric
    // x-amz-decoded-content-length is refused as the client's error (its backend length is
    // unknowable).
    for decoded in [None, Some("five")] {
        let mut builder = http::Request::put("/bucket/key")
            .header("host", "127.0.0.1:9000")
            .header("content-encoding", "aws-chunked")
            .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            .header("content-length", "180");
        if let Some(decoded) = decoded {
            builder = builder.header("x-amz-decoded-content-length", decoded);
        }
        let parts = builder.body(()).expect("valid").into_parts().0;
        let request = classify(&parts, &ClassifyConfig::default()).expect("classifies");
        let error = plan(&parts, &request).expect_err("unforwardable");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{decoded:?}");
    }
}
