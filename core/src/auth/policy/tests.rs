//! Policy decisions, the attacks on prefixes and buckets, and properties of deny-by-default.

use http::{HeaderMap, HeaderValue, Method, Uri};
use proptest::prelude::*;

use super::*;
use crate::auth::Source;
use crate::config::Config;
use crate::s3::{ClassifyConfig, classify_head};

const RULES: &str = r#"
[[pools]]
name = "dc1"
backends = ["127.0.0.1:9000"]

[[policy.rules]]
name = "etl-reads-logs"
effect = "allow"
identity = { namespace = "etl", labels = { app = "spark" } }
actions = ["read", "list"]
buckets = ["logs"]
keys = ["2026/*", "public/*"]

[[policy.rules]]
name = "etl-writes-scratch"
effect = "allow"
identity = { namespace = "etl" }
actions = ["read", "write", "delete", "multipart"]
buckets = ["scratch-*"]

[[policy.rules]]
name = "no-deletes-in-scratch-keep"
effect = "deny"
identity = { any = true }
actions = ["delete"]
buckets = ["scratch-*"]
keys = ["keep/*"]

[[policy.rules]]
name = "public-read"
effect = "allow"
identity = { anonymous = true }
actions = ["read"]
buckets = ["www"]

[[policy.rules]]
name = "ops-key"
effect = "allow"
identity = { access_key = "AKIAOPS" }
actions = ["list", "bucket-admin"]
buckets = ["*"]
"#;

fn policy() -> Policy {
    let config = Config::from_toml(RULES, "rules.toml").unwrap_or_else(|error| panic!("{error}"));
    Policy::new(&config.policy)
}

fn request(method: &str, uri: &str, host: &str, extra: &[(&str, &str)]) -> S3Request {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(host).expect("host"));
    for (name, value) in extra {
        headers.append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let uri: Uri = uri.parse().expect("uri");
    classify_head(
        &method,
        &uri,
        &headers,
        &ClassifyConfig::with_base_domains(["s3.example.com"]),
    )
    .unwrap_or_else(|error| panic!("{uri}: {error}"))
}

fn get(path: &str) -> S3Request {
    request("GET", path, "s3.example.com", &[])
}

fn etl_pod() -> Identity {
    let mut principal = Principal::new("pod:etl/spark-exec-1", Source::Pod);
    principal.namespace = Some("etl".into());
    principal.service_account = Some("spark".into());
    principal.labels.insert("app".into(), "spark".into());
    Identity::Named(Box::new(principal))
}

fn key_identity(access_key: &str) -> Identity {
    let mut principal = Principal::new(format!("key:{access_key}"), Source::AccessKey);
    principal.access_key = Some(access_key.into());
    Identity::Named(Box::new(principal))
}

fn allowed(decision: &Decision) -> bool {
    decision.is_allowed()
}

#[test]
fn rules_allow_what_they_name_and_nothing_else() {
    // Proves matching on namespace and labels, actions, bucket globs and key globs, and deny by
    // default for everything no rule names, each decision with its reason.
    let policy = policy();
    let pod = etl_pod();
    let decision = policy.check(&pod, &get("/logs/2026/11/27.log"));
    assert!(allowed(&decision), "{decision:?}");
    assert!(format!("{decision:?}").contains("etl-reads-logs"), "{decision:?}");
    assert!(
        allowed(&policy.check(&pod, &get("/logs?list-type=2&prefix=2025/"))),
        "list is per bucket"
    );
    let outside = policy.check(&pod, &get("/logs/2025/old.log"));
    assert!(!allowed(&outside), "{outside:?}");
    assert!(format!("{outside:?}").contains("deny by default"), "{outside:?}");
    let put = request("PUT", "/logs/2026/x", "s3.example.com", &[("content-length", "1")]);
    assert!(
        !allowed(&policy.check(&pod, &put)),
        "read-only rule does not allow writes"
    );
    let scratch = request(
        "PUT",
        "/scratch-1/out/part-0",
        "s3.example.com",
        &[("content-length", "1")],
    );
    assert!(allowed(&policy.check(&pod, &scratch)));
    // Another pod without the label: the logs rule does not match, the scratch rule does.
    let mut other = Principal::new("pod:etl/tool", Source::Pod);
    other.namespace = Some("etl".into());
    let other = Identity::Named(Box::new(other));
    assert!(!allowed(&policy.check(&other, &get("/logs/2026/a"))));
    assert!(allowed(&policy.check(&other, &get("/scratch-9/a"))));
    // A pod of another namespace gets nothing.
    let mut stranger = Principal::new("pod:web/front", Source::Pod);
    stranger.namespace = Some("web".into());
    let stranger = Identity::Named(Box::new(stranger));
    assert!(!allowed(&policy.check(&stranger, &get("/scratch-9/a"))));
}

