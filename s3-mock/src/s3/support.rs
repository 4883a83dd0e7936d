//! What the node's S3 operations share: reading and verifying upload bodies and their
//! checksums, conditional requests, error mapping, listing pages and their tokens.

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::*;
use s3s::{S3Error, S3Result, s3_error};

use crate::store::{Checksums, Object as StoredObject, Store, StoreError, StoredHeaders};

use super::BODY_LENGTH_MAX;

pub(super) fn store_error(error: StoreError) -> S3Error {
    match error {
        StoreError::NoSuchBucket => s3_error!(NoSuchBucket, "The specified bucket does not exist"),
        StoreError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
        StoreError::NoSuchUpload => s3_error!(NoSuchUpload, "The specified upload does not exist."),
        StoreError::BucketAlreadyOwnedByYou => s3_error!(BucketAlreadyOwnedByYou),
        StoreError::BucketNotEmpty => s3_error!(BucketNotEmpty, "The bucket you tried to delete is not empty"),
        StoreError::InvalidPart => s3_error!(InvalidPart),
        StoreError::InvalidPartOrder => s3_error!(InvalidPartOrder),
        StoreError::EntityTooSmall => s3_error!(EntityTooSmall),
        StoreError::InvalidBucketName => s3_error!(InvalidBucketName),
    }
}

/// Read a request body whole, feeding the checksum hasher. A body that breaks off (the client
/// went away mid-upload) is an error, so nothing truncated is ever stored.
pub(super) async fn read_body(body: Option<StreamingBlob>, hasher: &mut ChecksumHasher) -> S3Result<Bytes> {
    let Some(mut body) = body else {
        return Ok(Bytes::new());
    };
    let mut data = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| s3_error!(IncompleteBody, "request body broke off: {error}"))?;
        if data.len() + chunk.len() > BODY_LENGTH_MAX {
            return Err(s3_error!(EntityTooLarge));
        }
        hasher.update(&chunk);
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

/// The checksum algorithms the client asked for, by header, trailer announcement or
/// `x-amz-sdk-checksum-algorithm`.
pub(super) fn hasher_for(
    headers: &http::HeaderMap,
    sent: &Checksums,
    algorithm: Option<&ChecksumAlgorithm>,
) -> ChecksumHasher {
    let trailer = headers
        .get("x-amz-trailer")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let named = algorithm
        .map(|algorithm| algorithm.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    let wants = |name: &str, sent: &Option<String>| {
        sent.is_some() || trailer.contains(&format!("x-amz-checksum-{name}")) || named == name
    };
    ChecksumHasher {
        crc32: wants("crc32", &sent.crc32).then(s3s::crypto::Crc32::new),
        crc32c: wants("crc32c", &sent.crc32c).then(s3s::crypto::Crc32c::new),
        sha1: wants("sha1", &sent.sha1).then(s3s::crypto::Sha1::new),
        sha256: wants("sha256", &sent.sha256).then(s3s::crypto::Sha256::new),
        crc64nvme: wants("crc64nvme", &sent.crc64nvme).then(s3s::crypto::Crc64Nvme::new),
    }
}

/// What a request says about the body it uploads.
pub(super) struct Upload<'a> {
    pub(super) headers: &'a http::HeaderMap,
    pub(super) trailers: Option<&'a s3s::TrailingHeaders>,
    pub(super) algorithm: Option<&'a ChecksumAlgorithm>,
    pub(super) content_md5: Option<&'a str>,
}

/// Read an upload's body whole and verify every checksum its client claimed (headers,
/// trailers, Content-MD5); returns the body and the checksums the object keeps.
pub(super) async fn receive_body(
    body: Option<StreamingBlob>,
    sent: Checksums,
    upload: Upload<'_>,
) -> S3Result<(Bytes, Checksums)> {
    let mut hasher = hasher_for(upload.headers, &sent, upload.algorithm);
    let data = read_body(body, &mut hasher).await?;
    let checksums = verify_checksums(sent, hasher, upload.trailers, upload.content_md5, &data)?;
    Ok((data, checksums))
}

