//! Establishing who a caller is, for core to decide: SigV4 verification of access keys and
//! sessions (header, presigned, signed chunks, browser forms), the token exchange that issues sessions (STS),
//! and the pod watch that maps source addresses to pods.

pub mod form;
pub mod pods;
pub mod sessions;
pub mod sigv2;
pub mod sigv4;
pub mod sts;

use storefront_core::s3::ErrorCode;

/// Why a signed request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The S3 error code to answer with.
    pub code: ErrorCode,
    /// What was wrong (for the client's message and the log).
    pub message: String,
}

/// A rejection with this code and message.
pub fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}