#[test]
fn explicit_deny_wins_over_allow() {
    // Proves that a deny rule beats an allow rule for the same request, whatever the order.
    let policy = policy();
    let pod = etl_pod();
    let delete = request("DELETE", "/scratch-1/keep/important", "s3.example.com", &[]);
    let decision = policy.check(&pod, &delete);
    assert!(!allowed(&decision), "{decision:?}");
    assert!(
        format!("{decision:?}").contains("no-deletes-in-scratch-keep"),
        "{decision:?}"
    );
    let other = request("DELETE", "/scratch-1/tmp/x", "s3.example.com", &[]);
    assert!(allowed(&policy.check(&pod, &other)));
    // DeleteObjects names its keys in the body: every deny rule of the bucket applies.
    let batch = request(
        "POST",
        "/scratch-1?delete",
        "s3.example.com",
        &[("content-length", "10")],
    );
    assert!(!allowed(&policy.check(&pod, &batch)));
}

#[test]
fn anonymous_and_access_keys_match_only_their_rules() {
    // Proves that anonymous callers match only `anonymous = true` rules, and access keys only
    // their own rules; listing all buckets needs a rule for "*".
    let policy = policy();
    assert!(allowed(&policy.check(&Identity::Anonymous, &get("/www/index.html"))));
    assert!(!allowed(&policy.check(&Identity::Anonymous, &get("/logs/2026/a"))));
    assert!(!allowed(&policy.check(&Identity::Trusted, &get("/www/index.html"))));
    let ops = key_identity("AKIAOPS");
    assert!(allowed(&policy.check(&ops, &get("/"))), "ListBuckets");
    assert!(allowed(
        &policy.check(&ops, &request("PUT", "/new-bucket", "s3.example.com", &[]))
    ));
    assert!(
        !allowed(&policy.check(&ops, &get("/logs/2026/a"))),
        "ops may not read data"
    );
    assert!(!allowed(&policy.check(&key_identity("AKIAOTHER"), &get("/"))));
    assert!(
        !allowed(&policy.check(&etl_pod(), &get("/"))),
        "no rule for all buckets"
    );
}

#[test]
fn dot_segments_and_encoded_slashes_do_not_escape_a_prefix() {
    // Proves the prefix attacks fail: `logs/../secret` and its encoded form `logs%2F..%2F`
    // (decoded before matching) are only allowed by rules for every key.
    let policy = policy();
    let pod = etl_pod();
    for path in [
        "/logs/2026/../secret",
        "/logs/2026%2F..%2Fsecret",
        "/logs/2026/%2E%2E/secret",
        "/logs/2026/./x",
        "/logs/public/../../etc",
    ] {
        let decision = policy.check(&pod, &get(path));
        assert!(!allowed(&decision), "{path}: {decision:?}");
    }
    // A rule for every key allows such keys (S3 stores them literally).
    assert!(allowed(&policy.check(&pod, &get("/scratch-1/a/../b"))));
    // ...but a deny rule of the bucket then applies to them whatever its keys.
    let delete = request("DELETE", "/scratch-1/tmp/../keep/x", "s3.example.com", &[]);
    assert!(!allowed(&policy.check(&pod, &delete)));
}

#[test]
fn virtual_host_and_path_style_name_the_same_bucket() {
    // Proves there is no bucket confusion: both styles classify to the same bucket and key and
    // get the same decision; a host that is not under a base domain names no bucket.
    let policy = policy();
    let pod = etl_pod();
    let path_style = get("/logs/2026/a");
    let virtual_host = request("GET", "/2026/a", "logs.s3.example.com", &[]);
    assert_eq!(
        (&path_style.bucket, &path_style.key),
        (&virtual_host.bucket, &virtual_host.key)
    );
    assert!(allowed(&policy.check(&pod, &virtual_host)));
    // `scratch-1.s3.example.com/logs/2026/a` is bucket scratch-1, key logs/2026/a.
    let confused = request("GET", "/logs/2026/a", "scratch-1.s3.example.com", &[]);
    assert_eq!(confused.bucket.as_deref(), Some("scratch-1"));
    assert_eq!(confused.key.as_deref(), Some("logs/2026/a"));
    // A lookalike host is path style: bucket from the path.
    let lookalike = request("GET", "/logs/2025/a", "logs.s3.example.com.evil.net", &[]);
    assert_eq!(lookalike.bucket.as_deref(), Some("logs"));
    assert!(!allowed(&policy.check(&pod, &lookalike)));
}

