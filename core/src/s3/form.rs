//! Browser form uploads (PostObject): the form's fields, its policy document, the checks S3
//! applies to both, and the form the backend gets instead.
//!
//! A `POST /bucket` with a `multipart/form-data` body carries its object key, its metadata and
//! its credential in form fields before the file; the file is the last field S3 reads (fields
//! after it are ignored). The runtime reads the fields before the file with a bound
//! ([`FIELDS_MAX`]) and hands them here as a [`Form`]; the file itself streams past.
//!
//! - The **policy** (base64 JSON) says until when the form is valid and which values its fields
//!   may take: exact matches (`{"acl": "private"}`, `["eq", "$key", "a"]`), prefixes
//!   (`["starts-with", "$key", "uploads/"]`, where `""` allows any value) and the file's size
//!   (`["content-length-range", min, max]`). As S3 applies them: field names are
//!   case-insensitive, values are not; `$bucket` is the bucket the form was posted to; and every
//!   field except `policy`, the signature's (`x-amz-signature`, or SigV2's `AWSAccessKeyId` and
//!   `signature`), `file` and `x-ignore-*` must be named by some condition.
//! - The **signature** is over the policy's base64 text: SigV4 (`x-amz-algorithm`,
//!   `x-amz-credential`, `x-amz-date`, `x-amz-signature`) or SigV2 (`AWSAccessKeyId`,
//!   `signature`). The runtime verifies it (it holds the keys); see [`Form::credential`].
//! - **Forwarding**: the backend cannot verify the caller's signature (it does not hold the
//!   caller's key), so the proxy re-signs the form rather than convert it to a PutObject: the
//!   backend then applies the same form semantics as S3 (`success_action_status`,
//!   `success_action_redirect`, `${filename}`, `Content-Type` and metadata fields, the
//!   size range) and answers as S3 would, and the file's bytes pass through untouched with an
//!   exact `Content-Length` known before they are read. The backend's form keeps every field
//!   but the caller's credential and carries the caller's policy with its credential conditions
//!   replaced by the backend's ([`PostPolicy::for_backend`]), signed with the backend's key.

use std::time::SystemTime;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::{ErrorCode, S3ErrorResponse};
use crate::calendar::{format_iso8601, parse_iso8601};

/// The most bytes of form fields the proxy reads before the file part (S3 bounds the fields
/// before the file likewise: `MaxPostPreDataLengthExceededError`).
pub const FIELDS_MAX: usize = 20 * 1024;

/// Fields that carry the caller's credential: never forwarded, never needing a condition.
const CREDENTIAL_FIELDS: [&str; 8] = [
    "policy",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-algorithm",
    "x-amz-date",
    "x-amz-security-token",
    "awsaccesskeyid",
    "signature",
];

/// The fields of a browser form upload up to its file part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    boundary: String,
    /// Name (as sent) and value of each field before the file, in order.
    fields: Vec<(String, String)>,
    file_name: Option<String>,
    /// The file part's delimiter line and headers, as sent (`--boundary\r\n…\r\n\r\n`).
    file_head: Bytes,
}

/// The credential a form carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormCredential<'a> {
    /// No signature: an anonymous upload.
    None,
    /// SigV4: the signature over `policy` with the key of `credential`'s scope.
    V4 {
        /// The base64 policy text that was signed.
        policy: &'a str,
        /// `x-amz-credential`: `AKID/YYYYMMDD/region/s3/aws4_request`.
        credential: &'a str,
        /// `x-amz-date`: `YYYYMMDDTHHMMSSZ`.
        date: &'a str,
        /// `x-amz-signature`, hex.
        signature: &'a str,
        /// `x-amz-security-token`, for session credentials.
        token: Option<&'a str>,
    },
    /// SigV2: `signature` is base64 HMAC-SHA1 over `policy` with the secret of `access_key`.
    V2 {
        /// The base64 policy text that was signed.
        policy: &'a str,
        /// `AWSAccessKeyId`.
        access_key: &'a str,
        /// `signature`, base64.
        signature: &'a str,
    },
}

