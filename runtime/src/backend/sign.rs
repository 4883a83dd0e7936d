//! Re-signing forwarded requests with the backend's credentials (SigV4, via aws-sigv4).
//!
//! The caller's own signature cannot reach the backend: the proxy changed the Host, and the
//! caller's keys (if any) are not the backend's. The proxy strips every trace of the caller's
//! signature and signs the request it actually sends. The payload hash it signs is:
//!
//! - the caller's hex SHA-256 when it sent one (the backend then still verifies the body
//!   end to end);
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER` for aws-chunked bodies with unsigned trailers,
//!   forwarded byte for byte;
//! - `UNSIGNED-PAYLOAD` otherwise, including decoded signed-chunk streams.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

pub use storefront_core::forward::PayloadHash;

/// Signs requests for one pool's backends.
#[derive(Clone, Debug)]
pub struct Signer {
    region: String,
    identity: Option<Identity>,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[error("signing the backend request failed: {0}")]
pub struct SignError(String);

impl Signer {
    /// A signer for `region` with these credentials (none: requests go unsigned).
    pub fn new(region: impl Into<String>, credentials: Option<(String, String)>) -> Self {
        Signer {
            region: region.into(),
            identity: credentials.map(|(access_key, secret_key)| {
                Credentials::new(access_key, secret_key, None, None, "storefront-config").into()
            }),
        }
    }

    /// Sign `parts` in place (headers must already be the ones sent, Host included).
    pub fn sign(
        &self,
        parts: &mut http::request::Parts,
        payload: &PayloadHash,
        time: SystemTime,
    ) -> Result<(), SignError> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|error| SignError(error.to_string()))?
            .into();
        let body = match payload {
            PayloadHash::Unsigned => SignableBody::UnsignedPayload,
            PayloadHash::Sha256(hash) => SignableBody::Precomputed(hash.clone()),
            PayloadHash::StreamingUnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
        };
        let uri = parts.uri.to_string();
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                std::str::from_utf8(value.as_bytes())
                    .ok()
                    .map(|value| (name.as_str(), value))
            })
            .collect();
        let signable = SignableRequest::new(parts.method.as_str(), uri, headers.into_iter(), body)
            .map_err(|error| SignError(error.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| SignError(error.to_string()))?
            .into_parts();
        // The crate applies its headers (marked sensitive where they are) to a whole request.
        let taken = std::mem::replace(parts, http::Request::new(()).into_parts().0);
        let mut request = http::Request::from_parts(taken, ());
        instructions.apply_to_request_http1x(&mut request);
        *parts = request.into_parts().0;
        Ok(())
    }
}
