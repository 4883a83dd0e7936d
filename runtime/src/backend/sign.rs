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
use storefront_core::s3::form::{Form, PostPolicy};

/// Signs requests for one pool's backends.
#[derive(Clone, Debug)]
pub struct Signer {
    region: String,
    identity: Option<Identity>,
    /// The access key and secret of `identity`, for signing forms.
    keys: Option<(String, String)>,
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
            identity: credentials.clone().map(|(access_key, secret_key)| {
                Credentials::new(access_key, secret_key, None, None, "storefront-config").into()
            }),
            keys: credentials,
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

    /// The credential fields of a browser form upload of `key` for the backend, signed at `time`:
    /// `policy` (the caller's, or one that admits the form as it is: see
    /// [`FormPolicy`]) rewritten under this signer's credential and signed with SigV4, as
    /// `(name, value)` pairs in the order they are sent. None for unsigned backends.
    pub fn form_fields(&self, policy: FormPolicy<'_>, key: &str, time: SystemTime) -> Vec<(&'static str, String)> {
        let Some((access_key, secret_key)) = &self.keys else {
            return Vec::new();
        };
        let date = storefront_core::calendar::amz_date(time);
        let credential = format!("{access_key}/{}/{}/s3/aws4_request", &date[..8], self.region);
        let fields = [
            ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
            ("x-amz-credential", credential.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        let policy = match policy {
            FormPolicy::Caller(policy) => policy.for_backend(key, &fields),
            FormPolicy::Admitting { form, bucket } => {
                // Valid long enough for any upload a bounded total deadline lets through.
                PostPolicy::admitting(form, bucket, time + std::time::Duration::from_secs(24 * 3600))
                    .for_backend(key, &fields)
            }
        };
        let signing_key = v4::generate_signing_key(secret_key, time, &self.region, "s3");
        let signature = v4::calculate_signature(signing_key, policy.as_bytes());
        let mut out: Vec<(&'static str, String)> = fields
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        out.push(("policy", policy));
        out.push(("x-amz-signature", signature));
        out
    }
}

/// The policy a re-signed form carries to the backend.
#[derive(Clone, Copy, Debug)]
pub enum FormPolicy<'a> {
    /// The caller's own (its conditions, its expiration).
    Caller(&'a PostPolicy),
    /// The caller sent none (an anonymous upload the proxy's policy allowed): one that admits
    /// `form`'s fields as they are, posted to `bucket`.
    Admitting {
        /// The form.
        form: &'a Form,
        /// The bucket it is posted to.
        bucket: &'a str,
    },
}