fn form_error(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> S3ErrorResponse {
    S3ErrorResponse::new(code, message)
}

impl Form {
    /// A form whose parts are delimited by `boundary`, with `fields` before its file part,
    /// whose headers name `file_name` and are `file_head` as sent.
    pub fn new(
        boundary: impl Into<String>,
        fields: Vec<(String, String)>,
        file_name: Option<String>,
        file_head: Bytes,
    ) -> Form {
        Form {
            boundary: boundary.into(),
            fields,
            file_name,
            file_head,
        }
    }

    /// The value of field `name` (case-insensitive, as S3 matches field names); the first one
    /// when a name repeats.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The fields before the file, as sent.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The object key: the `key` field with `${filename}` replaced by the file's name, as S3
    /// does. A form without one is malformed.
    pub fn key(&self) -> Result<String, S3ErrorResponse> {
        let key = self.field("key").ok_or_else(|| {
            form_error(
                ErrorCode::InvalidArgument,
                "Bucket POST must contain a field named 'key'.",
            )
        })?;
        let key = key.replace("${filename}", self.file_name.as_deref().unwrap_or(""));
        if key.is_empty() {
            return Err(form_error(
                ErrorCode::InvalidArgument,
                "User key must have a length greater than 0.",
            ));
        }
        Ok(key)
    }

    /// The credential the form carries. A form with a signature but no policy, or only half a
    /// signature, is malformed.
    pub fn credential(&self) -> Result<FormCredential<'_>, S3ErrorResponse> {
        let policy = self.field("policy");
        if let Some(signature) = self.field("x-amz-signature") {
            let (Some(policy), Some(credential), Some(date)) =
                (policy, self.field("x-amz-credential"), self.field("x-amz-date"))
            else {
                return Err(form_error(
                    ErrorCode::InvalidArgument,
                    "a SigV4 form needs the fields policy, x-amz-credential, x-amz-date and x-amz-signature",
                ));
            };
            if self
                .field("x-amz-algorithm")
                .is_none_or(|algorithm| algorithm != "AWS4-HMAC-SHA256")
            {
                return Err(form_error(
                    ErrorCode::InvalidArgument,
                    "x-amz-algorithm must be AWS4-HMAC-SHA256",
                ));
            }
            return Ok(FormCredential::V4 {
                policy,
                credential,
                date,
                signature,
                token: self.field("x-amz-security-token"),
            });
        }
        if let Some(access_key) = self.field("awsaccesskeyid") {
            let (Some(policy), Some(signature)) = (policy, self.field("signature")) else {
                return Err(form_error(
                    ErrorCode::InvalidArgument,
                    "a SigV2 form needs the fields policy, AWSAccessKeyId and signature",
                ));
            };
            return Ok(FormCredential::V2 {
                policy,
                access_key,
                signature,
            });
        }
        Ok(FormCredential::None)
    }

    /// The body the backend gets up to the file's first byte: every field but the caller's
    /// credential, the key resolved (`${filename}` replaced: the backend writes exactly the key
    /// the proxy authorised, whatever its own substitution rules), then `credential` (the
    /// backend's policy and signature fields, none for an anonymous backend), then the file
    /// part's head as sent.
    pub fn forward_prefix(&self, credential: &[(&str, &str)]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.file_head.len() + 256 * (self.fields.len() + credential.len()));
        let key = self.key().ok();
        let kept = self
            .fields
            .iter()
            .filter(|(name, _)| !is_credential_field(name))
            .map(|(name, value)| match &key {
                Some(key) if name.eq_ignore_ascii_case("key") => (name.as_str(), key.as_str()),
                _ => (name.as_str(), value.as_str()),
            });
        for (name, value) in kept.chain(credential.iter().copied()) {
            out.put_slice(b"--");
            out.put_slice(self.boundary.as_bytes());
            out.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
            // As browsers write names (HTML's form encoding): a quote or line break is escaped.
            for byte in name.bytes() {
                match byte {
                    b'"' => out.put_slice(b"%22"),
                    b'\r' => out.put_slice(b"%0D"),
                    b'\n' => out.put_slice(b"%0A"),
                    other => out.put_u8(other),
                }
            }
            out.put_slice(b"\"\r\n\r\n");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(&self.file_head);
        out.freeze()
    }
}

