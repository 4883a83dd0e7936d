//! Bound series: what one exchange and one attempt record into, bound to their attribute sets
//! once (OpenTelemetry's bound instruments) and found again by a small key.
//!
//! Recording through an unbound instrument hands the SDK a slice of attributes, which it
//! hashes (strings included) and looks up in each instrument's map, every time; with the
//! vectors and strings the attributes were built from, that cost about 1.2 µs per exchange.
//! Here the attributes of an exchange reduce to a key of static names and small integers,
//! hashed with foldhash and looked up once per exchange (and once per attempt); the series
//! found hold every instrument already bound, so a record is a few atomic updates and no
//! allocation. A key seen for the first time binds its series (allocating its attributes),
//! which happens once per distinct attribute set: their number is bounded as the attributes
//! are (see the module above). A reload clears the caches, since pool names may change.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram};
use storefront_core::auth::Decision;
use storefront_core::balance::BackendId;
use storefront_core::event::{AttemptRecord, ExchangeRecord};
use storefront_core::exchange::ExchangeOutcome;
use storefront_core::outcome::AttemptOutcome;

use super::gauges::BackendLatencies;
use super::{Metrics, Names, OTHER_BUCKET, error_type, is_credential_refusal, split_address};

/// Entries a cache holds before it starts over (a bound on what churning DNS backends or a
/// misbehaving client could make it keep; starting over only costs new bindings).
const CACHE_MAX: usize = 16_384;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One of core's static names in a key, compared and hashed by address: the names come from
/// fixed tables, so the same name is the same address, and hashing or comparing one costs as
/// much as a number. (Two copies of one name at two addresses would only bind the same
/// series twice; the SDK keeps one series per attribute set either way.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Name(&'static str);

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

/// The attribute values of an exchange's series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ExchangeKey {
    method: Name,
    operation: Name,
    /// The pool's index, none when the exchange was never routed.
    pool: Option<usize>,
    source: Name,
    status: Option<u16>,
    error: Option<Name>,
    /// `None`: no bucket attribute (no `metric_buckets`); `Some(None)`: `_other`.
    bucket: Option<Option<usize>>,
    /// The auth decision's source, result and reason, when there is one to count.
    auth: Option<(Name, Name, Name)>,
    /// A token exchange's result.
    sts: Option<Name>,
}

/// The instruments one exchange records into, bound.
pub(super) struct ExchangeSeries {
    pub(super) duration: BoundHistogram<f64>,
    pub(super) request_size: BoundHistogram<u64>,
    pub(super) response_size: BoundHistogram<u64>,
    /// Bound on first use, so that a series never used is never exported as a zero.
    ttfb: OnceLock<BoundHistogram<f64>>,
    continued: OnceLock<BoundCounter<u64>>,
    retries: OnceLock<BoundCounter<u64>>,
    decision: Option<BoundCounter<u64>>,
    sts: Option<BoundCounter<u64>>,
    /// The attributes, for the lazily bound instruments.
    attributes: Vec<KeyValue>,
    sizes: [KeyValue; 2],
    pool: KeyValue,
}

/// The attribute values of an attempt's series (the backend's address is checked on lookup:
/// ids are never reused within a process, but the check costs nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct AttemptKey {
    pool: usize,
    backend: BackendId,
    outcome: AttemptOutcome,
    last: bool,
}

/// The instruments one attempt records into, bound.
pub(super) struct AttemptSeries {
    address: String,
    pub(super) attempts: BoundCounter<u64>,
    pub(super) duration: BoundHistogram<f64>,
    pub(super) timeouts: Option<BoundCounter<u64>>,
    /// The backend's latency samples, for an attempt that got a response.
    pub(super) latencies: Option<Arc<BackendLatencies>>,
}

/// The caches of bound series.
#[derive(Default)]
pub(super) struct Series {
    exchanges: RwLock<Map<ExchangeKey, Arc<ExchangeSeries>>>,
    attempts: RwLock<Map<AttemptKey, Arc<AttemptSeries>>>,
}

impl Series {
    /// Forget every series (the names they were bound with may have changed).
    pub(super) fn clear(&self) {
        self.exchanges.write().expect("series are never poisoned").clear();
        self.attempts.write().expect("series are never poisoned").clear();
    }
}

/// Look `key` up in `cache`, binding its series with `bind` when it is new.
fn find<K: Copy + Eq + std::hash::Hash, V>(
    cache: &RwLock<Map<K, Arc<V>>>,
    key: K,
    valid: impl Fn(&V) -> bool,
    bind: impl FnOnce() -> V,
) -> Arc<V> {
    if let Some(found) = cache
        .read()
        .expect("series are never poisoned")
        .get(&key)
        .filter(|found| valid(found))
    {
        return found.clone();
    }
    let series = Arc::new(bind());
    let mut cache = cache.write().expect("series are never poisoned");
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, series.clone());
    series
}

impl ExchangeSeries {
    /// Time to first byte, bound on first use.
    pub(super) fn ttfb(&self, metrics: &Metrics) -> &BoundHistogram<f64> {
        self.ttfb.get_or_init(|| metrics.server_ttfb.bind(&self.attributes))
    }

    /// `100 Continue` answered locally, bound on first use.
    pub(super) fn continued(&self, metrics: &Metrics) -> &BoundCounter<u64> {
        self.continued
            .get_or_init(|| metrics.continued_locally.bind(&self.sizes))
    }

    /// Retries of the pool, bound on first use.
    pub(super) fn retries(&self, metrics: &Metrics) -> &BoundCounter<u64> {
        self.retries
            .get_or_init(|| metrics.retries.bind(std::slice::from_ref(&self.pool)))
    }

