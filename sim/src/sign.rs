//! Clients that sign as the SDKs do (SigV4 through aws-sigv4): in the header with the
//! payload's SHA-256, in the query string (presigned), or in the header with the upload as a
//! signed aws-chunked stream. The time signed is the simulation's wall clock, the same epoch
//! the proxies verify against, so a run replays byte for byte.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use sha2::Digest;

use crate::scenario::Signing;

/// The region every scenario's proxies verify for (the proxy's default).
const REGION: &str = "us-east-1";
/// How long a presigned URL is valid.
const PRESIGNED_FOR: Duration = Duration::from_secs(900);
/// Bytes per chunk of a signed aws-chunked upload (the SDKs use 64 KiB).
const CHUNK: usize = 64 * 1024;

/// Credentials a client signs with.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Session token (session credentials from the token exchange).
    pub session_token: Option<String>,
}

/// The simulation's wall clock: the storage nodes' epoch plus simulated time since `start`
/// (every host starts at simulated time zero).
pub fn wall_clock(start: tokio::time::Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s3_mock::clock::BASE_UNIX_SECONDS) + start.elapsed()
}

fn settings(signing: Signing) -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    if signing == Signing::Presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(PRESIGNED_FOR);
    }
    settings
}

/// Sign `request` (its headers final, Host included) with `keys` at `time`, the way `signing`
/// says; a signed-chunk upload has its body re-encoded as aws-chunked. The body is returned.
pub fn sign_request(
    request: &mut http::Request<()>,
    body: Bytes,
    signing: Signing,
    keys: &Keys,
    time: SystemTime,
) -> Result<Bytes, String> {
    let identity: Identity = aws_credential_types::Credentials::new(
        keys.access_key.clone(),
        keys.secret_key.clone(),
        keys.session_token.clone(),
        None,
        "sim",
    )
    .into();
    let settings = settings(signing);
    let params = || {
        v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(time)
            .settings(settings.clone())
            .build()
            .map_err(|error| error.to_string())
    };
    let chunked = signing == Signing::Chunked && !body.is_empty();
    if chunked {
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("aws-chunked"),
        );
        headers.insert("x-amz-decoded-content-length", http::HeaderValue::from(body.len()));
    }
    let payload = match signing {
        Signing::Presigned => SignableBody::UnsignedPayload,
        Signing::Chunked if chunked => SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_owned()),
        _ => SignableBody::Precomputed(hex::encode(sha2::Sha256::digest(&body))),
    };
    let uri = request.uri().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        payload,
    )
    .map_err(|error| error.to_string())?;
    let (instructions, seed) = sign(signable, &params()?.into())
        .map_err(|error| error.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    if !chunked {
        return Ok(body);
    }
    // Each chunk signs its bytes and the previous chunk's signature; an empty chunk ends it.
    let mut encoded = Vec::with_capacity(body.len() + body.len() / CHUNK * 100 + 200);
    let mut previous = seed;
    let chunks = body.chunks(CHUNK).chain(std::iter::once(&[][..]));
    for chunk in chunks {
        let signature = v4::sign_chunk(&Bytes::copy_from_slice(chunk), &previous, &params()?)
            .map_err(|error| error.to_string())?
            .signature()
            .to_owned();
        encoded.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
        previous = signature;
    }
    Ok(Bytes::from(encoded))
}