/// True for a field that carries the caller's credential.
fn is_credential_field(name: &str) -> bool {
    CREDENTIAL_FIELDS.iter().any(|field| field.eq_ignore_ascii_case(name))
}

/// True for a field no condition needs to name.
fn is_exempt(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "policy" | "x-amz-signature" | "awsaccesskeyid" | "signature" | "file"
    ) || name.starts_with("x-ignore-")
}

/// One condition of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The field (lowercase, without `$`) equals the value.
    Eq {
        /// The field's name.
        field: String,
        /// The value it must have.
        value: String,
    },
    /// The field starts with the prefix (`""`: any value).
    StartsWith {
        /// The field's name.
        field: String,
        /// The prefix it must have.
        prefix: String,
    },
    /// The file's size is within `min..=max` bytes.
    ContentLengthRange {
        /// Fewest bytes.
        min: u64,
        /// Most bytes.
        max: u64,
    },
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Eq { field, value } => write!(f, "[\"eq\", \"${field}\", \"{value}\"]"),
            Condition::StartsWith { field, prefix } => write!(f, "[\"starts-with\", \"${field}\", \"{prefix}\"]"),
            Condition::ContentLengthRange { min, max } => write!(f, "[\"content-length-range\", {min}, {max}]"),
        }
    }
}

/// The size the file may have, from the policy's `content-length-range` (all sizes when it
/// has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    /// Fewest bytes.
    pub min: u64,
    /// Most bytes.
    pub max: u64,
}

impl SizeRange {
    /// Any size.
    pub const ANY: SizeRange = SizeRange { min: 0, max: u64::MAX };

    /// The error for a file of `size` bytes outside the range, if it is.
    pub fn check(self, size: u64) -> Result<(), S3ErrorResponse> {
        if size > self.max {
            return Err(form_error(
                ErrorCode::EntityTooLarge,
                "Your proposed upload exceeds the maximum allowed size",
            ));
        }
        if size < self.min {
            return Err(form_error(
                ErrorCode::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed size",
            ));
        }
        Ok(())
    }
}

/// Where the file ends, and whether its size is within the policy's range, found as the
/// bytes after the file part's head stream past (the file may be gigabytes: nothing is kept
/// but the last few bytes, in case the closing delimiter spans two pieces). A file outside its
/// range is refused before the bytes that prove it are forwarded, so the backend sees a form
/// that never ends and stores nothing.
#[derive(Clone, Debug)]
pub struct FileScan {
    finder: memchr::memmem::Finder<'static>,
    carry: Vec<u8>,
    seen: u64,
    range: SizeRange,
    size: Option<u64>,
}

impl FileScan {
    /// A scan for the end of a file part of a form delimited by `boundary`, sized within
    /// `range`.
    pub fn new(boundary: &str, range: SizeRange) -> FileScan {
        let delimiter = format!("\r\n--{boundary}");
        FileScan {
            finder: memchr::memmem::Finder::new(delimiter.as_bytes()).into_owned(),
            carry: Vec::with_capacity(delimiter.len()),
            seen: 0,
            range,
            size: None,
        }
    }

    /// The next bytes after the file part's head, before they are forwarded: `Err` when they
    /// show the file is larger or smaller than its range allows.
    pub fn observe(&mut self, data: &[u8]) -> Result<(), S3ErrorResponse> {
        if self.size.is_some() {
            return Ok(());
        }
        let keep = self.finder.needle().len() - 1;
        // A delimiter that starts in the bytes kept from before and ends in these.
        let mut junction = self.carry.clone();
        junction.extend_from_slice(&data[..keep.min(data.len())]);
        let start = self.seen - self.carry.len() as u64;
        let found = self
            .finder
            .find(&junction)
            .map(|at| start + at as u64)
            .or_else(|| self.finder.find(data).map(|at| self.seen + at as u64));
        if let Some(size) = found {
            self.size = Some(size);
            return self.range.check(size);
        }
        self.seen += data.len() as u64;
        if data.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.carry.extend_from_slice(data);
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
        // All but the last few bytes seen are the file's for certain.
        if self.seen.saturating_sub(keep as u64) > self.range.max {
            return Err(self.range.check(u64::MAX).expect_err("above any maximum"));
        }
        Ok(())
    }