/// Compare what the client claimed (headers, or trailers once the body is read) with what the
/// body hashes to; the computed values are what the object keeps.
pub(super) fn verify_checksums(
    mut claimed: Checksums,
    hasher: ChecksumHasher,
    trailers: Option<&s3s::TrailingHeaders>,
    content_md5: Option<&str>,
    data: &[u8],
) -> S3Result<Checksums> {
    if let Some(trailers) = trailers.and_then(s3s::TrailingHeaders::take) {
        let value = |name: &str| trailers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        claimed.crc32 = claimed.crc32.or(value("x-amz-checksum-crc32"));
        claimed.crc32c = claimed.crc32c.or(value("x-amz-checksum-crc32c"));
        claimed.sha1 = claimed.sha1.or(value("x-amz-checksum-sha1"));
        claimed.sha256 = claimed.sha256.or(value("x-amz-checksum-sha256"));
        claimed.crc64nvme = claimed.crc64nvme.or(value("x-amz-checksum-crc64nvme"));
    }
    let computed = hasher.finalize();
    for (name, claim, actual) in [
        ("crc32", &claimed.crc32, &computed.checksum_crc32),
        ("crc32c", &claimed.crc32c, &computed.checksum_crc32c),
        ("sha1", &claimed.sha1, &computed.checksum_sha1),
        ("sha256", &claimed.sha256, &computed.checksum_sha256),
        ("crc64nvme", &claimed.crc64nvme, &computed.checksum_crc64nvme),
    ] {
        if let Some(claim) = claim
            && Some(claim) != actual.as_ref()
        {
            return Err(s3_error!(BadDigest, "x-amz-checksum-{name} does not match the body"));
        }
    }
    if let Some(content_md5) = content_md5 {
        let expected = base64::engine::general_purpose::STANDARD
            .decode(content_md5)
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if expected.as_slice() != s3s::crypto::Md5::checksum(data).as_ref() {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
    }
    Ok(Checksums {
        crc32: computed.checksum_crc32,
        crc32c: computed.checksum_crc32c,
        sha1: computed.checksum_sha1,
        sha256: computed.checksum_sha256,
        crc64nvme: computed.checksum_crc64nvme,
    })
}

/// S3's answer to `?partNumber=` beyond the object's parts (s3s has no variant for it).
pub(super) fn invalid_part_number() -> S3Error {
    let mut error = S3Error::with_message(
        s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
        "The requested partnumber is not satisfiable",
    );
    error.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    error
}

pub(super) fn timestamp(time: SystemTime) -> Timestamp {
    Timestamp::from(time)
}

pub(super) fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

/// Evaluate conditional-request headers against an object (RFC 9110 §13.2.2 order).
pub(super) fn check_conditions(
    object_etag: &str,
    modified: SystemTime,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == object_etag,
    };
    // HTTP dates have second resolution.
    let modified_secs = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = |stamp: &Timestamp| {
        let time: time::OffsetDateTime = stamp.clone().into();
        u64::try_from(time.unix_timestamp()).unwrap_or(0)
    };
    if let Some(condition) = if_match {
        if !matches(condition) {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    } else if let Some(since) = if_unmodified_since
        && modified_secs > secs(since)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    if let Some(condition) = if_none_match {
        if matches(condition) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(since) = if_modified_since
        && modified_secs <= secs(since)
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

/// A copy's `x-amz-copy-source-if-*` conditions.
pub(super) struct CopyConditions<'a> {
    pub(super) if_match: Option<&'a ETagCondition>,
    pub(super) if_none_match: Option<&'a ETagCondition>,
    pub(super) if_modified_since: Option<&'a Timestamp>,
    pub(super) if_unmodified_since: Option<&'a Timestamp>,
}

/// A copy's source object, its conditions checked: as `If-*` on a read, except that every
/// failed condition is `412 Precondition Failed` (a copy has nothing to answer 304 with).
pub(super) fn copy_source<'s>(
    store: &'s Store,
    (bucket, key): (&str, &str),
    conditions: CopyConditions<'_>,
) -> S3Result<&'s StoredObject> {
    let source = store.get_object(bucket, key).map_err(store_error)?;
    check_conditions(
        &source.etag,
        source.last_modified,
        conditions.if_match,
        conditions.if_none_match,
        conditions.if_modified_since,
        conditions.if_unmodified_since,
    )
    .map_err(|error| {
        if *error.code() == s3s::S3ErrorCode::NotModified {
            s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            )
        } else {
            error
        }
    })?;
    Ok(source)
}

/// The byte range `x-amz-copy-source-range: bytes=first-last` names in a source of `total`
/// bytes (both offsets inclusive, within the source).
pub(super) fn copy_source_range(text: &str, total: u64) -> S3Result<std::ops::Range<u64>> {
    let malformed = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = text
        .strip_prefix("bytes=")
        .and_then(|range| range.split_once('-'))
        .ok_or_else(malformed)?;
    let (first, last): (u64, u64) = (
        first.trim().parse().map_err(|_| malformed())?,
        last.trim().parse().map_err(|_| malformed())?,
    );
    if first > last {
        return Err(malformed());
    }
    if last >= total {
        return Err(s3_error!(InvalidRange, "The requested range is not satisfiable"));
    }
    Ok(first..last + 1)
}

