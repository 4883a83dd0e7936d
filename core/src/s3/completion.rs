//! CompleteMultipartUpload as far as the proxy reads it: the parts a request lists, the ETag
//! the completed object then has, and the answer S3 gives for it.
//!
//! Used when a completion's answer was lost (the node committed the object, then crashed or
//! the connection broke before its answer arrived) and the client's retry finds the upload
//! gone: the object's ETag tells whether it is exactly what this request completes.

use md5::{Digest, Md5};
use serde::Deserialize;

/// The largest completion body the proxy reads for this (10,000 parts of about 120 bytes
/// each, S3's limit, with room to spare).
pub const COMPLETION_BODY_MAX: usize = 2 * 1024 * 1024;

#[derive(Deserialize)]
struct CompleteMultipartUpload {
    #[serde(rename = "Part", default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "ETag")]
    etag: String,
}

/// The ETag (unquoted) of the object that the CompleteMultipartUpload request `body` makes:
/// `hex(MD5(the binary MD5s of the listed parts, in order))-N`, as S3 computes it. `None`
/// when the body is not a completion the proxy can read, or a part's ETag is no plain MD5
/// (an SSE-KMS part's, for example): then nothing can be concluded from an object's ETag.
pub fn multipart_etag(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let completion: CompleteMultipartUpload = quick_xml::de::from_str(text).ok()?;
    if completion.parts.is_empty() {
        return None;
    }
    let mut digests = Md5::new();
    for part in &completion.parts {
        let hex = part.etag.trim().trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        let mut digest = [0u8; 16];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        digests.update(digest);
    }
    let digest = digests.finalize();
    let mut etag = String::with_capacity(40);
    for byte in digest {
        etag.push_str(&format!("{byte:02x}"));
    }
    etag.push_str(&format!("-{}", completion.parts.len()));
    Some(etag)
}

/// True when `etag` (an object's, as a HEAD answers it: quoted or not) is `expected`.
pub fn etag_matches(etag: &str, expected: &str) -> bool {
    etag.trim().trim_matches('"').eq_ignore_ascii_case(expected)
}

/// The `CompleteMultipartUploadResult` body S3 answers for `bucket`/`key` completed with
/// `etag`.
pub fn result_xml(bucket: &str, key: &str, etag: &str) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>/",
    );
    super::error::escape_into(&mut xml, bucket);
    xml.push('/');
    super::error::escape_into(&mut xml, key);
    xml.push_str("</Location><Bucket>");
    super::error::escape_into(&mut xml, bucket);
    xml.push_str("</Bucket><Key>");
    super::error::escape_into(&mut xml, key);
    xml.push_str("</Key><ETag>&quot;");
    super::error::escape_into(&mut xml, etag);
    xml.push_str("&quot;</ETag></CompleteMultipartUploadResult>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_hex(data: &[u8]) -> String {
        Md5::digest(data).iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_md5s() {
        // Proves the S3 formula on a body as SDKs write it (quoted ETags, escaped or not,
        // checksums beside them): the same value s3-mock and S3 give the object.
        let (one, two) = (md5_hex(b"first part"), md5_hex(b"second"));
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUpload \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><ETag>&quot;{one}&quot;</ETag>\
             <PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber>\
             <ChecksumCRC32>AAAAAA==</ChecksumCRC32><ETag>\"{two}\"</ETag></Part></CompleteMultipartUpload>"
        );
        let mut binary = Vec::new();
        for hex in [&one, &two] {
            binary.extend(Md5::digest(if hex == &one {
                &b"first part"[..]
            } else {
                &b"second"[..]
            }));
        }
        let expected = format!("{}-2", md5_hex(&binary));
        assert_eq!(multipart_etag(body.as_bytes()).as_deref(), Some(expected.as_str()));
        assert!(etag_matches(&format!("\"{expected}\""), &expected));
        assert!(!etag_matches(
            &format!("\"{expected}\""),
            &format!("{}-2", md5_hex(b"other"))
        ));
    }

    #[test]
    fn an_unreadable_completion_concludes_nothing() {
        // Proves that only a well-formed part list of MD5 ETags yields an ETag.
        for body in [
            &b"not xml"[..],
            b"<CompleteMultipartUpload></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><ETag>\"kms-etag\"</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><ETag>\"zz0123456789abcdef0123456789abcd\"</ETag></Part></CompleteMultipartUpload>",
            b"\xff\xfe",
        ] {
            assert_eq!(multipart_etag(body), None, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_result_names_the_object_escaped() {
        let xml = result_xml("bkt", "a&b<c>", "abc-2");
        assert!(xml.contains("<Key>a&amp;b&lt;c&gt;</Key>"), "{xml}");
        assert!(xml.contains("<ETag>&quot;abc-2&quot;</ETag>"), "{xml}");
        assert!(xml.contains("<Bucket>bkt</Bucket>"), "{xml}");
    }
}