    /// The file's size, once its end was seen.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

/// A decoded policy document.
#[derive(Clone, Debug, PartialEq)]
pub struct PostPolicy {
    /// Until when the form may be used.
    pub expiration: SystemTime,
    /// What its fields and file must be.
    pub conditions: Vec<Condition>,
    document: serde_json::Map<String, Value>,
}

fn malformed(message: impl Into<std::borrow::Cow<'static, str>>) -> S3ErrorResponse {
    form_error(ErrorCode::InvalidPolicyDocument, message)
}

impl PostPolicy {
    /// Decode the base64 policy text of a form.
    pub fn decode(text: &str) -> Result<PostPolicy, S3ErrorResponse> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| malformed("Invalid Policy: Invalid Base64 encoding."))?;
        let document: serde_json::Map<String, Value> = serde_json::from_slice(&json)
            .map_err(|error| malformed(format!("Invalid Policy: Invalid JSON: {error}")))?;
        let expiration = document
            .get("expiration")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("Invalid Policy: Policy missing expiration."))?;
        let expiration = parse_iso8601(expiration)
            .ok_or_else(|| malformed(format!("Invalid Policy: Invalid 'expiration' value: '{expiration}'")))?;
        let Some(Value::Array(raw)) = document.get("conditions") else {
            return Err(malformed("Invalid Policy: Policy missing conditions."));
        };
        let mut conditions = Vec::with_capacity(raw.len());
        for condition in raw {
            parse_condition(condition, &mut conditions)?;
        }
        Ok(PostPolicy {
            expiration,
            conditions,
            document,
        })
    }

    /// Check `form`, posted to `bucket` at `now`, against this policy: it has not expired
    /// (403), and every condition holds and names every field (400). The size range is
    /// returned: the file is checked against it as it streams.
    pub fn check(&self, form: &Form, bucket: &str, now: SystemTime) -> Result<SizeRange, S3ErrorResponse> {
        if now >= self.expiration {
            return Err(form_error(
                ErrorCode::AccessDenied,
                "Invalid according to Policy: Policy expired.",
            ));
        }
        let mut range = SizeRange::ANY;
        for condition in &self.conditions {
            let (field, holds) = match condition {
                Condition::Eq { field, value } => (field, value_of(form, bucket, field) == Some(value.as_str())),
                Condition::StartsWith { field, prefix } => (
                    field,
                    value_of(form, bucket, field).unwrap_or("").starts_with(prefix.as_str()),
                ),
                Condition::ContentLengthRange { min, max } => {
                    range = SizeRange { min: *min, max: *max };
                    continue;
                }
            };
            if !holds {
                tracing::debug!(%field, "form field fails its policy condition");
                return Err(form_error(
                    ErrorCode::InvalidPolicyDocument,
                    format!("Invalid according to Policy: Policy Condition failed: {condition}"),
                ));
            }
        }
        for (name, _) in &form.fields {
            let named = self.conditions.iter().any(|condition| match condition {
                Condition::Eq { field, .. } | Condition::StartsWith { field, .. } => field.eq_ignore_ascii_case(name),
                Condition::ContentLengthRange { .. } => false,
            });
            if !named && !is_exempt(name) {
                return Err(form_error(
                    ErrorCode::InvalidPolicyDocument,
                    format!(
                        "Invalid according to Policy: Extra input fields: {}",
                        name.to_ascii_lowercase()
                    ),
                ));
            }
        }
        Ok(range)
    }

    /// A policy that admits `form` exactly as it is, posted to `bucket`, until `expiration`:
    /// for a form that came without one (an anonymous upload the proxy's own policy allowed)
    /// on its way to a backend that only takes signed forms.
    pub fn admitting(form: &Form, bucket: &str, expiration: SystemTime) -> PostPolicy {
        let mut conditions = vec![Condition::Eq {
            field: "bucket".to_owned(),
            value: bucket.to_owned(),
        }];
        let mut raw = vec![serde_json::json!({ "bucket": bucket })];
        for (name, value) in form
            .fields
            .iter()
            .filter(|(name, _)| !is_credential_field(name) && !name.eq_ignore_ascii_case("key"))
        {
            let field = name.to_ascii_lowercase();
            raw.push(serde_json::json!(["eq", format!("${field}"), value]));
            conditions.push(Condition::Eq {
                field,
                value: value.clone(),
            });
        }
        let mut document = serde_json::Map::new();
        document.insert("expiration".to_owned(), Value::String(format_iso8601(expiration)));
        document.insert("conditions".to_owned(), Value::Array(raw));
        PostPolicy {
            expiration,
            conditions,
            document,
        }
    }

    /// This policy for the backend of a form for `key` (resolved, as the backend gets it):
    /// the same document (expiration, conditions) with the conditions on the key and on the
    /// caller's credential replaced by exact matches on `key` and on `credential` (the
    /// backend's `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`), as base64 text. The
    /// proxy checked the caller's key conditions already; the backend's says the one key the
    /// proxy authorised.
    pub fn for_backend(&self, key: &str, credential: &[(&str, &str)]) -> String {
        let mut document = self.document.clone();
        let mut conditions: Vec<Value> = match document.remove("conditions") {
            Some(Value::Array(conditions)) => conditions
                .into_iter()
                .filter(|condition| {
                    !names_field(condition, |field| {
                        is_credential_field(field) || field.eq_ignore_ascii_case("key")
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        for (name, value) in std::iter::once(&("key", key)).chain(credential) {
            let mut exact = serde_json::Map::new();
            exact.insert((*name).to_owned(), Value::String((*value).to_owned()));
            conditions.push(Value::Object(exact));
        }
        document.insert("conditions".to_owned(), Value::Array(conditions));
        let json = serde_json::to_vec(&Value::Object(document)).expect("a JSON value serialises");
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

/// True for a condition on a field that `named` picks.
fn names_field(condition: &Value, named: impl Fn(&str) -> bool) -> bool {
    match condition {
        Value::Object(map) => map.keys().any(|name| named(name.trim_start_matches('$'))),
        Value::Array(items) => items
            .get(1)
            .and_then(Value::as_str)
            .and_then(|field| field.strip_prefix('$'))
            .is_some_and(named),
        _ => false,
    }
}

/// The value a condition on `field` (lowercase) sees: the bucket posted to for `bucket`, the
/// form's field otherwise.
fn value_of<'a>(form: &'a Form, bucket: &'a str, field: &str) -> Option<&'a str> {
    if field == "bucket" {
        return Some(bucket);
    }
    form.field(field)
}

/// One element of a policy's `conditions` into `out` (an object may hold several exact
/// matches).
fn parse_condition(condition: &Value, out: &mut Vec<Condition>) -> Result<(), S3ErrorResponse> {
    let invalid = || malformed(format!("Invalid Policy: Invalid Condition: {condition}"));
    match condition {
        Value::Object(map) => {
            for (field, value) in map {
                let value = value.as_str().ok_or_else(invalid)?;
                out.push(Condition::Eq {
                    field: field.trim_start_matches('$').to_ascii_lowercase(),
                    value: value.to_owned(),
                });
            }
            Ok(())
        }
        Value::Array(items) => {
            let operator = items.first().and_then(Value::as_str).ok_or_else(invalid)?;
            if operator.eq_ignore_ascii_case("content-length-range") {
                let [_, min, max] = items.as_slice() else {
                    return Err(invalid());
                };
                let (min, max) = (length_of(min).ok_or_else(invalid)?, length_of(max).ok_or_else(invalid)?);
                if min > max {
                    return Err(invalid());
                }
                out.push(Condition::ContentLengthRange { min, max });
                return Ok(());
            }
            let [_, field, value] = items.as_slice() else {
                return Err(invalid());
            };
            let field = field
                .as_str()
                .and_then(|field| field.strip_prefix('$'))
                .ok_or_else(invalid)?
                .to_ascii_lowercase();
            let value = value.as_str().ok_or_else(invalid)?.to_owned();
            if operator.eq_ignore_ascii_case("eq") {
                out.push(Condition::Eq { field, value });
            } else if operator.eq_ignore_ascii_case("starts-with") {
                out.push(Condition::StartsWith { field, prefix: value });
            } else {
                return Err(invalid());
            }
            Ok(())
        }
        _ => Err(invalid()),
    }
}

/// A size in a `content-length-range`: a non-negative integer, or its decimal text.
fn length_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
