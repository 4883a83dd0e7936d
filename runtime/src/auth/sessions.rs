//! Session credentials issued by the token exchange: stateless, their claims (namespace,
//! service account, expiry) sealed with the master key into the session token, so that any
//! replica verifies them with no shared state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::sign::v4;
use storefront_core::auth::{Principal, Source};
use storefront_core::config::AccessKey;
use storefront_core::s3::ErrorCode;
use subtle::ConstantTimeEq;

use super::{Rejection, reject};

/// What a session token carries (sealed with the master key, so any replica can open it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionClaims {
    /// Format version.
    pub v: u8,
    /// Kubernetes namespace.
    pub ns: String,
    /// ServiceAccount.
    pub sa: String,
    /// Pod name, when the token was bound to a pod.
    pub pod: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Session credentials, as STS returns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCredentials {
    /// `ASIA...`
    pub access_key: String,
    /// Derived from the master key and the token: never stored.
    pub secret_key: String,
    /// The sealed claims.
    pub token: String,
    /// When they stop working.
    pub expiration: SystemTime,
}

/// Stateless sessions: mint and open session credentials with a master key.
#[derive(Clone)]
pub struct Sessions {
    master: Vec<u8>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(<master key>)")
    }
}

impl Sessions {
    /// Sessions sealed with `master` (at least 32 bytes).
    pub fn new(master: Vec<u8>) -> Result<Sessions, String> {
        if master.len() < 32 {
            return Err(format!(
                "the session master key has {} bytes; at least 32 are needed",
                master.len()
            ));
        }
        Ok(Sessions { master })
    }

    fn mac(&self, purpose: &str, data: &str) -> String {
        v4::calculate_signature(
            &self.master,
            format!("storefront-session-v1:{purpose}:{data}").as_bytes(),
        )
    }

    /// Credentials carrying `claims`.
    pub fn mint(&self, claims: &SessionClaims) -> SessionCredentials {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(claims).expect("claims serialise"));
        let token = format!("{payload}.{}", self.mac("seal", &payload));
        let access_key = format!("ASIA{}", self.mac("akid", &token)[..16].to_ascii_uppercase());
        let secret_key = self.mac("secret", &token)[..40].to_owned();
        SessionCredentials {
            access_key,
            secret_key,
            token,
            expiration: UNIX_EPOCH + Duration::from_secs(claims.exp),
        }
    }

    /// The key and identity of a session, if `token` is one this master key sealed, for
    /// `access_key`, and not expired at `now`.
    pub fn open(&self, access_key: &str, token: &str, now: SystemTime) -> Result<(AccessKey, Principal), Rejection> {
        use base64::Engine as _;
        let invalid = || {
            reject(
                ErrorCode::InvalidAccessKeyId,
                "The security token included in the request is invalid.",
            )
        };
        let (payload, mac) = token.split_once('.').ok_or_else(invalid)?;
        if !bool::from(self.mac("seal", payload).as_bytes().ct_eq(mac.as_bytes())) {
            return Err(invalid());
        }
        let derived = format!("ASIA{}", self.mac("akid", token)[..16].to_ascii_uppercase());
        if !bool::from(derived.as_bytes().ct_eq(access_key.as_bytes())) {
            return Err(invalid());
        }
        let claims: SessionClaims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(invalid)?;
        if now >= UNIX_EPOCH + Duration::from_secs(claims.exp) {
            return Err(reject(ErrorCode::ExpiredToken, "The provided token has expired."));
        }
        let mut principal = Principal::new(format!("sa:{}/{}", claims.ns, claims.sa), Source::Session);
        principal.namespace = Some(claims.ns);
        principal.service_account = Some(claims.sa);
        let key = AccessKey {
            access_key: access_key.to_owned(),
            secret_key: self.mac("secret", token)[..40].to_owned(),
            name: Some(principal.name.clone()),
            zone: None,
        };
        Ok((key, principal))
    }
}
