//! The policy engine: rules from `[[policy.rules]]` decide, from the identity and the
//! classified request head alone, whether a request may proceed, and say why.
//!
//! Semantics (deny by default, explicit deny wins):
//!
//! - A request needs one or two accesses: its operation's [`Action`] on its bucket and key,
//!   and for `CopyObject` / `UploadPartCopy` also `read` on the copy source.
//! - An access is denied when any `deny` rule matches it, allowed when an `allow` rule matches
//!   it and no `deny` rule does, and denied otherwise. The request is allowed only when every
//!   access is.
//! - `list` and `bucket-admin` are granted per bucket: key globs do not restrict them (a list
//!   with any prefix is allowed when the bucket is). `ListBuckets` names no bucket and needs a
//!   rule whose buckets include `"*"`.
//! - Object actions without a key in the head (`DeleteObjects`, whose keys are in the body)
//!   are allowed only by rules whose keys include `"*"`, and hit every `deny` rule of the
//!   bucket: the head cannot say which keys the body names.
//! - A key with a `.` or `..` segment (`logs/../secret`, also when it arrived encoded as
//!   `logs%2F..%2Fsecret`: keys are matched after percent-decoding) is allowed only by rules
//!   whose keys include `"*"`, and hits every `deny` rule of the bucket: a backend or library
//!   that resolves such segments would otherwise escape the prefix.
//!
//! Globs: `*` matches any run of characters (`/` included), `?` exactly one; nothing else is
//! special. Matching is case-sensitive, as S3 names are.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::auth::{Authorize, Caller, Decision, Identity, Principal};
use crate::config::{Effect, IdentityMatch, PolicyRule, PolicySection};
use crate::glob::glob_match;
use crate::s3::{Action, Operation, S3Request};

/// The configured rules.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<PolicyRule>,
}

/// One access a request needs.
#[derive(Clone, Copy, Debug)]
struct Access<'a> {
    action: Action,
    bucket: Option<&'a str>,
    key: Option<&'a str>,
    /// The object's key, when the action is about an object (false for list and admin).
    object_level: bool,
}

impl Policy {
    /// A policy of `section`'s rules (validated with the configuration).
    pub fn new(section: &PolicySection) -> Policy {
        Policy {
            rules: section.rules.clone(),
        }
    }

    /// The decision for `identity` doing `request`.
    pub fn check(&self, identity: &Identity, request: &S3Request) -> Decision {
        let accesses = accesses(request);
        let mut allowed_by = Vec::with_capacity(accesses.len());
        for access in &accesses {
            let matching = |effect: Effect| {
                self.rules.iter().find(|rule| {
                    rule.effect == effect && identity_matches(&rule.identity, identity) && rule_covers(rule, access)
                })
            };
            if let Some(rule) = matching(Effect::Deny) {
                return Decision::Deny {
                    reason: Cow::Owned(format!(
                        "denied by rule `{}`: {} on {} for {identity}",
                        rule.name,
                        action_name(access.action),
                        target(access)
                    )),
                };
            }
            match matching(Effect::Allow) {
                Some(rule) => allowed_by.push((rule.name.as_str(), access.action)),
                None => {
                    return Decision::Deny {
                        reason: Cow::Owned(format!(
                            "no rule allows {} on {} for {identity} (deny by default)",
                            action_name(access.action),
                            target(access)
                        )),
                    };
                }
            }
        }
        let mut reason = String::from("allowed by rule");
        for (index, (name, action)) in allowed_by.iter().enumerate() {
            let _ = write!(
                reason,
                "{} `{name}` ({})",
                if index == 0 { "" } else { " and" },
                action_name(*action)
            );
        }
        Decision::Allow {
            reason: Cow::Owned(reason),
        }
    }
}

impl Authorize for Policy {
    fn decide(&self, caller: &Caller, request: &S3Request) -> Decision {
        self.check(&caller.identity, request)
    }
}

