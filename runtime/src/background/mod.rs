//! Background work per generation: core's health timers and the probes they ask for, DNS
//! re-resolution of DNS-backed pools, warm connections opened ahead of need, and closing idle
//! backend connections; and, for the
//! whole proxy, the configuration file watched for changes ([`config_file`]).

use std::sync::Arc;
use std::time::Duration;

use storefront_core::state::{PoolCell, ProbeRequest};
use tokio::sync::watch;

use crate::backend::sign::PayloadHash;
use crate::request::body::{BodySource, ForwardBody};
use crate::request::{Generation, Proxy};
use crate::transport::Connect;

pub mod config_file;
pub mod dns;

pub use dns::drive_dns;

/// Once `terminate` fires, shut `app` down `server.drain_delay` after `drain` first fired (the
/// delay is timed here, on the runtime's clock, whoever asked).
pub async fn terminate_after_drain<C: Connect>(
    app: std::sync::Weak<crate::app::App<C>>,
    mut drain: watch::Receiver<bool>,
    mut terminate: watch::Receiver<bool>,
) {
    if drain.wait_for(|draining| *draining).await.is_err() {
        return;
    }
    let since = tokio::time::Instant::now();
    if terminate.wait_for(|terminating| *terminating).await.is_err() {
        return;
    }
    let Some(delay) = app
        .upgrade()
        .map(|app| app.proxy.current().config.server.drain_delay.get())
    else {
        return;
    };
    tokio::time::sleep_until(since + delay).await;
    if let Some(app) = app.upgrade() {
        tracing::info!(?delay, "drained: no new connections");
        app.shutdown();
    }
}

/// The longest the driver sleeps, even with no timer due (it also notices retirement).
pub(crate) const TICK_MAX: Duration = Duration::from_secs(1);