    /// The auth decision counter, when the exchange counts one.
    pub(super) fn decision(&self) -> Option<&BoundCounter<u64>> {
        self.decision.as_ref()
    }

    /// The token exchange counter, when the exchange was one.
    pub(super) fn sts(&self) -> Option<&BoundCounter<u64>> {
        self.sts.as_ref()
    }
}

impl Metrics {
    /// The series `record` records into.
    pub(super) fn exchange_series(&self, record: &ExchangeRecord, names: &Names) -> Arc<ExchangeSeries> {
        let source = record.caller.identity.source_name();
        let auth = match (&record.decision, &record.outcome) {
            (Some(Decision::Allow { .. }), _) => Some((source, "allowed", "allowed")),
            (Some(Decision::Deny { .. }), _) => Some((source, "denied", "denied")),
            (None, ExchangeOutcome::Rejected { code }) if is_credential_refusal(*code) => {
                Some(("signature", "refused", code.as_str()))
            }
            _ => None,
        };
        let bucket = (!names.buckets.is_empty()).then(|| {
            record
                .bucket
                .as_deref()
                .and_then(|bucket| names.buckets.iter().position(|listed| listed == bucket))
        });
        let sts = match record.outcome {
            ExchangeOutcome::Served { status } => Some(if status == 200 { "issued" } else { "refused" }),
            _ => None,
        };
        let key = ExchangeKey {
            method: Name(super::super::trace::method_name(record.method.as_ref())),
            operation: Name(record.operation.map_or("_unclassified", |operation| operation.name())),
            pool: record.route.as_ref().map(|route| route.pool.0),
            source: Name(source),
            status: record.status,
            error: error_type(record).map(Name),
            bucket,
            auth: auth.map(|(source, result, reason)| (Name(source), Name(result), Name(reason))),
            sts: sts.map(Name),
        };
        find(
            &self.series.exchanges,
            key,
            |_| true,
            || self.bind_exchange(&key, names),
        )
    }

    fn bind_exchange(&self, key: &ExchangeKey, names: &Names) -> ExchangeSeries {
        let pool = match key.pool {
            Some(pool) => self.pool(names, pool),
            None => KeyValue::new("storefront.pool", "_none"),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", key.method.0),
            KeyValue::new("rpc.method", key.operation.0),
            pool.clone(),
            KeyValue::new("storefront.identity.source", key.source.0),
        ];
        if let Some(status) = key.status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        if let Some(Name(error)) = key.error {
            attributes.push(KeyValue::new("error.type", error));
        }
        if let Some(bucket) = key.bucket {
            let bucket = bucket
                .and_then(|index| names.buckets.get(index))
                .map_or(opentelemetry::StringValue::from(OTHER_BUCKET), |bucket| {
                    opentelemetry::StringValue::from(bucket.clone())
                });
            attributes.push(KeyValue::new("storefront.bucket", bucket));
        }
        let sizes = [KeyValue::new("rpc.method", key.operation.0), pool.clone()];
        ExchangeSeries {
            duration: self.server_duration.bind(&attributes),
            request_size: self.server_request_size.bind(&sizes),
            response_size: self.server_response_size.bind(&sizes),
            ttfb: OnceLock::new(),
            continued: OnceLock::new(),
            retries: OnceLock::new(),
            decision: key.auth.map(|(Name(source), Name(result), Name(reason))| {
                self.decisions.bind(&[
                    KeyValue::new("storefront.identity.source", source),
                    KeyValue::new("storefront.auth.result", result),
                    KeyValue::new("storefront.auth.reason", reason),
                ])
            }),
            sts: key.sts.map(|Name(result)| {
                self.sts_sessions
                    .bind(&[KeyValue::new("storefront.sts.result", result)])
            }),
            attributes,
            sizes,
            pool,
        }
    }

    /// The series `attempt` (one of `attempts` in all) records into.
    /// The series of `attempt`; `last` when its answer is the one the exchange ended with (the
    /// last recorded: a retried or cancelled attempt ends before it).
    pub(super) fn attempt_series(&self, attempt: &AttemptRecord, last: bool, names: &Names) -> Arc<AttemptSeries> {
        let key = AttemptKey {
            pool: attempt.pool.0,
            backend: attempt.backend,
            outcome: attempt.outcome,
            last,
        };
        find(
            &self.series.attempts,
            key,
            |series| series.address == attempt.address,
            || self.bind_attempt(&key, &attempt.address, names),
        )
    }

    fn bind_attempt(&self, key: &AttemptKey, address: &str, names: &Names) -> AttemptSeries {
        let (host, port) = split_address(address);
        let pool = self.pool(names, key.pool);
        let mut attributes = vec![
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("server.port", i64::from(port)),
            pool.clone(),
            KeyValue::new("storefront.attempt.outcome", key.outcome.kind()),
            KeyValue::new("storefront.attempt.final", key.last),
        ];
        if let AttemptOutcome::Response { status } = key.outcome {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        let timeouts = match key.outcome {
            AttemptOutcome::Timeout(phase) => Some(self.timeouts.bind(&[
                KeyValue::new("server.address", host.to_owned()),
                pool.clone(),
                KeyValue::new("storefront.timeout.phase", phase.as_str()),
            ])),
            _ => None,
        };
        let latencies = matches!(key.outcome, AttemptOutcome::Response { .. })
            .then(|| self.latencies.backend(pool.value.as_str().as_ref(), address));
        AttemptSeries {
            address: address.to_owned(),
            attempts: self.attempts.bind(&attributes),
            duration: self.client_duration.bind(&attributes),
            timeouts,
            latencies,
        }
    }
}
