//! The `[auth]` and `[policy]` sections: who callers are (identity sources, access keys,
//! sessions, pods, CIDRs) and what they may do (policy rules).

use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// `[policy]`: rules matching identities to actions on buckets and keys. A request is allowed
/// when some `allow` rule matches it and no `deny` rule does; nothing matching means denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// The rules, in any order (explicit deny wins regardless of order).
    pub rules: Vec<PolicyRule>,
}

/// `[[policy.rules]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Unique name, quoted in every decision this rule makes.
    pub name: String,
    /// `allow` or `deny`.
    pub effect: Effect,
    /// Whom the rule is for (every field given must match).
    pub identity: IdentityMatch,
    /// `read`, `list`, `write`, `delete`, `multipart`, `bucket-admin`.
    pub actions: Vec<crate::s3::Action>,
    /// Bucket names or globs (`*` any run of characters, `?` one character).
    pub buckets: Vec<String>,
    /// Object key globs, matched against the exact (percent-decoded) key. Default `["*"]`.
    /// Keys with `.` or `..` segments are only ever matched by `"*"`: a backend or a client
    /// library that resolves them would escape the prefix.
    #[serde(default = "all_keys")]
    pub keys: Vec<String>,
}

fn all_keys() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A rule's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Grant.
    Allow,
    /// Refuse, whatever else allows.
    Deny,
}

/// `[policy.rules.identity]`: which callers a rule is for. Every field given must match; at
/// least one must be given (`any = true` for every authenticated caller).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityMatch {
    /// Every authenticated caller (not anonymous ones).
    pub any: bool,
    /// Callers with no identity at all.
    pub anonymous: bool,
    /// Identity name glob (`pod:spark/*`, `key:AKIA*`, `cidr:office`).
    pub name: Option<String>,
    /// Kubernetes namespace glob.
    pub namespace: Option<String>,
    /// Kubernetes service account glob.
    pub service_account: Option<String>,
    /// Pod labels that must all be present with these values.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Access key id.
    pub access_key: Option<String>,
    /// Name of a CIDR map entry.
    pub cidr: Option<String>,
}

impl IdentityMatch {
    /// True when no field narrows the match (and `any`/`anonymous` are off).
    pub fn is_empty(&self) -> bool {
        !self.any
            && !self.anonymous
            && self.name.is_none()
            && self.namespace.is_none()
            && self.service_account.is_none()
            && self.labels.is_empty()
            && self.access_key.is_none()
            && self.cidr.is_none()
    }
}

/// `[auth]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `deny` (default: every request is refused), `policy` (identities from the sources
    /// below, decisions from `[[policy.rules]]`, anonymous callers denied unless a rule says
    /// otherwise) or `trust` (INSECURE: every caller may do anything the backend credentials
    /// allow).
    pub mode: AuthMode,
    /// Static source-address identities (`[[auth.cidrs]]`), for hosts outside Kubernetes and
    /// the demo. The most specific network containing the peer address wins.
    pub cidrs: Vec<CidrIdentity>,
    /// SigV4 access keys the proxy verifies signatures with (`[[auth.keys]]`); for production
    /// put them in `keys_file` instead, which is read again on every reload.
    pub keys: Vec<AccessKey>,
    /// A TOML file of `[[keys]]` entries shaped like `[[auth.keys]]`, read at start and on
    /// every reload (a file that does not parse keeps the running configuration).
    pub keys_file: Option<String>,
    /// Accept AWS Signature Version 2 (`Authorization: AWS key:signature`, and presigned URLs
    /// with `AWSAccessKeyId`, `Expires`, `Signature`) from the same keys. Default off: SigV2
    /// is HMAC-SHA1 over a canonical form that binds neither the payload nor a region, and AWS
    /// has retired it; turn it on only for old tools that cannot sign SigV4 (awscli v1's
    /// `presign`, `s3cmd signurl`). Off, such requests get `400 InvalidRequest`.
    pub sigv2: bool,
    /// Largest accepted difference between a signature's time and the proxy's clock. Default
    /// 15 min (S3's): past it, `RequestTimeTooSkewed`.
    pub max_clock_skew: ConfigDuration,
    /// The token exchange (`[auth.sts]`): pods trade their ServiceAccount token for session
    /// credentials. Off unless given.
    pub sts: Option<StsSection>,
    /// Pod identity by source IP (`[auth.pods]`), from a watch of the cluster's pods. Off
    /// unless given.
    pub pods: Option<PodsSection>,
    /// The identity sources, in the order they are tried: `sigv4` (a signed request must
    /// verify, and is then its key's or session's identity), `pods`, `cidrs`. Default all
    /// three in that order. A pod IP claimed by two pods stops the search: anonymous.
    pub sources: Vec<IdentitySource>,
}

