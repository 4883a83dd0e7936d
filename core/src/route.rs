//! Which pool serves a request: bucket rules, the caller's zone, and failover.
//!
//! Pools are data centres or clusters, and they are bulkheads: each has its own backends,
//! health and connection limits. The router decides in this order:
//!
//! 1. the first bucket rule whose glob matches the bucket sends the request to its pool
//!    (data that lives in one place only);
//! 2. otherwise the pool in the caller's own zone, if there is one;
//! 3. otherwise the default pool.
//!
//! Then failover: with [`Failover::Never`] the chosen pool serves even when it has no
//! available backend (its balancer's panic mode decides). With
//! [`Failover::WhenUnavailable`], a pool with no available backend hands over to the first
//! pool of its `failover_to` list that has one. A retry crosses the same way when its pool has
//! no available backend left that the request has not tried ([`Router::failover_for_retry`]):
//! a zone cut off before health has noticed fails each try at connect or by timeout, and the
//! last try goes where it can succeed. Failover never crosses over when the local pool is
//! merely slow: keeping data centres apart is the point, and crossing is the exception.

pub use crate::config::Failover;
use crate::glob::glob_match;
use crate::s3::S3Request;

/// Index of a pool in the router's (and the configuration's) pool list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId(pub usize);

/// What the router knows of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRoute {
    /// The pool's name.
    pub name: String,
    /// The zone / data centre it serves.
    pub zone: Option<String>,
    /// Pools to fail over to, in order.
    pub failover_to: Vec<PoolId>,
}

/// A bucket rule: buckets matching `bucket` (a glob with `*`) go to `pool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRule {
    /// Glob over bucket names; `*` matches any run of characters.
    pub bucket: String,
    /// Target pool.
    pub pool: PoolId,
}

/// Why a pool was chosen (for the access log and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// A bucket rule matched (its index).
    BucketRule(usize),
    /// The caller's zone has a pool.
    CallerZone,
    /// Neither: the default pool.
    Default,
}

/// The router's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    /// The pool to use.
    pub pool: PoolId,
    /// Why the primary pool was chosen.
    pub reason: RouteReason,
    /// The primary pool, when `pool` is a failover target instead.
    pub failed_over_from: Option<PoolId>,
}

/// The routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    pools: Vec<PoolRoute>,
    rules: Vec<BucketRule>,
    default_pool: PoolId,
    failover: Failover,
}

impl Router {
    /// A router over `pools`. Pool ids in rules and failover lists must be valid (the config
    /// validation guarantees it; out-of-range ids are ignored rather than trusted).
    pub fn new(pools: Vec<PoolRoute>, rules: Vec<BucketRule>, default_pool: PoolId, failover: Failover) -> Self {
        debug_assert!(default_pool.0 < pools.len(), "default pool out of range");
        Router {
            pools,
            rules,
            default_pool,
            failover,
        }
    }

    /// The pools, in id order.
    pub fn pools(&self) -> &[PoolRoute] {
        &self.pools
    }

    /// The pool for `request` from a caller in `caller_zone`. `has_available(pool)` says
    /// whether a pool has an available backend now.
    pub fn route(
        &self,
        request: &S3Request,
        caller_zone: Option<&str>,
        has_available: impl Fn(PoolId) -> bool,
    ) -> RouteDecision {
        let (primary, reason) = self.primary(request, caller_zone);
        if self.failover == Failover::WhenUnavailable
            && !has_available(primary)
            && let Some(pool) = self.failover_target(primary, primary, has_available)
        {
            tracing::debug!(from = %self.pools[primary.0].name, to = %self.pools[pool.0].name, "failover");
            return RouteDecision {
                pool,
                reason,
                failed_over_from: Some(primary),
            };
        }
        RouteDecision {
            pool: primary,
            reason,
            failed_over_from: None,
        }
    }

    /// The pool a retry of a request routed by `route` moves to when its own pool has no
    /// backend left to try: the first pool of the current pool's `failover_to` list (other than
    /// the one the request started in) that has an available backend, when the failover policy
    /// allows leaving a pool at all. `None`: the retry stays where it is.
    pub fn failover_for_retry(&self, route: &RouteDecision, has_available: impl Fn(PoolId) -> bool) -> Option<PoolId> {
        if self.failover != Failover::WhenUnavailable {
            return None;
        }
        let origin = route.failed_over_from.unwrap_or(route.pool);
        self.failover_target(route.pool, origin, has_available)
    }

    /// The first pool of `from`'s `failover_to` list, other than `from` and `origin`, that has
    /// an available backend.
    fn failover_target(&self, from: PoolId, origin: PoolId, has_available: impl Fn(PoolId) -> bool) -> Option<PoolId> {
        self.pools
            .get(from.0)?
            .failover_to
            .iter()
            .copied()
            .filter(|pool| pool.0 < self.pools.len() && *pool != from && *pool != origin)
            .find(|&pool| has_available(pool))
    }

