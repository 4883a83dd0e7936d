//! Re-resolution of DNS-backed pools: every A/AAAA record of the name is a backend, and the
//! set is replaced in place on each answer (backends that stay keep their state).

use std::sync::Arc;

use storefront_core::balance::BackendSpec;
use storefront_core::route::PoolId;
use tokio::sync::watch;

use super::TICK_MAX;
use crate::request::{Generation, Proxy};
use crate::transport::Connect;

/// Re-resolve every DNS-backed pool on its interval, updating its backends (state is kept for
/// addresses that stay). The first resolution happens at once.
pub async fn drive_dns<C: Connect>(proxy: Arc<Proxy<C>>, generation: Arc<Generation>, mut stop: watch::Receiver<bool>) {
    let pools: Vec<(PoolId, storefront_core::config::DnsSection, Option<String>)> = generation
        .config
        .pools
        .iter()
        .enumerate()
        .filter_map(|(index, pool)| pool.dns.clone().map(|dns| (PoolId(index), dns, pool.zone.clone())))
        .collect();
    if pools.is_empty() {
        return;
    }
    let mut next = vec![tokio::time::Instant::now(); pools.len()];
    while !generation.is_retired() && !*stop.borrow() {
        for (index, (pool, dns, zone)) in pools.iter().enumerate() {
            if next[index] > tokio::time::Instant::now() {
                continue;
            }
            next[index] = tokio::time::Instant::now() + dns.refresh.get();
            match proxy.connections.connector().resolve(&dns.name, dns.port).await {
                Ok(addresses) => {
                    let mut specs: Vec<BackendSpec> = addresses
                        .into_iter()
                        .map(|address| BackendSpec {
                            zone: zone.clone(),
                            ..BackendSpec::new(address.to_string())
                        })
                        .collect();
                    specs.sort_by(|a, b| a.name.cmp(&b.name));
                    specs.dedup_by(|a, b| a.name == b.name);
                    let now = proxy.clock.now();
                    let result = generation.update_backends(*pool, specs, now);
                    generation.emit_state_events();
                    match result {
                        Ok(summary) if !summary.added.is_empty() || !summary.removed.is_empty() => {
                            tracing::info!(name = %dns.name, added = summary.added.len(), removed = summary.removed.len(), "DNS backends changed");
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(name = %dns.name, %error, "DNS answer refused")
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(name = %dns.name, %error, "DNS resolution failed; keeping the current backends")
                }
            }
        }
        let wake = next
            .iter()
            .min()
            .copied()
            .unwrap_or_else(|| tokio::time::Instant::now() + TICK_MAX);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + TICK_MAX)) => {}
            _ = stop.changed() => {}
        }
    }
}
