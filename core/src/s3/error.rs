//! S3 error responses that the proxy produces itself (`SlowDown`, `RequestTimeout`, ...).
//!
//! SDKs read the `<Code>` element to decide whether to retry and how to back off, so the
//! proxy speaks the same XML as S3 does, with a request id that the access log also records.

use std::borrow::Cow;

/// An S3 error code, with the HTTP status S3 uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 503: too many requests; SDKs back off and retry.
    SlowDown,
    /// 503: the service (here: every backend) is unavailable; SDKs retry.
    ServiceUnavailable,
    /// 500: an unexpected failure inside the proxy or backend; SDKs retry.
    InternalError,
    /// 400: the client did not send or read in time (S3's own code for idle sockets).
    RequestTimeout,
    /// 403: policy denied the request.
    AccessDenied,
    /// 403: a SigV4 signature did not verify.
    SignatureDoesNotMatch,
    /// 403: the access key is unknown.
    InvalidAccessKeyId,
    /// 403: the request time is too far from the proxy's clock.
    RequestTimeTooSkewed,
    /// 400: the Authorization header or credential scope is malformed.
    AuthorizationHeaderMalformed,
    /// 400: the URI cannot be parsed.
    InvalidUri,
    /// 400: the bucket name is malformed.
    InvalidBucketName,
    /// 400: the key is longer than 1024 bytes.
    KeyTooLongError,
    /// 400: an argument (query parameter or header) is invalid.
    InvalidArgument,
    /// 400: the request is malformed in a way no finer code describes.
    InvalidRequest,
    /// 400: malformed HTTP framing.
    BadRequest,
    /// 400: a session token came with credentials that are not a session's, or is malformed.
    InvalidToken,
    /// 400: the session's credentials have expired (as S3 answers; SDKs then refresh them).
    ExpiredToken,
    /// 414: the request target is longer than `server.max_uri_bytes`.
    UriTooLong,
    /// 504: the backend did not answer in time.
    GatewayTimeout,
    /// 502: the backend answered with something that is not HTTP, or broke off.
    BadGateway,
    /// 400: a form upload's policy is malformed or its conditions do not hold.
    InvalidPolicyDocument,
    /// 400: a form upload's file is larger than its policy allows.
    EntityTooLarge,
    /// 400: a form upload's file is smaller than its policy allows.
    EntityTooSmall,
    /// 400: a form upload's body is not well-formed multipart/form-data.
    MalformedPostRequest,
    /// 400: a form upload's fields before its file are longer than the proxy reads.
    MaxPostPreDataLengthExceeded,
}

impl ErrorCode {
    /// The `<Code>` text.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SlowDown => "SlowDown",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::AccessDenied => "AccessDenied",
            ErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            ErrorCode::InvalidAccessKeyId => "InvalidAccessKeyId",
            ErrorCode::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            ErrorCode::AuthorizationHeaderMalformed => "AuthorizationHeaderMalformed",
            ErrorCode::InvalidUri => "InvalidURI",
            ErrorCode::InvalidBucketName => "InvalidBucketName",
            ErrorCode::KeyTooLongError => "KeyTooLongError",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::InvalidToken => "InvalidToken",
            ErrorCode::ExpiredToken => "ExpiredToken",
            ErrorCode::UriTooLong => "RequestURITooLong",
            ErrorCode::GatewayTimeout => "GatewayTimeout",
            ErrorCode::BadGateway => "BadGateway",
            ErrorCode::InvalidPolicyDocument => "InvalidPolicyDocument",
            ErrorCode::EntityTooLarge => "EntityTooLarge",
            ErrorCode::EntityTooSmall => "EntityTooSmall",
            ErrorCode::MalformedPostRequest => "MalformedPOSTRequest",
            ErrorCode::MaxPostPreDataLengthExceeded => "MaxPostPreDataLengthExceededError",
        }
    }

    /// The HTTP status S3 answers with this code.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::SlowDown | ErrorCode::ServiceUnavailable => 503,
            ErrorCode::InternalError => 500,
            ErrorCode::GatewayTimeout => 504,
            ErrorCode::BadGateway => 502,
            ErrorCode::AccessDenied
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::InvalidAccessKeyId
            | ErrorCode::RequestTimeTooSkewed => 403,
            ErrorCode::RequestTimeout
            | ErrorCode::AuthorizationHeaderMalformed
            | ErrorCode::InvalidUri
            | ErrorCode::InvalidBucketName
            | ErrorCode::KeyTooLongError
            | ErrorCode::InvalidArgument
            | ErrorCode::InvalidRequest
            | ErrorCode::BadRequest
            | ErrorCode::InvalidToken
            | ErrorCode::ExpiredToken
            | ErrorCode::InvalidPolicyDocument
            | ErrorCode::EntityTooLarge
            | ErrorCode::EntityTooSmall
            | ErrorCode::MalformedPostRequest
            | ErrorCode::MaxPostPreDataLengthExceeded => 400,
            ErrorCode::UriTooLong => 414,
        }
    }
}

/// An error response the proxy answers on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3ErrorResponse {
    /// The S3 error code.
    pub code: ErrorCode,
    /// A human-readable message (goes into `<Message>`).
    pub message: Cow<'static, str>,
}

impl S3ErrorResponse {
    /// A response with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        S3ErrorResponse {
            code,
            message: message.into(),
        }
    }

    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The S3 XML error document. `resource` is the request path; `request_id` identifies the
    /// request in logs.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> String {
        let mut xml = String::with_capacity(192 + self.message.len() + resource.len());
        xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
        xml.push_str(self.code.as_str());
        xml.push_str("</Code><Message>");
        escape_into(&mut xml, &self.message);
        xml.push_str("</Message><Resource>");
        escape_into(&mut xml, resource);
        xml.push_str("</Resource><RequestId>");
        escape_into(&mut xml, request_id);
        xml.push_str("</RequestId></Error>");
        xml
    }
}

/// XML-escape text content (the five predefined entities; control characters other than tab,
/// newline and carriage return are not allowed in XML 1.0 and become U+FFFD).
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped_and_carries_code_and_request_id() {
        // Proves that user-controlled text cannot break the XML document.
        let response = S3ErrorResponse::new(ErrorCode::SlowDown, "a <b> & \"c\"\u{1}");
        let xml = response.to_xml("/bucket/k&y", "req-1");
        assert_eq!(response.status(), 503);
        assert!(xml.contains("<Code>SlowDown</Code>"));
        assert!(xml.contains("<Message>a &lt;b&gt; &amp; &quot;c&quot;\u{FFFD}</Message>"));
        assert!(xml.contains("<Resource>/bucket/k&amp;y</Resource>"));
        assert!(xml.contains("<RequestId>req-1</RequestId>"));
    }
}
