//! S3 as the proxy sees it: which operation a request is, on which bucket and key, and the
//! S3 error responses that the proxy itself produces.
//!
//! [`classify`] turns a request head into an [`S3Request`]; everything downstream (routing,
//! retries, policy, metrics) reads that value instead of re-parsing the request.

pub mod chunked;
mod classify;
pub mod completion;
mod error;
pub mod form;
mod operation;

pub use classify::{
    BUCKET_LENGTH_MAX, ClassifyConfig, DEFAULT_MAX_URI_BYTES, KEY_LENGTH_MAX, PART_NUMBER_MAX, classify, classify_head,
};
pub use error::{ErrorCode, S3ErrorResponse};
pub use operation::{Action, Operation};

/// How the client named the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// `http://host/bucket/key`
    Path,
    /// `http://bucket.base-domain/key`
    VirtualHost,
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body (no framing headers, or `Content-Length: 0`).
    Empty,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`, length unknown.
    Chunked,
}

impl Body {
    /// True when the request carries body bytes that a retry would have to send again.
    pub fn is_present(self) -> bool {
        !matches!(self, Body::Empty)
    }
}

/// What the client says about its payload in `x-amz-content-sha256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No `x-amz-content-sha256` header (anonymous or SigV2 clients).
    Absent,
    /// A hex SHA-256 of the whole body.
    Sha256,
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked framing, no chunk signatures.
    StreamingUnsigned {
        /// Whether trailing headers (checksums) follow the last chunk.
        trailer: bool,
    },
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: aws-chunked with chunk signatures.
    StreamingSigned {
        /// Whether trailing headers (checksums) follow the last chunk.
        trailer: bool,
    },
    /// Any other value; forwarded as is.
    Other,
}

/// The source of a CopyObject or UploadPartCopy, from `x-amz-copy-source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    /// Source bucket.
    pub bucket: String,
    /// Source key, percent-decoded.
    pub key: String,
    /// `?versionId=` of the source, if given.
    pub version_id: Option<String>,
}

/// A classified S3 request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Request {
    /// The S3 operation.
    pub operation: Operation,
    /// Bucket, if the request names one.
    pub bucket: Option<String>,
    /// Object key, percent-decoded and exact (see the module docs of `classify`).
    pub key: Option<String>,
    /// Path or virtual-host style.
    pub addressing: Addressing,
    /// The host the client addressed, lowercased, without port.
    pub host: Option<String>,
    /// `?uploadId=` for multipart operations.
    pub upload_id: Option<String>,
    /// `?partNumber=`, validated to 1..=10000.
    pub part_number: Option<u32>,
    /// `x-amz-copy-source`, parsed.
    pub copy_source: Option<CopySource>,
    /// Body framing.
    pub body: Body,
    /// `x-amz-content-sha256` kind.
    pub payload: Payload,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The URL carries a presigned SigV4 signature.
    pub presigned: bool,
}

impl S3Request {
    /// True when the operation may safely be sent twice (see [`Operation::is_idempotent`]).
    pub fn is_idempotent(&self) -> bool {
        self.operation.is_idempotent()
    }

    /// True when the operation changes nothing.
    pub fn is_read_only(&self) -> bool {
        self.operation.is_read_only()
    }

    /// True when the key has a `.` or `..` path segment. S3 treats such keys literally, but
    /// filesystems and some gateways resolve them, so policy on key prefixes must not trust
    /// them (`logs/../secret` is not under `logs/` once a backend normalises it).
    pub fn key_has_dot_segments(&self) -> bool {
        self.key
            .as_deref()
            .is_some_and(|key| key.split('/').any(|segment| segment == "." || segment == ".."))
    }
}

/// Why a request head is not a well-formed S3 request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// The Host header or authority is not a host name or address.
    #[error("invalid host `{host}`")]
    InvalidHost {
        /// The offending value (truncated).
        host: String,
    },
    /// The request target is not an absolute path (`*`, or an authority-form target).
    #[error("request path `{path}` does not start with `/`")]
    PathNotAbsolute {
        /// The offending path (truncated).
        path: String,
    },
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {offset} of the path or query")]
    InvalidPercentEncoding {
        /// Byte offset of the `%` within the component.
        offset: usize,
    },
    /// The decoded key is not UTF-8.
    #[error("object key is not valid UTF-8 after percent-decoding")]
    KeyNotUtf8,
    /// A query parameter is not UTF-8 after decoding.
    #[error("query parameter is not valid UTF-8 after percent-decoding")]
    QueryNotUtf8,
    /// The decoded key is longer than S3 allows.
    #[error("object key is {length} bytes; the limit is 1024")]
    KeyTooLong {
        /// Key length in bytes.
        length: usize,
    },
    /// The bucket name cannot be an S3 bucket.
    #[error("invalid bucket name `{bucket}`: {reason}")]
    InvalidBucketName {
        /// The offending name (truncated).
        bucket: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `partNumber` is not an integer in 1..=10000.
    #[error("partNumber `{value}` is not an integer between 1 and 10000")]
    InvalidPartNumber {
        /// The offending value.
        value: String,
    },
    /// `x-amz-copy-source` is not `bucket/key`.
    #[error("x-amz-copy-source `{value}` is not of the form bucket/key")]
    InvalidCopySource {
        /// The offending value (truncated).
        value: String,
    },
    /// `Content-Length` is not a decimal number, or two copies disagree.
    #[error("invalid Content-Length `{value}`")]
    InvalidContentLength {
        /// The offending value.
        value: String,
    },
    /// `Transfer-Encoding` is not `chunked` (the only coding a proxy can frame).
    #[error("unsupported Transfer-Encoding (only `chunked` is accepted)")]
    InvalidTransferEncoding,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling risk, RFC 9112 §6.3).
    #[error("both Content-Length and Transfer-Encoding are present")]
    ConflictingFraming,
    /// The request target is longer than the configured bound.
    #[error("the request target is {length} bytes; the limit is {limit}")]
    UriTooLong {
        /// Its length in bytes.
        length: usize,
        /// `server.max_uri_bytes`.
        limit: usize,
    },
}

impl ClassifyError {
    /// The S3 error this becomes when answered to the client.
    pub fn to_response(&self) -> S3ErrorResponse {
        let code = match self {
            ClassifyError::InvalidHost { .. } | ClassifyError::PathNotAbsolute { .. } => ErrorCode::InvalidRequest,
            ClassifyError::InvalidPercentEncoding { .. } | ClassifyError::KeyNotUtf8 | ClassifyError::QueryNotUtf8 => {
                ErrorCode::InvalidUri
            }
            ClassifyError::KeyTooLong { .. } => ErrorCode::KeyTooLongError,
            ClassifyError::InvalidBucketName { .. } => ErrorCode::InvalidBucketName,
            ClassifyError::InvalidPartNumber { .. } | ClassifyError::InvalidCopySource { .. } => {
                ErrorCode::InvalidArgument
            }
            ClassifyError::InvalidContentLength { .. }
            | ClassifyError::InvalidTransferEncoding
            | ClassifyError::ConflictingFraming => ErrorCode::BadRequest,
            ClassifyError::UriTooLong { .. } => ErrorCode::UriTooLong,
        };
        S3ErrorResponse::new(code, self.to_string())
    }
}

#[cfg(test)]
mod tests;
