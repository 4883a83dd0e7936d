//! Cost of recording one exchange: the metrics observer alone, and with the access log (its
//! line formatted and queued; the writer drains to /dev/null on its own thread). Goal (issue
//! "Observability" §7): recording one exchange within 250 ns on the 2-core CI machine.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use storefront::telemetry::Observer;
use storefront::telemetry::access_log::AccessLog;
use storefront::telemetry::metrics::Metrics;
use storefront_core::auth::{Caller, Decision};
use storefront_core::balance::BackendId;
use storefront_core::config::Config;
use storefront_core::event::{AttemptRecord, Event, ExchangeRecord};
use storefront_core::exchange::ExchangeOutcome;
use storefront_core::outcome::AttemptOutcome;
use storefront_core::route::{PoolId, RouteDecision, RouteReason};
use storefront_core::s3::Operation;
use storefront_core::time::Instant;

fn config() -> Config {
    Config::from_toml(
        "[auth]\nmode = \"trust\"\n\n[telemetry]\naccess_log = \"/dev/null\"\n\n[[pools]]\nname = \"dc1\"\nbackends = [\"10.0.0.1:9000\", \"10.0.0.2:9000\", \"10.0.0.3:9000\"]\n",
        "bench.toml",
    )
    .expect("a valid bench configuration")
}

/// A GET of 64 KiB served by one attempt, as most exchanges are.
fn get(id: u64) -> Event {
    let at = |millis: u64| Instant::from_nanos(millis * 1_000_000);
    Event::Exchange(Box::new(ExchangeRecord {
        id,
        method: Some(http::Method::GET),
        started_at: at(0),
        ended_at: at(12),
        operation: Some(Operation::GetObject),
        bucket: Some("logs".to_owned()),
        key: Some("2026/12/02/part-00042.parquet".to_owned()),
        caller: Caller::anonymous(Some("10.1.2.3".parse().expect("an address"))),
        decision: Some(Decision::Allow {
            reason: "allowed by rule `etl-reads-logs` (read)".into(),
        }),
        route: Some(RouteDecision {
            pool: PoolId(0),
            reason: RouteReason::Default,
            failed_over_from: None,
        }),
        attempts: vec![AttemptRecord {
            pool: PoolId(0),
            backend: BackendId(1),
            address: "10.0.0.2:9000".to_owned(),
            number: 1,
            started_at: at(0),
            connected_at: Some(at(0)),
            sent_at: Some(at(0)),
            first_byte: Some(Duration::from_millis(4)),
            ended_at: at(12),
            outcome: AttemptOutcome::Response { status: 200 },
            stale_connections: 0,
            dispatched_unavailable: false,
            panic_mode: false,
            hedge: false,
        }],
        outcome: ExchangeOutcome::Completed { status: 200 },
        status: Some(200),
        fault: None,
        retry_budget_exhausted: false,
        continued_locally: false,
        request_body_bytes: 0,
        response_body_bytes: 65_536,
        trace: None,
        hedge: None,
    }))
}

fn record(c: &mut Criterion) {
    let config = config();
    let metrics = Metrics::new(&config).expect("metrics");
    let event = get(1);
    c.bench_function("metrics: record one exchange (one attempt)", |b| {
        b.iter(|| metrics.core_event(black_box(&event)));
    });
    let log = AccessLog::start(&config.telemetry)
        .expect("the access log starts")
        .expect("the access log is on");
    c.bench_function("access log: format and queue one line", |b| {
        b.iter(|| log.core_event(black_box(&event)));
    });
    eprintln!(
        "access log lines dropped while benchmarking (queue full): {}",
        log.dropped()
    );
}

criterion_group!(benches, record);
criterion_main!(benches);
