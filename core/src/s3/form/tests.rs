use super::*;
use crate::calendar::{format_iso8601, parse_iso8601};

fn encode(json: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(json)
}

fn at(text: &str) -> SystemTime {
    parse_iso8601(text).expect("a valid time")
}

/// The form boto3's `generate_presigned_post` yields for `uploads/${filename}` (its fields, in
/// its order), posted with a `file` part named `photo.jpg`.
fn boto3_form(extra: &[(&str, &str)]) -> (Form, PostPolicy) {
    let policy = encode(
        r#"{"expiration": "2026-12-01T13:00:00Z", "conditions": [{"bucket": "data"},
        ["starts-with", "$key", "uploads/"], {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
        {"x-amz-credential": "AKIDAPP/20261201/us-east-1/s3/aws4_request"},
        {"x-amz-date": "20261201T120000Z"}, ["content-length-range", 1, 1048576],
        ["starts-with", "$Content-Type", "image/"]]}"#,
    );
    let mut fields: Vec<(String, String)> = [
        ("key", "uploads/${filename}"),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", "AKIDAPP/20261201/us-east-1/s3/aws4_request"),
        ("x-amz-date", "20261201T120000Z"),
        ("policy", policy.as_str()),
        ("x-amz-signature", "00ff"),
        ("Content-Type", "image/jpeg"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect();
    fields.extend(
        extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    let head = Bytes::from_static(
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n",
    );
    let form = Form::new("B", fields, Some("photo.jpg".to_owned()), head);
    let policy = PostPolicy::decode(&policy).expect("boto3's policy decodes");
    (form, policy)
}

#[test]
fn a_boto3_form_passes_its_own_policy_and_names_its_key_and_size_range() {
    let (form, policy) = boto3_form(&[]);
    assert_eq!(policy.expiration, at("2026-12-01T13:00:00Z"));
    let range = policy
        .check(&form, "data", at("2026-12-01T12:00:05Z"))
        .expect("the form holds");
    assert_eq!(range, SizeRange { min: 1, max: 1_048_576 });
    assert_eq!(
        form.key().as_deref(),
        Ok("uploads/photo.jpg"),
        "${{filename}} is the file's name"
    );
    assert!(matches!(
        form.credential(),
        Ok(FormCredential::V4 {
            credential: "AKIDAPP/20261201/us-east-1/s3/aws4_request",
            signature: "00ff",
            token: None,
            ..
        })
    ));
}

#[test]
fn an_expired_policy_is_forbidden_and_a_failed_condition_is_a_bad_request() {
    let (form, policy) = boto3_form(&[]);
    let expired = policy
        .check(&form, "data", at("2026-12-01T13:00:00Z"))
        .expect_err("expired at its time");
    assert_eq!((expired.code, expired.status()), (ErrorCode::AccessDenied, 403));
    // The bucket condition sees the bucket posted to, not a field.
    let other = policy
        .check(&form, "other", at("2026-12-01T12:00:00Z"))
        .expect_err("wrong bucket");
    assert_eq!((other.code, other.status()), (ErrorCode::InvalidPolicyDocument, 400));
    assert!(
        other.message.contains(r#"{"bucket"#) || other.message.contains("$bucket"),
        "{}",
        other.message
    );
    // starts-with on the key.
    let mut fields = form.fields().to_vec();
    fields[0].1 = "elsewhere/${filename}".to_owned();
    let moved = Form::new("B", fields, Some("photo.jpg".to_owned()), Bytes::new());
    let refused = policy
        .check(&moved, "data", at("2026-12-01T12:00:00Z"))
        .expect_err("key outside the prefix");
    assert_eq!(refused.code, ErrorCode::InvalidPolicyDocument);
    assert!(
        refused.message.contains(r#"["starts-with", "$key", "uploads/"]"#),
        "{}",
        refused.message
    );
}

#[test]
fn field_names_match_case_insensitively_and_values_exactly() {
    // `Content-Type` (as sent) is named by `$Content-Type` (as written) either way round.
    let (form, policy) = boto3_form(&[]);
    assert!(policy.check(&form, "data", at("2026-12-01T12:00:00Z")).is_ok());
    let mut fields = form.fields().to_vec();
    fields[6] = ("CONTENT-TYPE".to_owned(), "Image/jpeg".to_owned());
    let shouted = Form::new("B", fields, None, Bytes::new());
    let refused = policy
        .check(&shouted, "data", at("2026-12-01T12:00:00Z"))
        .expect_err("values are case-sensitive");
    assert_eq!(refused.code, ErrorCode::InvalidPolicyDocument);
}

#[test]
fn every_field_needs_a_condition_except_the_exempt_ones() {
    let (form, policy) = boto3_form(&[("x-amz-meta-owner", "me")]);
    let refused = policy
        .check(&form, "data", at("2026-12-01T12:00:00Z"))
        .expect_err("an unnamed field");
    assert_eq!(refused.code, ErrorCode::InvalidPolicyDocument);
    assert!(refused.message.contains("x-amz-meta-owner"), "{}", refused.message);
    let (form, policy) = boto3_form(&[("x-ignore-tracking", "1"), ("submit", "Upload")]);
    let refused = policy
        .check(&form, "data", at("2026-12-01T12:00:00Z"))
        .expect_err("submit is a field like any");
    assert!(refused.message.contains("submit"), "{}", refused.message);
    let (form, policy) = boto3_form(&[("x-ignore-tracking", "1")]);
    assert!(
        policy.check(&form, "data", at("2026-12-01T12:00:00Z")).is_ok(),
        "x-ignore-* needs none"
    );
}

#[test]
fn malformed_policies_are_named_as_such() {
    for (text, what) in [
        ("not base64!".to_owned(), "Base64"),
        (encode("[1, 2]"), "JSON"),
        (encode(r#"{"conditions": []}"#), "expiration"),
        (encode(r#"{"expiration": "tomorrow", "conditions": []}"#), "expiration"),
        (encode(r#"{"expiration": "2026-12-01T13:00:00Z"}"#), "conditions"),
        (
            encode(r#"{"expiration": "2026-12-01T13:00:00Z", "conditions": [["lt", "$key", "a"]]}"#),
            "Condition",
        ),
        (
            encode(r#"{"expiration": "2026-12-01T13:00:00Z", "conditions": [["content-length-range", 9, 1]]}"#),
            "Condition",
        ),
        (
            encode(r#"{"expiration": "2026-12-01T13:00:00Z", "conditions": [["eq", "key", "a"]]}"#),
            "Condition",
        ),
    ] {
        let error = PostPolicy::decode(&text).expect_err(what);
        assert_eq!(
            (error.code, error.status()),
            (ErrorCode::InvalidPolicyDocument, 400),
            "{what}"
        );
        assert!(error.message.contains(what), "{what}: {}", error.message);
    }
    // Sizes may be written as text; fractions of a second are allowed.
    let policy = PostPolicy::decode(&encode(
        r#"{"expiration": "2026-12-01T13:00:00.000Z", "conditions": [["content-length-range", "0", "10"]]}"#,
    ))
    .expect("decodes");
    assert_eq!(
        policy.conditions,
        vec![Condition::ContentLengthRange { min: 0, max: 10 }]
    );
}

#[test]
fn a_form_without_a_key_or_with_half_a_signature_is_malformed() {
    let form = Form::new("B", vec![("acl".into(), "private".into())], None, Bytes::new());
    assert_eq!(form.key().map_err(|error| error.code), Err(ErrorCode::InvalidArgument));
    assert_eq!(form.credential(), Ok(FormCredential::None));
    let half = Form::new("B", vec![("x-amz-signature".into(), "00".into())], None, Bytes::new());
    assert!(half.credential().is_err());
    let v2 = Form::new(
        "B",
        vec![
            ("AWSAccessKeyId".into(), "AK".into()),
            ("policy".into(), "e30=".into()),
            ("signature".into(), "c2ln".into()),
        ],
        None,
        Bytes::new(),
    );
    assert_eq!(
        v2.credential(),
        Ok(FormCredential::V2 {
            policy: "e30=",
            access_key: "AK",
            signature: "c2ln"
        })
    );
}

#[test]
fn the_backend_gets_the_same_policy_under_its_own_credential() {
    let (form, policy) = boto3_form(&[]);
    let backend = [
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", "BACKEND/20261201/us-east-1/s3/aws4_request"),
        ("x-amz-date", "20261201T120001Z"),
    ];
    let rewritten =
        PostPolicy::decode(&policy.for_backend("uploads/photo.jpg", &backend)).expect("the rewrite decodes");
    assert_eq!(rewritten.expiration, policy.expiration);
    let credential_free: Vec<&Condition> = rewritten
        .conditions
        .iter()
        .filter(|condition| !is_replaced(condition))
        .collect();
    let original_free: Vec<&Condition> = policy
        .conditions
        .iter()
        .filter(|condition| !is_replaced(condition))
        .collect();
    assert_eq!(credential_free, original_free, "every other condition is kept");
    assert!(
        rewritten.conditions.contains(&Condition::Eq {
            field: "key".into(),
            value: "uploads/photo.jpg".into()
        }),
        "the key authorised, exactly"
    );
    assert_eq!(
        rewritten
            .conditions
            .iter()
            .filter(|condition| is_replaced(condition))
            .count(),
        4
    );
    assert!(rewritten.conditions.contains(&Condition::Eq {
        field: "x-amz-credential".into(),
        value: "BACKEND/20261201/us-east-1/s3/aws4_request".into()
    }));
    assert!(
        !rewritten
            .conditions
            .iter()
            .any(|condition| matches!(condition, Condition::Eq { value, .. } if value.starts_with("AKIDAPP")))
    );
    // The backend's form: the caller's credential gone, the backend's in, the file head last.
    let new_policy = rewritten_text(&policy, &backend);
    let mut fields: Vec<(&str, &str)> = backend.to_vec();
    fields.push(("policy", &new_policy));
    fields.push(("x-amz-signature", "abcd"));
    let prefix = form.forward_prefix(&fields);
    let text = std::str::from_utf8(&prefix).expect("text");
    assert!(
        text.starts_with("--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nuploads/photo.jpg\r\n"),
        "the key resolved: {text}"
    );
    assert!(
        !text.contains("AKIDAPP") && !text.contains("00ff"),
        "the caller's credential is gone: {text}"
    );
    assert!(text.contains("name=\"x-amz-signature\"\r\n\r\nabcd\r\n"), "{text}");
    assert!(
        text.ends_with("filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"),
        "{text}"
    );
    // And it passes the rewritten policy, re-read as the backend reads it.
    let reread: Vec<(String, String)> = text
        .split("--B\r\n")
        .filter_map(|part| {
            let (head, value) = part.split_once("\r\n\r\n")?;
            let name = head.split("name=\"").nth(1)?.split('"').next()?;
            (name != "file").then(|| (name.to_owned(), value.trim_end_matches("\r\n").to_owned()))
        })
        .collect();
    let backend_form = Form::new("B", reread, Some("photo.jpg".into()), Bytes::new());
    assert!(
        rewritten
            .check(&backend_form, "data", at("2026-12-01T12:00:05Z"))
            .is_ok()
    );
}

/// A condition the backend's policy replaces: on the key or the credential.
fn is_replaced(condition: &Condition) -> bool {
    matches!(condition, Condition::Eq { field, .. } | Condition::StartsWith { field, .. }
        if field.starts_with("x-amz-") || field == "key")
}

fn rewritten_text(policy: &PostPolicy, credential: &[(&str, &str)]) -> String {
    policy.for_backend("uploads/photo.jpg", credential)
}

#[test]
fn size_ranges_bound_both_ways() {
    let range = SizeRange { min: 2, max: 4 };
    assert!(range.check(2).is_ok() && range.check(4).is_ok());
    assert_eq!(
        range.check(5).map_err(|error| error.code),
        Err(ErrorCode::EntityTooLarge)
    );
    assert_eq!(
        range.check(1).map_err(|error| error.code),
        Err(ErrorCode::EntityTooSmall)
    );
    assert!(SizeRange::ANY.check(u64::MAX).is_ok());
}

#[test]
fn an_admitting_policy_admits_the_form_as_it_is_and_nothing_else() {
    let form = Form::new(
        "B",
        vec![
            ("key".into(), "uploads/${filename}".into()),
            ("acl".into(), "private".into()),
        ],
        Some("a.txt".into()),
        Bytes::new(),
    );
    let expiration = at("2026-12-02T12:00:00Z");
    let policy =
        PostPolicy::decode(&PostPolicy::admitting(&form, "data", expiration).for_backend("uploads/a.txt", &[]))
            .expect("decodes");
    assert_eq!(policy.expiration, expiration);
    // As the backend gets it: the key resolved.
    let resolved = Form::new(
        "B",
        vec![("key".into(), "uploads/a.txt".into()), ("acl".into(), "private".into())],
        Some("a.txt".into()),
        Bytes::new(),
    );
    assert_eq!(
        policy.check(&resolved, "data", at("2026-12-02T11:00:00Z")),
        Ok(SizeRange::ANY)
    );
    assert!(
        policy.check(&form, "data", at("2026-12-02T11:00:00Z")).is_err(),
        "only the resolved key"
    );
    assert!(policy.check(&resolved, "other", at("2026-12-02T11:00:00Z")).is_err());
    assert_eq!(format_iso8601(at("2000-02-29T23:59:59Z")), "2000-02-29T23:59:59Z");
}

#[test]
fn a_file_scan_finds_the_end_across_any_split_and_bounds_the_size() {
    // Proves the streaming size check: the file's end is found wherever the closing delimiter
    // falls among the pieces, and a file above the maximum is refused before its end.
    let body = b"0123456789\r\n--B--\r\n";
    for split in 0..body.len() {
        for second in split..body.len() {
            let mut scan = FileScan::new("B", SizeRange::ANY);
            for piece in [&body[..split], &body[split..second], &body[second..]] {
                scan.observe(piece).expect("in range");
            }
            assert_eq!(scan.size(), Some(10), "pieces split at {split} and {second}");
        }
    }
    // A near-delimiter inside the file does not end it.
    let mut scan = FileScan::new("B", SizeRange::ANY);
    scan.observe(b"ab\r\n--C\r\n--").expect("in range");
    scan.observe(b"Bx").expect("in range");
    assert_eq!(scan.size(), Some(7), "the end is the delimiter that spans the pieces");
    // Too large: refused once the bytes seen exceed the maximum by more than a delimiter.
    let mut scan = FileScan::new("B", SizeRange { min: 0, max: 4 });
    assert!(
        scan.observe(b"12345").is_ok(),
        "these five might still end in a delimiter"
    );
    let error = scan.observe(b"6789").expect_err("nine file bytes for certain");
    assert_eq!(error.code, ErrorCode::EntityTooLarge);
    // Too small: refused at the end.
    let mut scan = FileScan::new("B", SizeRange { min: 4, max: 10 });
    let error = scan.observe(b"12\r\n--B--").expect_err("two bytes");
    assert_eq!(error.code, ErrorCode::EntityTooSmall);
    // Exactly at the maximum passes.
    let mut scan = FileScan::new("B", SizeRange { min: 0, max: 4 });
    scan.observe(b"1234").expect("four");
    scan.observe(b"\r\n--B--\r\n").expect("ends at four");
    assert_eq!(scan.size(), Some(4));
}
