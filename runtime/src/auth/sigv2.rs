//! Verifying AWS Signature Version 2 (`Authorization: AWS <key>:<signature>`, and presigned
//! URLs with `AWSAccessKeyId`, `Expires` and `Signature`), for old tools and SDKs that still
//! sign this way (`aws s3 presign` of awscli v1, `s3cmd signurl`, boto3 with
//! `signature_version='s3'`). Off unless `auth.sigv2 = true`: SigV2 is HMAC-SHA1 over a
//! canonical form that binds neither the payload nor a region or service, and AWS has
//! retired it; accept it only where such clients must be served.
//!
//! The string to sign, as S3 defines it: the method, `Content-MD5`, `Content-Type`, the date
//! (the `Date` header, empty when `x-amz-date` is given, or `Expires` for a presigned URL),
//! the `x-amz-*` headers (lowercased, sorted, values trimmed, repeats joined by commas), and
//! the resource: `/bucket/key` as sent plus the sub-resources S3 lists, sorted. Compared in
//! constant time against the same keys SigV4 uses; a header signature must be within
//! `max_clock_skew`, a presigned URL must not have expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use storefront_core::s3::ErrorCode;
use subtle::ConstantTimeEq;

use super::sigv4::{KeyStore, Verified};
use super::{Rejection, reject};

/// The query parameters that are part of SigV2's canonical resource.
const SUB_RESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// A SigV2 signature, wherever it was carried.
struct Signature {
    access_key: String,
    signature: String,
    /// Presigned: when the URL expires.
    expires: Option<SystemTime>,
}

/// Whether `parts` is signed with SigV2 (header or query), whatever `auth.sigv2` says.
pub fn is_signed(parts: &http::request::Parts) -> bool {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes().starts_with(b"AWS "));
    header
        || parts
            .uri
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("AWSAccessKeyId=")))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|value| value.into_owned())
    })
}

fn parse(parts: &http::request::Parts) -> Result<Signature, Rejection> {
    let malformed = |what: &str| reject(ErrorCode::AuthorizationHeaderMalformed, what.to_owned());
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION) {
        let text = header
            .to_str()
            .map_err(|_| malformed("the Authorization header is not text"))?;
        let (access_key, signature) = text
            .strip_prefix("AWS ")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| malformed("a SigV2 Authorization header is `AWS <key>:<signature>`"))?;
        return Ok(Signature {
            access_key: access_key.to_owned(),
            signature: signature.to_owned(),
            expires: None,
        });
    }
    let query = parts.uri.query().unwrap_or("");
    let (Some(access_key), Some(signature), Some(expires)) = (
        query_value(query, "AWSAccessKeyId"),
        query_value(query, "Signature"),
        query_value(query, "Expires"),
    ) else {
        return Err(reject(
            ErrorCode::AccessDenied,
            "a SigV2 presigned URL needs AWSAccessKeyId, Signature and Expires",
        ));
    };
    let expires = expires
        .parse::<u64>()
        .map_err(|_| reject(ErrorCode::AccessDenied, "Expires is not a number of seconds"))?;
    Ok(Signature {
        access_key,
        signature,
        expires: Some(UNIX_EPOCH + Duration::from_secs(expires)),
    })
}

/// The string a SigV2 signature signs, for `parts` dated `date`.
fn string_to_sign(parts: &http::request::Parts, date: &str, bucket_host: Option<&str>) -> String {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let mut text = format!(
        "{}\n{}\n{}\n{date}\n",
        parts.method.as_str(),
        header("content-md5"),
        header("content-type")
    );
    let mut amz: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if !name.starts_with("x-amz-") {
            continue;
        }
        let value = std::str::from_utf8(value.as_bytes()).unwrap_or("").trim().to_owned();
        match amz.iter_mut().find(|(known, _)| known == name) {
            Some((_, values)) => values.push(value),
            None => amz.push((name.to_owned(), vec![value])),
        }
    }
    amz.sort();
    for (name, values) in amz {
        text.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // The resource: virtual-host style puts the bucket in front of the path.
    if let Some(bucket) = bucket_host {
        text.push('/');
        text.push_str(bucket);
    }
    text.push_str(parts.uri.path());
    let mut sub: Vec<(String, Option<String>)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            SUB_RESOURCES.contains(&name).then(|| {
                let value = value.map(|value| {
                    percent_encoding::percent_decode_str(value)
                        .decode_utf8_lossy()
                        .into_owned()
                });
                (name.to_owned(), value)
            })
        })
        .collect();
    sub.sort();
    for (index, (name, value)) in sub.iter().enumerate() {
        text.push(if index == 0 { '?' } else { '&' });
        text.push_str(name);
        if let Some(value) = value {
            text.push('=');
            text.push_str(value);
        }
    }
    text
}

