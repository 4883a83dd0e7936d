//! Who is calling, and may they do this.
//!
//! The exchange needs a [`Caller`] (peer address, zone, identity) and an [`Authorize`] step
//! that returns a [`Decision`] from the request head alone, before any body byte is read.
//! Identity sources fill in the caller: [`cidr`] (static networks), [`pods`] (the pod table a
//! Kubernetes watch feeds), and in the runtime SigV4 verification of access keys; [`identify`]
//! decides which of them names the caller. [`policy`] decides what the caller may do. [`TrustAll`] (`[auth] mode = "trust"`) is insecure and says so in its decisions;
//! [`DenyAll`] is the default.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::s3::S3Request;

pub mod cidr;
pub mod identify;
pub mod pods;
pub mod policy;

/// Who the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// Nothing is known about the caller.
    Anonymous,
    /// Accepted without proof because the proxy runs in trust mode.
    Trusted,
    /// An identity established by an identity source (a CIDR map entry, a pod, an access key).
    Named(Box<Principal>),
}

/// Where an identity came from: how much the proxy verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A static CIDR → identity map entry (the peer address alone).
    Cidr,
    /// A Kubernetes pod found by its IP (the peer address, checked against the pod watch).
    Pod,
    /// A SigV4 signature verified with an access key the proxy holds.
    AccessKey,
    /// A session issued by the proxy's token exchange.
    Session,
}

impl Source {
    /// The source's name in logs and metric attributes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Cidr => "cidr",
            Source::Pod => "pod",
            Source::AccessKey => "access_key",
            Source::Session => "session",
        }
    }
}

impl Identity {
    /// How the identity was established, as logs and metric attributes name it: a
    /// [`Source`]'s name, `anonymous` or `trusted`.
    pub fn source_name(&self) -> &'static str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Trusted => "trusted",
            Identity::Named(principal) => principal.source.as_str(),
        }
    }
}

/// An established identity and the attributes policy rules match on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The identity's name, as logs refer to it (`pod:ns/name`, `key:AKIA...`, `cidr:office`).
    pub name: String,
    /// How it was established.
    pub source: Source,
    /// Kubernetes namespace (pods and sessions).
    pub namespace: Option<String>,
    /// Kubernetes service account (pods and sessions).
    pub service_account: Option<String>,
    /// Pod labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The access key the request was signed with.
    pub access_key: Option<String>,
    /// The name of the CIDR map entry the peer address fell in.
    pub cidr: Option<String>,
    /// The identity's zone / data centre, which routing prefers.
    pub zone: Option<String>,
    /// The Kubernetes node a pod runs on.
    pub node: Option<String>,
}

impl Principal {
    /// A principal named `name` from `source`, with no attributes yet.
    pub fn new(name: impl Into<String>, source: Source) -> Self {
        Principal {
            name: name.into(),
            source,
            namespace: None,
            service_account: None,
            labels: std::collections::BTreeMap::new(),
            access_key: None,
            cidr: None,
            zone: None,
            node: None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Trusted => f.write_str("trusted"),
            Identity::Named(principal) => f.write_str(&principal.name),
        }
    }
}

/// The caller of one request, as the runtime saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The peer address of the client connection (after PROXY protocol, if trusted).
    pub peer: Option<IpAddr>,
    /// The caller's zone / data centre, which routing prefers.
    pub zone: Option<String>,
    /// Who the caller is.
    pub identity: Identity,
}

impl Caller {
    /// An anonymous caller from `peer` with no zone.
    pub fn anonymous(peer: Option<IpAddr>) -> Self {
        Caller {
            peer,
            zone: None,
            identity: Identity::Anonymous,
        }
    }
}

/// An authorisation decision, with the reason that the access log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow {
        /// Why (the rule that matched).
        reason: Cow<'static, str>,
    },
    /// The request is refused with `403 AccessDenied`.
    Deny {
        /// Why (the rule that matched, or "no rule allows").
        reason: Cow<'static, str>,
    },
}

impl Decision {
    /// True for `Allow`.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Decides, from the caller and the classified request head, whether a request may proceed.
pub trait Authorize: Send + Sync + fmt::Debug {
    /// The decision for `caller` doing `request`. Must not block: it runs on the request path.
    fn decide(&self, caller: &Caller, request: &S3Request) -> Decision;
}

/// Allow everything: `[auth] mode = "trust"`. INSECURE: anyone who can reach the proxy acts
/// with the backend credentials the proxy holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrustAll;

impl Authorize for TrustAll {
    fn decide(&self, _caller: &Caller, _request: &S3Request) -> Decision {
        Decision::Allow {
            reason: Cow::Borrowed("auth mode `trust` (insecure): every caller is allowed"),
        }
    }
}

/// Deny everything: the safe default until a policy is configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyAll;

impl Authorize for DenyAll {
    fn decide(&self, _caller: &Caller, _request: &S3Request) -> Decision {
        Decision::Deny {
            reason: Cow::Borrowed("no policy is configured: deny by default"),
        }
    }
}