/// The accesses `request` needs.
fn accesses(request: &S3Request) -> Vec<Access<'_>> {
    let action = request.operation.action();
    let object_level = matches!(
        action,
        Action::Read | Action::Write | Action::Delete | Action::Multipart
    );
    let mut accesses = vec![Access {
        action,
        bucket: request.bucket.as_deref(),
        key: request.key.as_deref().filter(|_| object_level),
        object_level,
    }];
    if matches!(request.operation, Operation::CopyObject | Operation::UploadPartCopy)
        && let Some(source) = &request.copy_source
    {
        accesses.push(Access {
            action: Action::Read,
            bucket: Some(&source.bucket),
            key: Some(&source.key),
            object_level: true,
        });
    }
    accesses
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::List => "list",
        Action::Write => "write",
        Action::Delete => "delete",
        Action::Multipart => "multipart",
        Action::BucketAdmin => "bucket-admin",
    }
}

fn target(access: &Access<'_>) -> String {
    match (access.bucket, access.key) {
        (None, _) => "all buckets".to_owned(),
        (Some(bucket), Some(key)) => format!("`{bucket}/{key}`"),
        (Some(bucket), None) if access.object_level => format!("unnamed keys of `{bucket}`"),
        (Some(bucket), None) => format!("bucket `{bucket}`"),
    }
}

/// Whether `rule` (of either effect) covers the action, bucket and key of `access`.
fn rule_covers(rule: &PolicyRule, access: &Access<'_>) -> bool {
    if !rule.actions.contains(&access.action) {
        return false;
    }
    let bucket_ok = match access.bucket {
        Some(bucket) => rule.buckets.iter().any(|pattern| glob_match(pattern, bucket)),
        None => rule.buckets.iter().any(|pattern| pattern == "*"),
    };
    if !bucket_ok {
        return false;
    }
    if !access.object_level {
        return true;
    }
    let everything = rule.keys.iter().any(|pattern| pattern == "*");
    match access.key {
        // The head does not say which keys: only a rule for every key allows, every deny
        // rule of the bucket applies.
        None => everything || rule.effect == Effect::Deny,
        Some(key) if has_dot_segment(key) => everything || rule.effect == Effect::Deny,
        Some(key) => rule.keys.iter().any(|pattern| glob_match(pattern, key)),
    }
}

fn has_dot_segment(key: &str) -> bool {
    key.split('/').any(|segment| segment == "." || segment == "..")
}

/// Whether `identity` is one of those `matcher` names.
fn identity_matches(matcher: &IdentityMatch, identity: &Identity) -> bool {
    match identity {
        Identity::Anonymous => matcher.anonymous,
        // Trust mode bypasses policy; a trusted identity reaching it matches nothing.
        Identity::Trusted => false,
        Identity::Named(principal) => {
            !matcher.anonymous && !matcher.is_empty() && principal_matches(matcher, principal)
        }
    }
}

fn principal_matches(matcher: &IdentityMatch, principal: &Principal) -> bool {
    let optional_glob = |pattern: &Option<String>, value: &Option<String>| match (pattern, value) {
        (None, _) => true,
        (Some(pattern), Some(value)) => glob_match(pattern, value),
        (Some(_), None) => false,
    };
    let exact = |wanted: &Option<String>, value: &Option<String>| wanted.is_none() || wanted == value;
    matcher
        .name
        .as_ref()
        .is_none_or(|pattern| glob_match(pattern, &principal.name))
        && optional_glob(&matcher.namespace, &principal.namespace)
        && optional_glob(&matcher.service_account, &principal.service_account)
        && matcher
            .labels
            .iter()
            .all(|(label, value)| principal.labels.get(label) == Some(value))
        && exact(&matcher.access_key, &principal.access_key)
        && exact(&matcher.cidr, &principal.cidr)
}

#[cfg(test)]
mod tests;