    fn primary(&self, request: &S3Request, caller_zone: Option<&str>) -> (PoolId, RouteReason) {
        if let Some(bucket) = request.bucket.as_deref() {
            let rule = self
                .rules
                .iter()
                .enumerate()
                .find(|(_, rule)| rule.pool.0 < self.pools.len() && glob_match(&rule.bucket, bucket));
            if let Some((index, rule)) = rule {
                return (rule.pool, RouteReason::BucketRule(index));
            }
        }
        if let Some(zone) = caller_zone
            && let Some(index) = self.pools.iter().position(|pool| pool.zone.as_deref() == Some(zone))
        {
            return (PoolId(index), RouteReason::CallerZone);
        }
        (self.default_pool, RouteReason::Default)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method, Uri};

    use super::*;
    use crate::s3::{ClassifyConfig, classify_head};

    fn request(path: &str) -> S3Request {
        let uri: Uri = path.parse().expect("test uri");
        classify_head(&Method::GET, &uri, &HeaderMap::new(), &ClassifyConfig::default()).expect("valid")
    }

    fn router(failover: Failover) -> Router {
        let pools = vec![
            PoolRoute {
                name: "dc1".into(),
                zone: Some("dc1".into()),
                failover_to: vec![PoolId(1)],
            },
            PoolRoute {
                name: "dc2".into(),
                zone: Some("dc2".into()),
                failover_to: vec![PoolId(0)],
            },
            PoolRoute {
                name: "archive".into(),
                zone: None,
                failover_to: vec![],
            },
        ];
        let rules = vec![BucketRule {
            bucket: "cold-*".into(),
            pool: PoolId(2),
        }];
        Router::new(pools, rules, PoolId(0), failover)
    }

    #[test]
    fn bucket_rules_then_zone_then_default() {
        // Proves the order of the routing rules.
        let router = router(Failover::Never);
        let all_up = |_: PoolId| true;
        let decision = router.route(&request("/cold-2024/k"), Some("dc2"), all_up);
        assert_eq!(
            (decision.pool, decision.reason),
            (PoolId(2), RouteReason::BucketRule(0))
        );
        let decision = router.route(&request("/hot/k"), Some("dc2"), all_up);
        assert_eq!((decision.pool, decision.reason), (PoolId(1), RouteReason::CallerZone));
        let decision = router.route(&request("/hot/k"), Some("elsewhere"), all_up);
        assert_eq!((decision.pool, decision.reason), (PoolId(0), RouteReason::Default));
        let decision = router.route(&request("/"), None, all_up);
        assert_eq!(decision.pool, PoolId(0));
    }

    #[test]
    fn failover_only_when_configured_and_only_to_an_available_pool() {
        // Proves that pools stay apart unless failover is on and the local pool is down.
        let dc2_down = |pool: PoolId| pool != PoolId(1);
        let never = router(Failover::Never).route(&request("/b/k"), Some("dc2"), dc2_down);
        assert_eq!((never.pool, never.failed_over_from), (PoolId(1), None));
        let over = router(Failover::WhenUnavailable).route(&request("/b/k"), Some("dc2"), dc2_down);
        assert_eq!((over.pool, over.failed_over_from), (PoolId(0), Some(PoolId(1))));
        let both_down = |pool: PoolId| pool == PoolId(2);
        let stuck = router(Failover::WhenUnavailable).route(&request("/b/k"), Some("dc2"), both_down);
        assert_eq!(
            (stuck.pool, stuck.failed_over_from),
            (PoolId(1), None),
            "no available target: stay"
        );
    }

    #[test]
    fn a_retry_leaves_its_pool_only_when_failover_allows_and_never_back_to_where_it_started() {
        // Proves the retry's failover follows the same policy and lists as routing.
        let up = |_: PoolId| true;
        let in_dc2 = router(Failover::WhenUnavailable).route(&request("/b/k"), Some("dc2"), up);
        assert_eq!(in_dc2.pool, PoolId(1));
        let never = router(Failover::Never);
        assert_eq!(never.failover_for_retry(&in_dc2, up), None, "failover off: stay");
        let over = router(Failover::WhenUnavailable);
        assert_eq!(over.failover_for_retry(&in_dc2, up), Some(PoolId(0)));
        assert_eq!(
            over.failover_for_retry(&in_dc2, |pool| pool != PoolId(0)),
            None,
            "the failover pool has nothing available either"
        );
        let moved = RouteDecision {
            pool: PoolId(0),
            reason: in_dc2.reason,
            failed_over_from: Some(PoolId(1)),
        };
        assert_eq!(
            over.failover_for_retry(&moved, up),
            None,
            "dc1 fails over to dc2, where it began"
        );
        let cold = over.route(&request("/cold-1/k"), Some("dc1"), up);
        assert_eq!(over.failover_for_retry(&cold, up), None, "a pool with no failover list");
    }

    #[test]
    fn glob_matching() {
        // Proves the glob rules, including patterns that would make a naive matcher exponential.
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("*", "", true),
            ("logs-*", "logs-2026", true),
            ("logs-*", "logs", false),
            ("*-archive", "x-archive", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*a*a*a*a*a*b", &"a".repeat(60), false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}
