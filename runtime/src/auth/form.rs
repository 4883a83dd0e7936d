//! Verifying the signature of a browser form upload (PostObject): the caller signed the
//! form's base64 policy text, with SigV4 (`x-amz-signature`, hex HMAC-SHA256 under the signing
//! key of `x-amz-credential`'s scope and `x-amz-date`) or, where `auth.sigv2` accepts it, SigV2
//! (`signature`, base64 HMAC-SHA1 under the secret of `AWSAccessKeyId`). Compared in constant
//! time. A form has no clock skew to check: its policy's expiration bounds it (core checks it).

use std::time::SystemTime;

use aws_sigv4::sign::v4;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use storefront_core::auth::Principal;
use storefront_core::s3::ErrorCode;
use storefront_core::s3::form::FormCredential;
use subtle::ConstantTimeEq;

use super::sigv4::{KeyStore, parse_amz_date, principal_of};
use super::{Rejection, reject};

/// The message S3 gives for a signature that does not verify.
const MISMATCH: &str = "The request signature we calculated does not match the signature you provided.";

/// Who signed a form with `credential`: `Ok(None)` for an unsigned form, the key's (or
/// session's) identity for a good signature, `Err` otherwise. `sigv2` says whether SigV2 forms
/// are accepted.
pub fn verify(
    keys: &KeyStore,
    credential: FormCredential<'_>,
    now: SystemTime,
    sigv2: bool,
) -> Result<Option<Principal>, Rejection> {
    match credential {
        FormCredential::None => Ok(None),
        FormCredential::V4 {
            policy,
            credential,
            date,
            signature,
            token,
        } => {
            let malformed = || {
                reject(
                    ErrorCode::InvalidArgument,
                    "x-amz-credential must be <access key>/<date>/<region>/s3/aws4_request with the date of x-amz-date",
                )
            };
            let mut scope = credential.split('/');
            let (Some(access_key), Some(scope_date), Some(region), Some("s3"), Some("aws4_request"), None) = (
                scope.next(),
                scope.next(),
                scope.next(),
                scope.next(),
                scope.next(),
                scope.next(),
            ) else {
                return Err(malformed());
            };
            if scope_date.len() != 8 || !date.starts_with(scope_date) {
                return Err(malformed());
            }
            let signed_at = parse_amz_date(date).ok_or_else(|| {
                reject(
                    ErrorCode::InvalidArgument,
                    "x-amz-date is not of the form YYYYMMDDTHHMMSSZ",
                )
            })?;
            let (key, session) = keys.resolve(access_key, token, token.is_some(), now)?;
            let signing_key = v4::generate_signing_key(&key.secret_key, signed_at, region, "s3");
            let expected = v4::calculate_signature(signing_key, policy.as_bytes());
            if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
                return Err(reject(ErrorCode::SignatureDoesNotMatch, MISMATCH));
            }
            Ok(Some(session.unwrap_or_else(|| principal_of(&key))))
        }
        FormCredential::V2 {
            policy,
            access_key,
            signature,
        } => {
            if !sigv2 {
                return Err(reject(
                    ErrorCode::InvalidRequest,
                    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
                ));
            }
            let key = keys.static_key(access_key).ok_or_else(|| {
                reject(
                    ErrorCode::InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records.",
                )
            })?;
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.secret_key.as_bytes())
                .expect("HMAC takes a key of any length");
            mac.update(policy.as_bytes());
            let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
                return Err(reject(ErrorCode::SignatureDoesNotMatch, MISMATCH));
            }
            Ok(Some(principal_of(key)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use storefront_core::config::AccessKey;

    use super::*;

    fn keys() -> KeyStore {
        KeyStore::new([AccessKey {
            access_key: "AKIDAPP".into(),
            secret_key: "app-secret".into(),
            name: Some("app".into()),
            zone: None,
        }])
    }

    /// 2026-12-01T12:00:00Z
    fn noon() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_126_400)
    }

    fn v4<'a>(signature: &'a str, token: Option<&'a str>) -> FormCredential<'a> {
        FormCredential::V4 {
            policy: "eyJleHBpcmF0aW9uIjogIjIwMjYtMTItMDFUMTM6MDA6MDBaIiwgImNvbmRpdGlvbnMiOiBbXX0=",
            credential: "AKIDAPP/20261201/us-east-1/s3/aws4_request",
            date: "20261201T120000Z",
            signature,
            token,
        }
    }

    #[test]
    fn a_v4_form_signature_is_the_policys_hmac_under_the_scopes_key() {
        // The known answer, computed apart from aws-sigv4 by the AWS documentation's derivation
        // (HMAC-SHA256 chained over "AWS4app-secret", "20261201", "us-east-1", "s3",
        // "aws4_request", then over the policy text) with Python's hmac module.
        let signature = "2ce56e2ec65b4b63d97fe109c294c160b8c0c3a0c1a1d7d99e06b777ded39bf6".to_owned();
        let principal = verify(&keys(), v4(&signature, None), noon(), false).expect("verifies");
        assert_eq!(principal.map(|principal| principal.name), Some("key:app".to_owned()));
        let mut tampered = signature.clone();
        tampered.replace_range(..1, if signature.starts_with('0') { "1" } else { "0" });
        let refused = verify(&keys(), v4(&tampered, None), noon(), false).expect_err("tampered");
        assert_eq!(refused.code, ErrorCode::SignatureDoesNotMatch);
        let refused = verify(&keys(), v4(&signature, Some("garbage")), noon(), false).expect_err("token");
        assert_eq!(
            refused.code,
            ErrorCode::InvalidToken,
            "a static key with a token is refused"
        );
    }

    #[test]
    fn a_v2_form_is_accepted_only_where_sigv2_is() {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"app-secret").expect("key");
        mac.update(b"e30=");
        let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let credential = FormCredential::V2 {
            policy: "e30=",
            access_key: "AKIDAPP",
            signature: &signature,
        };
        assert!(verify(&keys(), credential, noon(), true).expect("verifies").is_some());
        let off = verify(&keys(), credential, noon(), false).expect_err("off");
        assert_eq!(off.code, ErrorCode::InvalidRequest);
        let unknown = FormCredential::V2 {
            policy: "e30=",
            access_key: "AKIDNOBODY",
            signature: &signature,
        };
        assert_eq!(
            verify(&keys(), unknown, noon(), true).map_err(|error| error.code).err(),
            Some(ErrorCode::InvalidAccessKeyId)
        );
    }

    #[test]
    fn a_scope_that_is_not_s3s_or_not_the_dates_is_malformed() {
        for credential in [
            "AKIDAPP/20261201/us-east-1/iam/aws4_request",
            "AKIDAPP/20261130/us-east-1/s3/aws4_request",
            "AKIDAPP/20261201/us-east-1/s3",
        ] {
            let form = FormCredential::V4 {
                policy: "e30=",
                credential,
                date: "20261201T120000Z",
                signature: "00",
                token: None,
            };
            let refused = verify(&keys(), form, noon(), false).expect_err(credential);
            assert_eq!(refused.code, ErrorCode::InvalidArgument, "{credential}");
        }
    }
}