/// An identity source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// SigV4 signatures (access keys and sessions).
    Sigv4,
    /// The pod holding the peer address.
    Pods,
    /// The static CIDR map.
    Cidrs,
}

/// `[auth.pods]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodsSection {
    /// The cluster's pod networks: only peer addresses inside them are looked up (a peer
    /// outside them is not a pod, whatever the watch says).
    pub networks: Vec<ipnet::IpNet>,
    /// The Kubernetes API server; default: the in-cluster service account's.
    #[serde(default)]
    pub kubernetes_url: Option<String>,
}

/// `[auth.sts]`: an STS-compatible `AssumeRoleWithWebIdentity` endpoint on the proxy's own
/// listener (`POST /`). Tokens are checked with a Kubernetes TokenReview; sessions are
/// stateless (their claims travel in the session token, sealed with the master key), so every
/// replica with the same master key accepts them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsSection {
    /// The audience ServiceAccount tokens must be issued for (the projected volume's
    /// `audience`).
    pub audience: String,
    /// Session lifetime. Default 1 h (AWS's default for web-identity sessions).
    #[serde(default = "default_session")]
    pub duration: ConfigDuration,
    /// A file holding the master key (at least 32 bytes); every replica needs the same.
    #[serde(default)]
    pub master_key_file: Option<String>,
    /// The master key itself (tests and demos; prefer `master_key_file`).
    #[serde(default)]
    pub master_key: Option<String>,
    /// The Kubernetes API server; default: the in-cluster service account's.
    #[serde(default)]
    pub kubernetes_url: Option<String>,
}

fn default_session() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}

impl std::fmt::Debug for StsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsSection")
            .field("audience", &self.audience)
            .field("duration", &self.duration)
            .field("master_key_file", &self.master_key_file)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("kubernetes_url", &self.kubernetes_url)
            .finish()
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::default(),
            cidrs: Vec::new(),
            keys: Vec::new(),
            keys_file: None,
            sigv2: false,
            max_clock_skew: ConfigDuration::from_secs(15 * 60),
            sts: None,
            pods: None,
            sources: vec![IdentitySource::Sigv4, IdentitySource::Pods, IdentitySource::Cidrs],
        }
    }
}

/// `[[auth.keys]]`: a caller's SigV4 key pair.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Identity name (`key:<name>` in logs); default the access key id.
    #[serde(default)]
    pub name: Option<String>,
    /// The callers' zone / data centre, which routing prefers.
    #[serde(default)]
    pub zone: Option<String>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

/// `[[auth.cidrs]]`: callers from these networks are identity `cidr:<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrIdentity {
    /// The identity's name (rules match it with `identity.cidr`).
    pub name: String,
    /// Networks, such as `"10.1.0.0/16"` or `"fd00::/8"`.
    pub networks: Vec<ipnet::IpNet>,
    /// The callers' zone / data centre, which routing prefers.
    #[serde(default)]
    pub zone: Option<String>,
}

/// How callers are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Refuse everything.
    #[default]
    Deny,
    /// Identify callers and apply `[[policy.rules]]`.
    Policy,
    /// Accept everything (insecure; for trusted networks and the demo).
    Trust,
}
