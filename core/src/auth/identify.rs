//! Who the caller is: identity precedence, decided in core from facts the runtime gathers.
//!
//! The runtime performs the look-ups (it verifies a SigV4 signature, asks the pod table about
//! the peer address, matches the CIDR map) for the sources [`consulted`] names, and hands
//! their answers over as [`IdentityFacts`]; [`identify`] decides, in `auth.sources` order:
//!
//! - `sigv4`: a signed request must verify: a signature that does not is refused outright
//!   (a caller that signs claims an identity, and a bad claim is not quietly downgraded to
//!   "anonymous"); one that does is its key's or session's identity.
//! - `pods`: the one running pod that holds the peer address. An address claimed by two pods
//!   stops the search: the caller is anonymous (no later source may name it either, since the
//!   address is in dispute).
//! - `cidrs`: the most specific configured network holding the peer address.
//!
//! The first source with an answer wins; with none the caller is anonymous. Only `policy` mode
//! consults sources: `trust` trusts every caller, `deny` needs no identity.

use std::net::IpAddr;

use crate::auth::pods::PodLookup;
use crate::auth::{Caller, Identity, Principal};
use crate::config::{AuthMode, IdentitySource};
use crate::s3::S3ErrorResponse;

/// What the runtime found out about one request's caller.
#[derive(Clone, Debug, Default)]
pub struct IdentityFacts {
    /// The SigV4 verification's verdict; `None` when the request carries no signature (or
    /// `sigv4` is not consulted).
    pub signature: Option<Result<Principal, S3ErrorResponse>>,
    /// The pod table's answer for the peer address; `None` when pods are not consulted.
    pub pod: Option<PodLookup>,
    /// The CIDR map's entry for the peer address.
    pub cidr: Option<Principal>,
}

/// Who the caller is, and which source said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identified {
    /// The caller, as the exchange and policy see it.
    pub caller: Caller,
    /// The source that named it; `None` for anonymous and trusted callers.
    pub source: Option<IdentitySource>,
}

/// The identity sources the runtime must look up for `mode`: `sources` in policy mode, none
/// otherwise.
pub fn consulted(mode: AuthMode, sources: &[IdentitySource]) -> &[IdentitySource] {
    match mode {
        AuthMode::Policy => sources,
        AuthMode::Trust | AuthMode::Deny => &[],
    }
}

