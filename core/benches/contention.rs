//! Contention between threads driving exchanges: 1, 2 and 4 threads, all on one pool, or each
//! on a pool of its own (routed by bucket). Each iteration is one whole exchange: start
//! (classify, authorise, route, pick), connected, sent, response head, response done, and its
//! record drained. With per-pool locks, separate pools should scale with threads where one
//! shared pool serialises on its lock; the figure reported is wall time per exchange per thread.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use storefront_core::auth::{Caller, TrustAll};
use storefront_core::config::Config;
use storefront_core::exchange::{Exchange, Step};
use storefront_core::state::ProxyState;
use storefront_core::time::Instant;

const POOLS: usize = 4;

fn state() -> Arc<ProxyState> {
    let mut text = String::from("[health.active]\nenabled = false\n");
    for pool in 0..POOLS {
        text.push_str(&format!(
            "[[routing.rules]]\nbucket = \"b{pool}\"\npool = \"p{pool}\"\n"
        ));
    }
    for pool in 0..POOLS {
        let backends: Vec<String> = (0..8)
            .map(|backend| format!("\"10.{pool}.0.{backend}:9000\""))
            .collect();
        text.push_str(&format!(
            "[[pools]]\nname = \"p{pool}\"\nbackends = [{}]\n",
            backends.join(", ")
        ));
    }
    let config = Config::from_toml(&text, "bench.toml").expect("valid bench config");
    let state = ProxyState::from_config(&config, Instant::EPOCH, 1).expect("state");
    state.set_authorizer(Box::new(TrustAll));
    Arc::new(state)
}

/// Run `iterations` exchanges against bucket `bucket`.
fn exchanges(state: &ProxyState, bucket: &str, iterations: u64) {
    let head = http::Request::get(format!("/{bucket}/key"))
        .header("host", "127.0.0.1")
        .body(())
        .expect("valid request")
        .into_parts()
        .0;
    let caller = Caller::anonymous(None);
    for index in 0..iterations {
        let now = Instant::from_millis(index);
        let (mut exchange, step) = Exchange::start(state, index, now, &head, &caller);
        debug_assert!(matches!(step, Step::Forward(_)));
        exchange.handle_connected(now);
        exchange.handle_request_sent(now);
        exchange.handle_response_head(now + Duration::from_millis(1), 200);
        exchange.handle_response_done(now + Duration::from_millis(2));
        while let Some(event) = exchange.poll_event() {
            std::hint::black_box(event);
        }
    }
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("exchange_contention");
    for threads in [1usize, 2, 4] {
        for (name, separate) in [("one_pool", false), ("own_pools", true)] {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                let state = state();
                b.iter_custom(|iterations| {
                    // A benchmark measures wall time: the one place in core's tree that may.
                    #[allow(clippy::disallowed_methods)]
                    let started = WallInstant::now();
                    std::thread::scope(|scope| {
                        for thread in 0..threads {
                            let state = &state;
                            let bucket = if separate {
                                format!("b{}", thread % POOLS)
                            } else {
                                "b0".to_owned()
                            };
                            scope.spawn(move || exchanges(state, &bucket, iterations));
                        }
                    });
                    started.elapsed()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
