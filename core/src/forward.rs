//! The forwarding plan: what exactly the proxy sends to a backend for a client's request.
//!
//! Core computes it once per exchange, from the client's head and its classification, and
//! hands it to the runtime in every [`Step::Forward`](crate::exchange::Step::Forward) and
//! `Retry`; the runtime builds the request from it, sets `Host` to the backend it dials, signs
//! with the payload hash the plan names, and moves the body as the plan frames it. It decides
//! nothing of its own.
//!
//! - **Head.** Path style always (`/bucket/key`; a virtual-host request's bucket moves into the
//!   path), the query kept byte for byte except a presigned URL's `X-Amz-*` signature
//!   parameters (the backend gets the proxy's signature, and two at once would be refused).
//!   Hop-by-hop headers (RFC 9110 §7.6.1, and those `Connection` names) go, and so do the
//!   caller's credentials (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`,
//!   `X-Amz-Content-Sha256`: the signer writes its own), `Expect` (the proxy answered it) and
//!   `Host`.
//! - **Body.** Forwarded byte for byte, except a signed aws-chunked upload: without trailers it
//!   is decoded to its plain bytes (the backend gets `Content-Length` =
//!   `x-amz-decoded-content-length` and no `aws-chunked` coding); with trailers it is re-framed
//!   as unsigned aws-chunked with the same trailers (its length changes, so it goes chunked),
//!   and the checksum still reaches the backend.
//! - **Payload hash.** The caller's hex SHA-256 when it sent one (the backend still verifies
//!   the body end to end), `STREAMING-UNSIGNED-PAYLOAD-TRAILER` for unsigned aws-chunked bodies
//!   and re-framed ones, `UNSIGNED-PAYLOAD` otherwise (decoded signed streams included).
//!
//! Every header the plan keeps is signed (aws-sigv4 signs what it is given), `Host` with them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::s3::{Addressing, Body, ErrorCode, Payload, S3ErrorResponse, S3Request};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and others a proxy must not pass on, either way.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that carry the caller's signature or authority and must not be forwarded.
pub const CALLER_AUTH_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// What the backend request's signature says about its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// The body's hex SHA-256 (lowercase), as the caller computed it.
    Sha256(String),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`.
    StreamingUnsignedTrailer,
}

/// How the client's body travels to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Byte for byte; `length` when the client declared one (else it streams chunked).
    Raw {
        /// The body's length, from `Content-Length`.
        length: Option<u64>,
    },
    /// A signed aws-chunked stream without trailers, decoded to `decoded_length` plain bytes.
    DecodeSigned {
        /// `x-amz-decoded-content-length`: what the backend receives.
        decoded_length: u64,
    },
    /// A signed aws-chunked stream with trailers, re-framed as unsigned aws-chunked.
    ReframeSigned,
    /// A browser form upload, re-signed for the backend: the runtime sends the form's fields
    /// as [`crate::s3::form::Form::forward_prefix`] writes them for the backend's credential,
    /// then the client's bytes from the file part's first byte on, unchanged, and sets
    /// `Content-Length` to the sum when the client declared its own.
    Form,
}

impl BodyFraming {
    /// The length of what the backend receives, when known in advance.
    pub fn length(self) -> Option<u64> {
        match self {
            BodyFraming::Empty => Some(0),
            BodyFraming::Raw { length } => length,
            BodyFraming::DecodeSigned { decoded_length } => Some(decoded_length),
            BodyFraming::ReframeSigned | BodyFraming::Form => None,
        }
    }
}

/// Everything the runtime needs to send one client request to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardPlan {
    /// The method, as the client sent it.
    pub method: http::Method,
    /// The path-style path and query the backend gets.
    pub uri: http::Uri,
    /// The headers it gets, without `Host` (the runtime sets the backend's) and before the
    /// signer adds its own.
    pub headers: HeaderMap,
    /// How the body travels.
    pub body: BodyFraming,
    /// The payload hash to sign.
    pub payload_hash: PayloadHash,
}

/// The plan for the classified request `request` whose head is `head` (see the module docs).
/// Errors are the client's: a request whose head cannot be forwarded as it is.
pub fn plan(head: &http::request::Parts, request: &S3Request) -> Result<ForwardPlan, S3ErrorResponse> {
    let uri = backend_uri(head, request)?;
    let mut headers = head.headers.clone();
    strip_hop_by_hop(&mut headers);
    for name in CALLER_AUTH_HEADERS.iter().copied().chain(["expect", "host"]) {
        headers.remove(name);
    }
    let body = match (request.payload, request.body) {
        (_, Body::Empty) => BodyFraming::Empty,
        (Payload::StreamingSigned { trailer: false }, _) => {
            let decoded_length = head
                .headers
                .get("x-amz-decoded-content-length")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse().ok())
                .ok_or_else(|| {
                    S3ErrorResponse::new(
                        ErrorCode::InvalidRequest,
                        "a signed aws-chunked upload needs a numeric x-amz-decoded-content-length",
                    )
                })?;
            BodyFraming::DecodeSigned { decoded_length }
        }
        (Payload::StreamingSigned { trailer: true }, _) => BodyFraming::ReframeSigned,
        (_, Body::Length(length)) => BodyFraming::Raw { length: Some(length) },
        (_, Body::Chunked) => BodyFraming::Raw { length: None },
    };
    match body {
        BodyFraming::DecodeSigned { decoded_length } => {
            headers.remove("x-amz-decoded-content-length");
            remove_aws_chunked_encoding(&mut headers);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(decoded_length));
        }
        // Re-framed as unsigned aws-chunked: its length changes, so it goes chunked.
        BodyFraming::ReframeSigned => {
            headers.remove(header::CONTENT_LENGTH);
        }
        BodyFraming::Empty | BodyFraming::Raw { .. } | BodyFraming::Form => {}
    }
    let payload_hash = match request.payload {
        Payload::Sha256 => head
            .headers
            .get("x-amz-content-sha256")
            .and_then(|value| value.to_str().ok())
            .map_or(PayloadHash::Unsigned, |hash| {
                PayloadHash::Sha256(hash.to_ascii_lowercase())
            }),
        Payload::StreamingUnsigned { .. } | Payload::StreamingSigned { trailer: true } => {
            PayloadHash::StreamingUnsignedTrailer
        }
        Payload::Absent | Payload::Unsigned | Payload::StreamingSigned { trailer: false } | Payload::Other => {
            PayloadHash::Unsigned
        }
    };
    Ok(ForwardPlan {
        method: head.method.clone(),
        uri,
        headers,
        body,
        payload_hash,
    })
}

/// The plan for a browser form upload (PostObject) whose fields the runtime read: as
/// [`plan`], but its body is the re-signed form ([`BodyFraming::Form`]), whose length the
/// runtime sets, and nothing in its head signs the payload.
pub fn plan_form(head: &http::request::Parts, request: &S3Request) -> Result<ForwardPlan, S3ErrorResponse> {
    let mut plan = plan(head, request)?;
    plan.headers.remove(header::CONTENT_LENGTH);
    plan.body = BodyFraming::Form;
    plan.payload_hash = PayloadHash::Unsigned;
    Ok(plan)
}

/// The SSE-C headers a HEAD of an object encrypted with a customer key must repeat.
const SSE_C_HEADERS: [&str; 3] = [
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
];

/// A HEAD of the object that the request `plan` addresses (its path without the query), with
/// no body and only the SSE-C headers of the original (without which a HEAD of an object
/// encrypted with a customer key fails): how the proxy learns whether a completion it could
/// not hear of took place. `None` when the plan names no object.
pub fn plan_head_object(plan: &ForwardPlan) -> Option<ForwardPlan> {
    let path = plan.uri.path();
    if path
        .trim_start_matches('/')
        .split_once('/')
        .is_none_or(|(_, key)| key.is_empty())
    {
        return None;
    }
    let mut headers = HeaderMap::new();
    for name in SSE_C_HEADERS {
        if let Some(value) = plan.headers.get(name) {
            headers.insert(name, value.clone());
        }
    }
    Some(ForwardPlan {
        method: http::Method::HEAD,
        uri: path.parse().ok()?,
        headers,
        body: BodyFraming::Empty,
        payload_hash: PayloadHash::Unsigned,
    })
}

/// Remove hop-by-hop headers, and those the `Connection` header names, from `headers` (a
/// request's on its way out, a response's on its way back).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A presigned URL's own parameter: SigV4's `X-Amz-*`, or SigV2's `AWSAccessKeyId`,
/// `Signature` and `Expires`.
fn is_signature_parameter(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    name.starts_with("X-Amz-") || matches!(name, "AWSAccessKeyId" | "Signature" | "Expires")
}

/// The path-style path and query for the backend.
fn backend_uri(head: &http::request::Parts, request: &S3Request) -> Result<http::Uri, S3ErrorResponse> {
    let path = head.uri.path();
    let query = match head.uri.query() {
        Some(query) if request.presigned => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty() && !is_signature_parameter(pair))
                .collect();
            (!kept.is_empty()).then(|| kept.join("&"))
        }
        other => other.map(str::to_owned),
    };
    let path = match (request.addressing, request.bucket.as_deref()) {
        (Addressing::VirtualHost, Some(bucket)) => format!("/{bucket}{path}"),
        _ => path.to_owned(),
    };
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    path_and_query
        .parse()
        .map_err(|_| S3ErrorResponse::new(ErrorCode::InvalidUri, "the request URI cannot be forwarded"))
}

/// Drop the `aws-chunked` token from Content-Encoding (keeping any other coding).
fn remove_aws_chunked_encoding(headers: &mut HeaderMap) {
    let rest: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("aws-chunked"))
        .map(str::to_owned)
        .collect();
    headers.remove(header::CONTENT_ENCODING);
    if let Ok(value) = HeaderValue::from_str(&rest.join(", "))
        && !rest.is_empty()
    {
        headers.insert(header::CONTENT_ENCODING, value);
    }
}

#[cfg(test)]
mod tests;