/// Decide who the caller from `peer` is (see the module docs). `Err` is the error a refused
/// signature answers with.
pub fn identify(
    mode: AuthMode,
    sources: &[IdentitySource],
    peer: IpAddr,
    facts: IdentityFacts,
) -> Result<Identified, S3ErrorResponse> {
    let IdentityFacts {
        mut signature,
        mut pod,
        mut cidr,
    } = facts;
    let mut found: Option<(Principal, IdentitySource)> = None;
    for &source in consulted(mode, sources) {
        let principal = match source {
            IdentitySource::Sigv4 => match signature.take() {
                Some(verdict) => Some(verdict?),
                None => None,
            },
            IdentitySource::Pods => match pod.take() {
                Some(PodLookup::Pod(principal)) => Some(*principal),
                Some(PodLookup::Ambiguous) => {
                    tracing::warn!(%peer, "two pods claim this address: caller treated as anonymous");
                    break;
                }
                Some(PodLookup::Unknown | PodLookup::Untrusted) | None => None,
            },
            IdentitySource::Cidrs => cidr.take(),
        };
        if let Some(principal) = principal {
            found = Some((principal, source));
            break;
        }
    }
    let (identity, zone, source) = match (mode, found) {
        (AuthMode::Trust, _) => (Identity::Trusted, None, None),
        (_, Some((principal, source))) => {
            let zone = principal.zone.clone();
            (Identity::Named(Box::new(principal)), zone, Some(source))
        }
        (_, None) => (Identity::Anonymous, None, None),
    };
    Ok(Identified {
        caller: Caller {
            peer: Some(peer),
            zone,
            identity,
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Source;
    use crate::s3::ErrorCode;

    fn named(name: &str, source: Source) -> Principal {
        let mut principal = Principal::new(name, source);
        principal.zone = Some(format!("zone-of-{name}"));
        principal
    }

    fn facts(signature: Option<Result<&str, ()>>, pod: Option<PodLookup>, cidr: bool) -> IdentityFacts {
        IdentityFacts {
            signature: signature.map(|verdict| {
                verdict
                    .map(|name| named(name, Source::AccessKey))
                    .map_err(|()| S3ErrorResponse::new(ErrorCode::SignatureDoesNotMatch, "bad"))
            }),
            pod,
            cidr: cidr.then(|| named("cidr:build", Source::Cidr)),
        }
    }

    /// A table row: name, mode, sources, facts, and the expected principal name (`Err` for a
    /// refusal).
    type Case = (
        &'static str,
        AuthMode,
        Vec<IdentitySource>,
        IdentityFacts,
        Result<Option<&'static str>, ()>,
    );

    fn pod() -> Option<PodLookup> {
        Some(PodLookup::Pod(Box::new(named("pod:etl/spark", Source::Pod))))
    }

    #[test]
    fn sources_are_tried_in_order() {
        // Proves identity precedence as a table: the first source with an answer wins, a bad
        // signature is refused wherever sigv4 is consulted before a winner, an address two pods
        // claim stops the search, trust and deny consult nothing.
        use IdentitySource::{Cidrs, Pods, Sigv4};
        let peer: IpAddr = "10.0.0.7".parse().expect("address");
        let all = [Sigv4, Pods, Cidrs];
        let cases: Vec<Case> = vec![
            (
                "signed wins",
                AuthMode::Policy,
                all.to_vec(),
                facts(Some(Ok("key:A")), pod(), true),
                Ok(Some("key:A")),
            ),
            (
                "bad signature refused",
                AuthMode::Policy,
                all.to_vec(),
                facts(Some(Err(())), pod(), true),
                Err(()),
            ),
            (
                "pod before a bad signature",
                AuthMode::Policy,
                vec![Pods, Sigv4],
                facts(Some(Err(())), pod(), true),
                Ok(Some("pod:etl/spark")),
            ),
            (
                "unsigned: the pod",
                AuthMode::Policy,
                all.to_vec(),
                facts(None, pod(), true),
                Ok(Some("pod:etl/spark")),
            ),
            (
                "no pod: the cidr",
                AuthMode::Policy,
                all.to_vec(),
                facts(None, Some(PodLookup::Unknown), true),
                Ok(Some("cidr:build")),
            ),
            (
                "ambiguous pod stops",
                AuthMode::Policy,
                all.to_vec(),
                facts(None, Some(PodLookup::Ambiguous), true),
                Ok(None),
            ),
            (
                "cidr first",
                AuthMode::Policy,
                vec![Cidrs, Pods],
                facts(None, pod(), true),
                Ok(Some("cidr:build")),
            ),
            (
                "source not listed",
                AuthMode::Policy,
                vec![Sigv4],
                facts(None, pod(), true),
                Ok(None),
            ),
            (
                "nothing: anonymous",
                AuthMode::Policy,
                all.to_vec(),
                facts(None, None, false),
                Ok(None),
            ),
            (
                "deny consults nothing",
                AuthMode::Deny,
                all.to_vec(),
                facts(Some(Err(())), pod(), true),
                Ok(None),
            ),
        ];
        for (name, mode, sources, facts, expected) in cases {
            let result = identify(mode, &sources, peer, facts);
            match (expected, result) {
                (Err(()), Err(error)) => assert_eq!(error.code, ErrorCode::SignatureDoesNotMatch, "{name}"),
                (Ok(expected), Ok(identified)) => {
                    let got = match &identified.caller.identity {
                        Identity::Named(principal) => Some(principal.name.as_str()),
                        _ => None,
                    };
                    assert_eq!(got, expected, "{name}");
                    assert_eq!(identified.caller.peer, Some(peer), "{name}");
                    let zone = expected.map(|name| format!("zone-of-{name}"));
                    assert_eq!(identified.caller.zone, zone, "{name}: the identity's zone routes");
                    assert_eq!(identified.source.is_some(), expected.is_some(), "{name}");
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
        let trusted = identify(AuthMode::Trust, &all, peer, facts(Some(Ok("key:A")), pod(), true)).expect("trusted");
        assert_eq!(trusted.caller.identity, Identity::Trusted);
        assert_eq!(trusted.caller.zone, None);
        assert!(consulted(AuthMode::Trust, &all).is_empty());
    }
}
