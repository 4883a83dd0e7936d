//! Cost of one pick (plus the on_start/on_end pair a real request adds), per algorithm and
//! pool size. Goal: a pick at 64 backends within 100 ns on the 2-core CI machine.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use storefront_core::balance::{AlgorithmKind, BackendSpec, BalanceParameters, Balancer, EwmaParameters};
use storefront_core::outcome::AttemptOutcome;
use storefront_core::time::Instant;

/// A pool of `count` backends balanced by `algorithm` with the shipped defaults (the tie band
/// and `stale_after` included).
fn balancer(algorithm: AlgorithmKind, count: usize) -> Balancer {
    let parameters = BalanceParameters {
        algorithm,
        ewma: EwmaParameters {
            decay: Duration::from_secs(10),
            default_latency: Duration::from_millis(30),
            stale_after: Duration::from_millis(100),
        },
        failure_penalty: Duration::from_secs(1),
        failures: storefront_core::outcome::StatusSet::TRANSIENT,
        ties: storefront_core::balance::TieBand {
            ratio: 0.25,
            floor_ns: 1e6,
        },
    };
    let specs = (0..count)
        .map(|index| BackendSpec::new(format!("10.0.{}.{}:9000", index / 256, index % 256)))
        .collect();
    let mut balancer = Balancer::new(parameters, specs, Instant::EPOCH).expect("valid bench pool");
    // Give every backend some history and some load, as in a running proxy.
    let mut rng = SmallRng::seed_from_u64(1);
    let mut now = Instant::EPOCH;
    for round in 0..(count * 20) {
        now = now + Duration::from_micros(100);
        if let Some(id) = balancer.pick(now, &mut rng) {
            balancer.on_start(id, now);
            if round % 3 != 0 {
                let latency = Duration::from_micros(500 + (round as u64 % 7) * 300);
                balancer.on_end(id, AttemptOutcome::Response { status: 200 }, latency, now);
            }
        }
    }
    balancer
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for algorithm in AlgorithmKind::ALL {
        for count in [3usize, 16, 64, 256] {
            let mut pool = balancer(algorithm, count);
            let mut rng = SmallRng::seed_from_u64(7);
            let now = Instant::from_millis(10_000);
            group.bench_function(BenchmarkId::new(algorithm.name(), count), |b| {
                b.iter(|| black_box(pool.pick(black_box(now), &mut rng)))
            });
        }
    }
    group.finish();

    // A whole request's balancer work: pick, on_start, on_end with a latency observation.
    let mut group = c.benchmark_group("pick_start_end");
    for algorithm in AlgorithmKind::ALL {
        let mut pool = balancer(algorithm, 64);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut now = Instant::from_millis(10_000);
        group.bench_function(BenchmarkId::new(algorithm.name(), 64), |b| {
            b.iter(|| {
                now = now + Duration::from_micros(10);
                let id = pool.pick(now, &mut rng).expect("non-empty pool");
                pool.on_start(id, now);
                pool.on_end(
                    id,
                    AttemptOutcome::Response { status: 200 },
                    Duration::from_millis(2),
                    now,
                );
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