#[test]
fn a_copy_needs_read_on_its_source() {
    // Proves CopyObject checks both sides: write on the destination, read on the source.
    let policy = policy();
    let pod = etl_pod();
    let from_logs = request(
        "PUT",
        "/scratch-1/copy",
        "s3.example.com",
        &[("x-amz-copy-source", "/logs/2026/a")],
    );
    let decision = policy.check(&pod, &from_logs);
    assert!(allowed(&decision), "{decision:?}");
    let from_old = request(
        "PUT",
        "/scratch-1/copy",
        "s3.example.com",
        &[("x-amz-copy-source", "/logs/2025/a")],
    );
    let decision = policy.check(&pod, &from_old);
    assert!(!allowed(&decision), "{decision:?}");
    assert!(format!("{decision:?}").contains("logs/2025/a"), "{decision:?}");
}

#[test]
fn the_configuration_names_bad_rules() {
    // Proves validation: a rule for nobody, without actions or buckets, an unknown action, a
    // duplicate name, anonymous mixed with attributes: each named by its key path.
    let text = r#"
[[policy.rules]]
name = "a"
effect = "allow"
identity = {}
actions = []
buckets = []

[[policy.rules]]
name = "a"
effect = "allow"
identity = { anonymous = true, namespace = "x" }
actions = ["read"]
buckets = ["b"]
"#;
    let error = Config::from_toml(text, "p.toml").expect_err("invalid");
    let keys: Vec<&str> = error.problems.iter().map(|problem| problem.key.as_str()).collect();
    for key in [
        "policy.rules[0].identity",
        "policy.rules[0].actions",
        "policy.rules[0].buckets",
        "policy.rules[1].name",
        "policy.rules[1].identity",
    ] {
        assert!(keys.contains(&key), "{key} missing from {error}");
    }
    let unknown = "[[policy.rules]]\nname = \"a\"\neffect = \"allow\"\nidentity = { any = true }\nactions = [\"raed\"]\nbuckets = [\"b\"]\n";
    let error = Config::from_toml(unknown, "p.toml").expect_err("unknown action");
    assert!(error.to_string().contains("raed"), "{error}");
}

fn arbitrary_rule() -> impl Strategy<Value = PolicyRule> {
    let action = prop::sample::select(vec![
        Action::Read,
        Action::List,
        Action::Write,
        Action::Delete,
        Action::Multipart,
        Action::BucketAdmin,
    ]);
    (
        any::<bool>(),
        prop::collection::vec(action, 1..3),
        prop::sample::select(vec!["*", "b1", "b?", "x"]),
        prop::sample::select(vec!["*", "k/*", "k/a", "z*"]),
        prop::sample::select(vec!["etl", "e*", "web"]),
    )
        .prop_map(|(deny, actions, bucket, key, namespace)| PolicyRule {
            name: format!("{bucket}-{key}-{namespace}-{deny}"),
            effect: if deny { Effect::Deny } else { Effect::Allow },
            identity: IdentityMatch {
                namespace: Some(namespace.to_owned()),
                ..IdentityMatch::default()
            },
            actions,
            buckets: vec![bucket.to_owned()],
            keys: vec![key.to_owned()],
        })
}

proptest! {
    /// Over random rule sets and requests: when a deny rule covers the request, the decision
    /// is deny; allow requires an allow rule covering every access; no rules deny everything;
    /// removing allow rules never turns a deny into an allow.
    #[test]
    fn deny_wins_and_default_is_deny(
        rules in prop::collection::vec(arbitrary_rule(), 0..8),
        method in prop::sample::select(vec!["GET", "PUT", "DELETE", "HEAD"]),
        bucket in prop::sample::select(vec!["b1", "b2", "x"]),
        key in prop::sample::select(vec!["k/a", "k/b", "z", "k/../a", ""]),
    ) {
        let path = if key.is_empty() { format!("/{bucket}") } else { format!("/{bucket}/{key}") };
        let request = request(method, &path, "s3.example.com", &[]);
        let pod = etl_pod();
        let policy = Policy { rules: rules.clone() };
        let decision = policy.check(&pod, &request);
        let access = accesses(&request)[0];
        let denied_by_rule = rules
            .iter()
            .any(|rule| rule.effect == Effect::Deny && identity_matches(&rule.identity, &pod) && rule_covers(rule, &access));
        if denied_by_rule {
            prop_assert!(!decision.is_allowed(), "{decision:?}");
        }
        if decision.is_allowed() {
            prop_assert!(rules.iter().any(|rule| rule.effect == Effect::Allow && rule_covers(rule, &access)));
        }
        prop_assert!(!Policy::default().check(&pod, &request).is_allowed());
        let fewer = Policy { rules: rules.iter().filter(|rule| rule.effect == Effect::Deny).cloned().collect() };
        prop_assert!(!fewer.check(&pod, &request).is_allowed());
    }
}