/// Run a generation's health timers and probes until it is retired or `stop` fires.
pub async fn drive_health<C: Connect>(
    proxy: Arc<Proxy<C>>,
    generation: Arc<Generation>,
    mut stop: watch::Receiver<bool>,
) {
    while !generation.is_retired() && !*stop.borrow() {
        let now = proxy.clock.now();
        // This generation's pools (its snapshot's), so that a probe's pool index matches this
        // generation's connection settings and signer whatever reloads renumber meanwhile.
        let mut probes = Vec::new();
        let mut next = None;
        for (index, cell) in generation.snapshot.pools().iter().enumerate() {
            let (queued, due) = cell.with(|pool| {
                pool.handle_timeout(now);
                let queued: Vec<ProbeRequest> = std::iter::from_fn(|| pool.poll_probe()).collect();
                (queued, pool.poll_timeout())
            });
            probes.extend(queued.into_iter().map(|probe| (index, cell.clone(), probe)));
            next = match (next, due) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (one, other) => one.or(other),
            };
        }
        generation.emit_state_events();
        for (index, cell, probe) in probes {
            tokio::spawn(run_probe(proxy.clone(), generation.clone(), index, cell, probe));
        }
        let wake = next
            .map(|due| proxy.clock.to_tokio(due))
            .unwrap_or_else(|| tokio::time::Instant::now() + TICK_MAX)
            .min(tokio::time::Instant::now() + TICK_MAX);
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(wake) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Probe one backend with `HEAD <path>`: any answer within the timeout that is not a server
/// failure is healthy (see [`answered_alive`]).
async fn run_probe<C: Connect>(
    proxy: Arc<Proxy<C>>,
    generation: Arc<Generation>,
    index: usize,
    cell: Arc<PoolCell>,
    probe: ProbeRequest,
) {
    let timeout = generation.config.health.active.timeout.get();
    let healthy = tokio::time::timeout(timeout, probe_once(&proxy, &generation, index, &probe))
        .await
        .unwrap_or(false);
    let now = proxy.clock.now();
    // To the pool that asked, held, not looked up by an index a reload may have changed.
    cell.with(|pool| pool.handle_probe_result(now, probe.backend, probe.probe, healthy));
    generation.emit_state_events();
    tracing::debug!(backend = %probe.address, healthy, "probe");
}

async fn probe_once<C: Connect>(proxy: &Proxy<C>, generation: &Generation, index: usize, probe: &ProbeRequest) -> bool {
    let Some(settings) = generation.pool_settings(index).cloned() else {
        return false;
    };
    let Ok(mut sender) = proxy.connections.open(&probe.address, &settings).await else {
        return false;
    };
    let path = &generation.config.health.active.path;
    let Ok(request) = http::Request::head(path.as_str())
        .header(http::header::HOST, probe.address.as_str())
        .body(())
    else {
        return false;
    };
    let (mut head, ()) = request.into_parts();
    if let Some(signer) = generation.signer(index)
        && signer
            .sign(&mut head, &PayloadHash::Unsigned, proxy.clock.wall())
            .is_err()
    {
        return false;
    }
    let body = ForwardBody::new(BodySource::empty(generation.timeouts().client_body_idle));
    match sender.send_request(http::Request::from_parts(head, body)).await {
        Ok(response) => answered_alive(response.status().as_u16()),
        Err(_) => false,
    }
}

/// True for a probe answer from a node that serves: anything but a server failure. 501 Not
/// Implemented counts as alive: several S3 servers (s3s-based ones among them) do not
/// implement `HEAD /` and say so, which proves they answer.
pub fn answered_alive(status: u16) -> bool {
    status < 500 || status == 501
}

/// How often warming looks at its pools.
const WARM_TICK: Duration = Duration::from_millis(100);

/// Open the connections core wants each backend to have ([`storefront_core::warm`]), every
/// [`WARM_TICK`], at most `warm_dials_per_second` per backend, until the generation is
/// retired or `stop`.
pub async fn drive_warm<C: Connect>(
    proxy: Arc<Proxy<C>>,
    generation: Arc<Generation>,
    mut stop: watch::Receiver<bool>,
) {
    // Dials each pool's backends may still make, refilled each tick (a rate below ten per
    // second dials once every few ticks).
    let mut credit = vec![0.0_f64; generation.snapshot.pools().len()];
    while !generation.is_retired() && !*stop.borrow() {
        let now = proxy.clock.now();
        for (index, cell) in generation.snapshot.pools().iter().enumerate() {
            let Some(settings) = generation.pool_settings(index) else {
                continue;
            };
            let per_tick = f64::from(settings.warm_dials_per_second) * WARM_TICK.as_secs_f64();
            credit[index] = (credit[index] + per_tick).min(per_tick.max(1.0));
            let dials = credit[index].floor() as usize;
            if dials == 0 {
                continue;
            }
            let targets = cell.with(|pool| pool.warm_targets(now));
            let mut most = 0;
            for target in targets {
                let missing = proxy
                    .connections
                    .warm_deficit(&target.address, settings, target.connections, dials);
                most = most.max(missing);
                for _ in 0..missing {
                    let (proxy, settings, address) = (proxy.clone(), settings.clone(), target.address.clone());
                    tokio::spawn(async move { proxy.connections.warm_one(&address, &settings).await });
                }
            }
            credit[index] -= most as f64;
        }
        tokio::select! {
            biased;
            () = tokio::time::sleep(WARM_TICK) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Close idle backend connections past their timeout, every few seconds, until `stop`.
pub async fn reap_idle<C: Connect>(proxy: Arc<Proxy<C>>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        proxy.connections.reap_idle();
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::answered_alive;

    #[test]
    fn probe_answers() {
        // Proves which probe answers count as a live node.
        for status in [200, 204, 301, 403, 404, 405, 501] {
            assert!(answered_alive(status), "{status}");
        }
        for status in [500, 502, 503, 504, 507] {
            assert!(!answered_alive(status), "{status}");
        }
    }
}
