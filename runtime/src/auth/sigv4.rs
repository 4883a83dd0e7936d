//! Verifying callers' SigV4 signatures (Authorization header and presigned URLs) against the
//! access keys the proxy holds, by recomputing them with the aws-sigv4 crate and comparing in
//! constant time. Time-bound: the signature's time must be within `max_clock_skew` of the
//! proxy's clock, and a presigned URL must not have expired.
//!
//! What is checked: the key is known; the credential scope is `<date>/<region>/s3/aws4_request`
//! with the date of `x-amz-date`; the signature over the signed headers, the method, the exact
//! path and query and the declared payload hash. Payload integrity itself (a body matching its
//! declared SHA-256) is left to the backend, which receives the declared hash in the proxy's own
//! signature and refuses a body that does not match it. Signed aws-chunked uploads
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`) get a [`ChunkVerifier`] that checks every
//! chunk's signature, and the trailers', as the body streams: a bad one ends the body with an
//! error before its end, so the backend never commits the upload.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity as SigningIdentity;
use sha2::{Digest, Sha256};
use storefront_core::auth::{Principal, Source};
use storefront_core::config::AccessKey;
use storefront_core::s3::ErrorCode;
use storefront_core::s3::chunked::{ChunkedError, ChunkedEvent};
use subtle::ConstantTimeEq;

use super::sessions::Sessions;
pub use super::{Rejection, reject};

/// Presigned URLs live at most this long (S3's limit).
const PRESIGNED_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// The access keys a generation verifies with, and the sessions it issued.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    keys: HashMap<String, AccessKey>,
    sessions: Option<Sessions>,
}

/// The session token a request carries (header, or presigned query parameter).
fn session_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(value) = parts.headers.get("x-amz-security-token") {
        return value.to_str().ok().map(str::to_owned);
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("X-Amz-Security-Token=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|token| token.into_owned())
    })
}

/// Whether the request carries a session token at all (readable or not).
fn carries_session_token(parts: &http::request::Parts) -> bool {
    parts.headers.contains_key("x-amz-security-token")
        || parts
            .uri
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("X-Amz-Security-Token=")))
}

/// The parts of a SigV4 signature, wherever it was carried.
struct Signature<'a> {
    access_key: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    amz_date: &'a str,
    /// Presigned: how long the URL is valid.
    expires: Option<Duration>,
}

impl KeyStore {
    /// A store of `keys` (later entries win over earlier ones with the same id).
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> KeyStore {
        KeyStore {
            keys: keys.into_iter().map(|key| (key.access_key.clone(), key)).collect(),
            sessions: None,
        }
    }

    /// Also accept session credentials sealed by `sessions`.
    pub fn with_sessions(mut self, sessions: Sessions) -> KeyStore {
        self.sessions = Some(sessions);
        self
    }

    /// The static key `id` (not sessions: SigV2 has none).
    pub fn static_key(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key `access_key` names: a static key (refused with a session token beside it,
    /// `carries_token`, as S3 refuses garbage tokens), or a session this proxy issued, opened
    /// with `token`; for a session, also its principal.
    pub fn resolve(
        &self,
        access_key: &str,
        token: Option<&str>,
        carries_token: bool,
        now: SystemTime,
    ) -> Result<(std::borrow::Cow<'_, AccessKey>, Option<Principal>), Rejection> {
        let unknown = || {
            reject(
                ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        };
        match (self.keys.get(access_key), &self.sessions) {
            (Some(_), _) if carries_token => Err(reject(
                ErrorCode::InvalidToken,
                "The provided token is malformed or otherwise invalid.",
            )),
            (Some(key), _) => Ok((std::borrow::Cow::Borrowed(key), None)),
            (None, Some(sessions)) if access_key.starts_with("ASIA") => {
                let token = token.ok_or_else(unknown)?;
                let (key, principal) = sessions.open(access_key, token, now)?;
                Ok((std::borrow::Cow::Owned(key), Some(principal)))
            }
            _ => Err(unknown()),
        }
    }

    /// Verify `parts` if it carries a SigV4 signature: `Ok(None)` when it is not signed,
    /// `Ok(Some(verified))` for a valid signature, `Err` otherwise.
    pub fn verify(
        &self,
        parts: &http::request::Parts,
        now: SystemTime,
        max_skew: Duration,
    ) -> Result<Option<Verified>, Rejection> {
        let Some(signature) = parse(parts)? else {
            return Ok(None);
        };
        let (key, session) = self.resolve(
            signature.access_key,
            session_token(parts).as_deref(),
            carries_session_token(parts),
            now,
        )?;
        let key = key.as_ref();
        if signature.service != "s3" || signature.terminator != "aws4_request" {
            return Err(reject(
                ErrorCode::AuthorizationHeaderMalformed,
                "the credential scope must end in /s3/aws4_request",
            ));
        }
        if !signature.amz_date.starts_with(signature.scope_date) || signature.scope_date.len() != 8 {
            return Err(reject(
                ErrorCode::AuthorizationHeaderMalformed,
                "the credential scope's date is not the date of X-Amz-Date",
            ));
        }
        let signed_at = parse_amz_date(signature.amz_date).ok_or_else(|| {
            reject(
                ErrorCode::AccessDenied,
                "X-Amz-Date is not of the form YYYYMMDDTHHMMSSZ",
            )
        })?;
        let skew = match now.duration_since(signed_at) {
            Ok(age) => age,
            Err(ahead) => ahead.duration(),
        };
        match signature.expires {
            Some(expires) => {
                if expires > PRESIGNED_MAX {
                    return Err(reject(ErrorCode::AccessDenied, "X-Amz-Expires must be at most 7 days"));
                }
                if signed_at > now + max_skew {
                    return Err(reject(
                        ErrorCode::RequestTimeTooSkewed,
                        "the presigned URL is dated in the future",
                    ));
                }
                if now > signed_at + expires {
                    return Err(reject(ErrorCode::AccessDenied, "Request has expired"));
                }
            }
            None if skew > max_skew => {
                return Err(reject(
                    ErrorCode::RequestTimeTooSkewed,
                    "The difference between the request time and the current time is too large.",
                ));
            }
            None => {}
        }
        let expected = recompute(parts, &signature, key, signed_at)?;
        if !bool::from(expected.as_bytes().ct_eq(signature.signature.as_bytes())) {
            return Err(reject(
                ErrorCode::SignatureDoesNotMatch,
                "The request signature we calculated does not match the signature you provided.",
            ));
        }
        let principal = session.unwrap_or_else(|| principal_of(key));
        let streaming = parts
            .headers
            .get("x-amz-content-sha256")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|declared| declared.starts_with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"));
        let chunks = (streaming && signature.expires.is_none()).then(|| ChunkVerifier {
            key: v4::generate_signing_key(&key.secret_key, signed_at, signature.region, "s3")
                .as_ref()
                .to_vec(),
            scope: format!(
                "{}\n{}/{}/s3/aws4_request\n",
                signature.amz_date, signature.scope_date, signature.region
            ),
            previous: signature.signature.to_owned(),
            pending: None,
            trailers: Vec::new(),
        });
        Ok(Some(Verified { principal, chunks }))
    }
}

/// The identity of a static key: `key:<name>` (its access key when it has no name).
pub fn principal_of(key: &AccessKey) -> Principal {
    let name = key.name.clone().unwrap_or_else(|| key.access_key.clone());
    let mut principal = Principal::new(format!("key:{name}"), Source::AccessKey);
    principal.access_key = Some(key.access_key.clone());
    principal.zone = key.zone.clone();
    principal
}

/// A verified signature: who signed, and for a signed aws-chunked body, its chunk verifier.
#[derive(Debug)]
pub struct Verified {
    /// The key's identity.
    pub principal: Principal,
    /// Checks the body's chunk signatures (signed aws-chunked uploads only).
    pub chunks: Option<ChunkVerifier>,
}

/// SHA-256 of nothing, hex (every chunk's string to sign quotes it).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Checks the signatures of a signed aws-chunked body, chained from the request's signature.
pub struct ChunkVerifier {
    key: Vec<u8>,
    /// `<x-amz-date>\n<scope>\n`.
    scope: String,
    previous: String,
    /// The signature announced for the chunk being read, and the hash of its data so far.
    pending: Option<(String, Sha256)>,
    trailers: Vec<(String, String)>,
}

impl std::fmt::Debug for ChunkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("previous", &self.previous)
            .finish()
    }
}

impl ChunkVerifier {
    /// Take the decoder's next event; an error as soon as a signature is known to be wrong.
    pub fn observe(&mut self, event: &ChunkedEvent) -> Result<(), ChunkedError> {
        match event {
            ChunkedEvent::Chunk { signature, .. } => {
                self.close_chunk()?;
                let announced = signature.clone().ok_or(ChunkedError::BadSignature)?;
                self.pending = Some((announced, Sha256::new()));
            }
            ChunkedEvent::Data(data) => match self.pending.as_mut() {
                Some((_, hasher)) => hasher.update(data),
                None => return Err(ChunkedError::BadSignature),
            },
            ChunkedEvent::Trailer { name, value } => {
                self.close_chunk()?;
                if name == "x-amz-trailer-signature" {
                    let mut sorted = self.trailers.clone();
                    sorted.sort();
                    let canonical: String = sorted.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
                    let string_to_sign = format!(
                        "AWS4-HMAC-SHA256-TRAILER\n{}{}\n{}",
                        self.scope,
                        self.previous,
                        hex::encode(Sha256::digest(canonical.as_bytes()))
                    );
                    self.check(&string_to_sign, value)?;
                    self.trailers.clear();
                } else {
                    self.trailers.push((name.clone(), value.clone()));
                }
            }
            ChunkedEvent::End => {
                self.close_chunk()?;
                if !self.trailers.is_empty() {
                    // Trailers a signed stream carries must be signed.
                    return Err(ChunkedError::BadSignature);
                }
            }
        }
        Ok(())
    }

    fn close_chunk(&mut self) -> Result<(), ChunkedError> {
        if let Some((announced, hasher)) = self.pending.take() {
            let string_to_sign = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}{}\n{EMPTY_SHA256}\n{}",
                self.scope,
                self.previous,
                hex::encode(hasher.finalize())
            );
            self.check(&string_to_sign, &announced)?;
        }
        Ok(())
    }

    fn check(&mut self, string_to_sign: &str, announced: &str) -> Result<(), ChunkedError> {
        let expected = v4::calculate_signature(&self.key, string_to_sign.as_bytes());
        if !bool::from(expected.as_bytes().ct_eq(announced.as_bytes())) {
            return Err(ChunkedError::BadSignature);
        }
        self.previous = announced.to_owned();
        Ok(())
    }
}

/// The signature `parts` carries, if any.
fn parse(parts: &http::request::Parts) -> Result<Option<Signature<'_>>, Rejection> {
    let malformed = |what: &str| reject(ErrorCode::AuthorizationHeaderMalformed, what.to_owned());
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION) {
        let header = header
            .to_str()
            .map_err(|_| malformed("the Authorization header is not text"))?;
        let Some(fields) = header.strip_prefix("AWS4-HMAC-SHA256 ") else {
            return Err(reject(
                ErrorCode::AccessDenied,
                "only AWS4-HMAC-SHA256 signatures are accepted",
            ));
        };
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for field in fields.split(',') {
            match field.trim().split_once('=') {
                Some(("Credential", value)) => credential = Some(value),
                Some(("SignedHeaders", value)) => signed_headers = Some(value),
                Some(("Signature", value)) => signature = Some(value),
                _ => return Err(malformed("the Authorization header has an unknown field")),
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
            return Err(malformed(
                "the Authorization header needs Credential, SignedHeaders and Signature",
            ));
        };
        let amz_date = parts
            .headers
            .get("x-amz-date")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| reject(ErrorCode::AccessDenied, "a signed request needs X-Amz-Date"))?;
        return scoped(credential, signed_headers, signature, amz_date, None).map(Some);
    }
    let Some(query) = parts.uri.query() else {
        return Ok(None);
    };
    let mut found: HashMap<&str, &str> = HashMap::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.starts_with("X-Amz-") {
            found.insert(name, value);
        }
    }
    let Some(signature) = found.get("X-Amz-Signature") else {
        return Ok(None);
    };
    if found.get("X-Amz-Algorithm") != Some(&"AWS4-HMAC-SHA256") {
        return Err(reject(
            ErrorCode::AccessDenied,
            "only AWS4-HMAC-SHA256 signatures are accepted",
        ));
    }
    let field = |name: &str| {
        found
            .get(name)
            .copied()
            .ok_or_else(|| reject(ErrorCode::AccessDenied, format!("a presigned URL needs {name}")))
    };
    let expires = field("X-Amz-Expires")?
        .parse::<u64>()
        .map_err(|_| reject(ErrorCode::AccessDenied, "X-Amz-Expires is not a number of seconds"))?;
    scoped(
        field("X-Amz-Credential")?,
        field("X-Amz-SignedHeaders")?,
        signature,
        field("X-Amz-Date")?,
        Some(Duration::from_secs(expires)),
    )
    .map(Some)
}

/// Split a credential (`AKID/date/region/service/aws4_request`, `/` possibly as `%2F`).
fn scoped<'a>(
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    amz_date: &'a str,
    expires: Option<Duration>,
) -> Result<Signature<'a>, Rejection> {
    let separator = if credential.contains("%2F") { "%2F" } else { "/" };
    let parts: Vec<&str> = credential.split(separator).collect();
    let [access_key, scope_date, region, service, terminator] = parts[..] else {
        return Err(reject(
            ErrorCode::AuthorizationHeaderMalformed,
            "the credential must be AccessKeyId/date/region/service/aws4_request",
        ));
    };
    let separator = if signed_headers.contains("%3B") { "%3B" } else { ";" };
    Ok(Signature {
        access_key,
        scope_date,
        region,
        service,
        terminator,
        signed_headers: signed_headers.split(separator).collect(),
        signature,
        amz_date,
        expires,
    })
}

/// The signature aws-sigv4 computes for what the client says it signed.
fn recompute(
    parts: &http::request::Parts,
    signature: &Signature<'_>,
    key: &AccessKey,
    signed_at: SystemTime,
) -> Result<String, Rejection> {
    let failed = |error: &dyn std::fmt::Display| reject(ErrorCode::SignatureDoesNotMatch, error.to_string());
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    // Sign exactly the headers the client listed: none is excluded, none added but the date
    // (and the payload hash when the client signed it).
    settings.excluded_headers = Some(Vec::new());
    let authority = parts.uri.authority().map(|authority| authority.as_str().to_owned());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in &signature.signed_headers {
        let values: Vec<&str> = parts
            .headers
            .get_all(*name)
            .iter()
            // As bytes, as S3 canonicalises them: UTF-8 in a value (user metadata such as
            // `x-amz-meta-name: é`) is signed as sent, not dropped.
            .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
            .collect();
        if values.is_empty() {
            match (*name, authority.as_deref()) {
                // HTTP/2 carries the host as :authority.
                ("host", Some(authority)) => headers.push(("host", authority)),
                _ => {
                    return Err(reject(
                        ErrorCode::SignatureDoesNotMatch,
                        format!("signed header `{name}` is not in the request"),
                    ));
                }
            }
        }
        headers.extend(values.into_iter().map(|value| (*name, value)));
    }
    let body = match signature.expires {
        Some(expires) => {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(expires);
            SignableBody::UnsignedPayload
        }
        None => {
            let declared = parts
                .headers
                .get("x-amz-content-sha256")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("UNSIGNED-PAYLOAD");
            if signature.signed_headers.contains(&"x-amz-content-sha256") {
                settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            }
            SignableBody::Precomputed(declared.to_owned())
        }
    };
    // Presigned: the query without the signature's own parameters (the signer adds them back).
    let uri = match signature.expires {
        Some(_) => {
            let kept: Vec<&str> = parts
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                    !matches!(
                        name,
                        "X-Amz-Algorithm"
                            | "X-Amz-Credential"
                            | "X-Amz-Date"
                            | "X-Amz-Expires"
                            | "X-Amz-SignedHeaders"
                            | "X-Amz-Signature"
                    ) && !pair.is_empty()
                })
                .collect();
            if kept.is_empty() {
                parts.uri.path().to_owned()
            } else {
                format!("{}?{}", parts.uri.path(), kept.join("&"))
            }
        }
        None => parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |path| path.as_str().to_owned()),
    };
    let identity: SigningIdentity = Credentials::new(&key.access_key, &key.secret_key, None, None, "keys").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(signature.region)
        .name("s3")
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|error| failed(&error))?
        .into();
    let signable =
        SignableRequest::new(parts.method.as_str(), uri, headers.into_iter(), body).map_err(|error| failed(&error))?;
    let output = sign(signable, &params).map_err(|error| failed(&error))?;
    Ok(output.signature().to_owned())
}

/// `YYYYMMDDTHHMMSSZ` as a time.
pub(crate) fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .ok()
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse_to_the_right_instant() {
        // Proves the date arithmetic against known instants, and rejection of malformed ones.
        let at =
            |text: &str| parse_amz_date(text).map(|time| time.duration_since(UNIX_EPOCH).expect("after").as_secs());
        assert_eq!(at("19700101T000000Z"), Some(0));
        assert_eq!(at("20000229T120000Z"), Some(951_825_600));
        assert_eq!(at("20261127T101500Z"), Some(1_795_774_500));
        for bad in ["2026-11-27T10:15:00Z", "20261327T101500Z", "20261127T101500", "x"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }
}