/// Verify the SigV2 signature of `parts` (signed: see [`is_signed`]) against `keys`.
/// `bucket_host` is the bucket when the request is virtual-host style.
pub fn verify(
    keys: &KeyStore,
    parts: &http::request::Parts,
    bucket_host: Option<&str>,
    now: SystemTime,
    max_skew: Duration,
) -> Result<Verified, Rejection> {
    let signature = parse(parts)?;
    let key = keys.static_key(&signature.access_key).ok_or_else(|| {
        reject(
            ErrorCode::InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    })?;
    let date = match signature.expires {
        Some(expires) => {
            if now > expires {
                return Err(reject(ErrorCode::AccessDenied, "Request has expired"));
            }
            expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
                .to_string()
        }
        None => {
            let dated = ["x-amz-date", "date"].into_iter().find_map(|name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(|value| (name, value))
            });
            let Some((name, value)) = dated else {
                return Err(reject(
                    ErrorCode::AccessDenied,
                    "a SigV2 request needs a Date or x-amz-date header",
                ));
            };
            let signed_at = httpdate::parse_http_date(value)
                .map_err(|_| reject(ErrorCode::AccessDenied, format!("{name} is not an HTTP date")))?;
            let skew = match now.duration_since(signed_at) {
                Ok(age) => age,
                Err(ahead) => ahead.duration(),
            };
            if skew > max_skew {
                return Err(reject(
                    ErrorCode::RequestTimeTooSkewed,
                    "The difference between the request time and the current time is too large.",
                ));
            }
            // With x-amz-date the date position is empty (the header is signed among x-amz-*).
            if name == "x-amz-date" {
                String::new()
            } else {
                value.to_owned()
            }
        }
    };
    let text = string_to_sign(parts, &date, bucket_host);
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(key.secret_key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if !bool::from(expected.as_bytes().ct_eq(signature.signature.as_bytes())) {
        return Err(reject(
            ErrorCode::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(Verified {
        principal: super::sigv4::principal_of(key),
        chunks: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_is_s3s() {
        // Proves the canonical form against the example of S3's SigV2 documentation (a GET of
        // /awsexamplebucket1/photos/puppy.jpg dated Tue, 27 Mar 2007 19:36:42 +0000), and that
        // x-amz-* headers are lowercased, sorted and joined, and sub-resources kept and sorted.
        let (parts, ()) = http::Request::get("/awsexamplebucket1/photos/puppy.jpg")
            .header("host", "s3.us-west-1.amazonaws.com")
            .header("date", "Tue, 27 Mar 2007 19:36:42 +0000")
            .body(())
            .expect("request")
            .into_parts();
        let text = string_to_sign(&parts, "Tue, 27 Mar 2007 19:36:42 +0000", None);
        assert_eq!(
            text,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        );
        let mut mac =
            hmac::Hmac::<sha1::Sha1>::new_from_slice(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY").expect("key");
        mac.update(text.as_bytes());
        let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature, "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=");

        let (parts, ()) = http::Request::put("/b/k?uploadId=u1&partNumber=2&foo=bar")
            .header("content-type", "text/plain")
            .header("X-Amz-Meta-B", " two ")
            .header("x-amz-meta-a", "one")
            .header("x-amz-meta-b", "three")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(
            string_to_sign(&parts, "D", None),
            "PUT\n\ntext/plain\nD\nx-amz-meta-a:one\nx-amz-meta-b:two,three\n/b/k?partNumber=2&uploadId=u1"
        );
    }
}