/// A part's byte range (`None`: the whole object) and its object's part count.
pub(super) type PartRange = (Option<std::ops::Range<u64>>, Option<i32>);

/// The part `?partNumber=` names: its byte range (`None`: the whole object) and the object's
/// part count. `None` without a part number. A single-part object has one part, the whole.
pub(super) fn part_range(object: &StoredObject, part_number: Option<i32>) -> S3Result<Option<PartRange>> {
    let Some(number) = part_number else {
        return Ok(None);
    };
    match &object.part_sizes {
        Some(sizes) => {
            let index = usize::try_from(number - 1).ok().filter(|&index| index < sizes.len());
            let index = index.ok_or_else(invalid_part_number)?;
            let start: u64 = sizes[..index].iter().sum();
            Ok(Some((Some(start..start + sizes[index]), Some(sizes.len() as i32))))
        }
        None if number == 1 => Ok(Some((None, None))),
        None => Err(invalid_part_number()),
    }
}

/// The representation headers an upload sets, kept as sent (`Expires` as an HTTP date;
/// `aws-chunked` dropped from `Content-Encoding`: it framed the upload, not the object).
pub(super) fn stored_headers(
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
) -> StoredHeaders {
    let content_encoding = content_encoding
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("aws-chunked"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|value| !value.is_empty());
    let expires = expires.and_then(|expires| {
        let mut text = Vec::new();
        expires.format(TimestampFormat::HttpDate, &mut text).ok()?;
        String::from_utf8(text).ok()
    });
    StoredHeaders {
        cache_control,
        content_disposition,
        content_encoding,
        content_language,
        expires,
    }
}

/// The `Expires` an object returns.
pub(super) fn expires_of(headers: &StoredHeaders) -> Option<Timestamp> {
    headers
        .expires
        .as_deref()
        .and_then(|text| Timestamp::parse(TimestampFormat::HttpDate, text).ok())
}

pub(super) fn metadata(user: &HashMap<String, String>) -> Option<Metadata> {
    (!user.is_empty()).then(|| user.clone())
}

pub(super) fn sent_checksums(
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    crc64nvme: Option<String>,
) -> Checksums {
    Checksums {
        crc32,
        crc32c,
        sha1,
        sha256,
        crc64nvme,
    }
}

pub(super) fn max_keys(requested: Option<i32>) -> usize {
    requested.map_or(crate::store::MAX_KEYS_LIMIT, |value| {
        usize::try_from(value.max(0)).unwrap_or(0)
    })
}

pub(super) fn object_entry((key, size, tag, modified): (String, u64, String, SystemTime)) -> Object {
    Object {
        key: Some(key),
        size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
        e_tag: Some(etag(&tag)),
        last_modified: Some(timestamp(modified)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

/// With `encoding-type=url`, S3 percent-encodes the keys and prefixes it lists (every byte but
/// the unreserved ones and `/`), so keys with characters XML cannot carry, or that clients
/// would misread (`+`), survive the trip; clients decode them again.
pub(super) fn url_encoder(encoding: Option<&s3s::dto::EncodingType>) -> impl Fn(String) -> String + use<> {
    let encode = encoding.is_some_and(|encoding| encoding.as_str() == "url");
    move |text: String| {
        if !encode {
            return text;
        }
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }
}

/// A listing's objects, their keys passed through `encode` (see [`url_encoder`]).
pub(super) fn listed_objects(
    objects: Vec<(String, u64, String, SystemTime)>,
    encode: &impl Fn(String) -> String,
) -> Vec<Object> {
    objects
        .into_iter()
        .map(|(key, size, tag, modified)| object_entry((encode(key), size, tag, modified)))
        .collect()
}

pub(super) fn prefixes(list: Vec<String>) -> Option<Vec<CommonPrefix>> {
    (!list.is_empty()).then(|| {
        list.into_iter()
            .map(|prefix| CommonPrefix { prefix: Some(prefix) })
            .collect()
    })
}

/// Continuation tokens are the hex of the last entry returned: opaque to clients, stable,
/// and stateless (any node can continue a listing another node started).
pub(super) fn encode_token(last: &str) -> String {
    hex::encode(last)
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}
