//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/dashboard` (a live view of the
//! backends: one page from the binary, no CDN, polling `/admin/backends`), `/admin/backends`,
//! drain, reload; `/admin/drain` takes the whole proxy out (for a preStop hook).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use storefront_core::balance::BackendId;
use storefront_core::route::PoolId;

use crate::app::App;
use crate::request::ProxyBody;
use crate::transport::{Accept, Connect};

/// The live view, served as it is.
const DASHBOARD: &str = include_str!("dashboard.html");

/// One backend in `GET /admin/backends`.
#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    /// `POOL_INDEX.BACKEND_ID`, as used in `POST /admin/backends/{id}/drain`.
    pub id: String,
    /// Where it is.
    pub address: String,
    /// Its pool.
    pub pool: String,
    /// Its zone.
    pub zone: Option<String>,
    /// Health's verdict (active probes).
    pub healthy: bool,
    /// Passively ejected now.
    pub ejected: bool,
    /// Draining (no new requests).
    pub draining: bool,
    /// Attempts in flight.
    pub in_flight: u32,
    /// Attempts since it joined.
    pub requests_total: u64,
    /// Attempts that failed.
    pub errors_total: u64,
    /// Peak-EWMA latency estimate.
    pub latency_ewma_ms: f64,
    /// Its relative capacity in the pool.
    pub weight: u32,
    /// The proxy's connections to it.
    pub connections: crate::backend::pool::ConnectionCounts,
}

/// The backends of the current configuration.
pub fn backends<C: Connect>(app: &App<C>) -> Vec<BackendView> {
    backend_views(&app.proxy)
}

/// The backends of `proxy`'s current configuration (the admin table and the metrics' gauges).
pub fn backend_views<C: Connect>(proxy: &crate::request::Proxy<C>) -> Vec<BackendView> {
    let generation = proxy.current();
    let now = proxy.clock.now();
    let mut views = Vec::new();
    for cell in generation.state().pools() {
        let pool = cell.lock();
        let ewma = pool.balancer().parameters().ewma;
        // Backends that left the configuration are finishing their last attempts, no longer
        // part of the pool.
        for backend in pool
            .balancer()
            .backends()
            .iter()
            .filter(|backend| !backend.is_removed())
        {
            let health = pool.health().get(backend.id());
            views.push(BackendView {
                id: format!("{}.{}", pool.id().0, backend.id().0),
                address: backend.spec().address.clone(),
                pool: pool.name().to_owned(),
                zone: backend.spec().zone.clone(),
                healthy: health.is_none_or(|h| h.probe_healthy),
                ejected: health.is_some_and(|h| h.ejected_until.is_some()),
                draining: backend.is_draining(),
                in_flight: backend.in_flight(),
                requests_total: backend.requests_total(),
                errors_total: backend.errors_total(),
                latency_ewma_ms: backend.latency_estimate(now, &ewma).as_secs_f64() * 1000.0,
                weight: backend.spec().weight,
                connections: Default::default(),
            });
        }
    }
    // Outside the pools' locks: the connection pool has its own.
    for view in &mut views {
        view.connections = proxy.connections.counts(&view.pool, &view.address);
    }
    views
}

fn respond(status: u16, content_type: &'static str, body: String) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// Answer one admin request.
pub fn handle<C: Connect>(app: &App<C>, method: &http::Method, path: &str) -> http::Response<ProxyBody> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["healthz"]) => respond(200, "text/plain", "ok\n".into()),
        ("GET", ["readyz"]) if app.is_draining() => respond(503, "text/plain", "not ready: draining\n".into()),
        ("GET", ["readyz"]) => match app.proxy.current().readiness() {
            Ok(()) => respond(200, "text/plain", "ready\n".into()),
            Err(missing) => respond(503, "text/plain", format!("not ready: {missing}\n")),
        },
        // GET too: a Kubernetes preStop hook can only GET. Draining only ever moves the replica
        // towards leaving; it carries nothing a caller could read.
        ("GET" | "POST", ["admin", "drain"]) => {
            app.drain();
            respond(200, "text/plain", "draining\n".into())
        }
        ("GET", ["dashboard"]) => respond(200, "text/html; charset=utf-8", DASHBOARD.to_owned()),
        ("GET", ["metrics"]) => respond(200, "text/plain; version=0.0.4; charset=utf-8", app.metrics.render()),
        ("GET", ["admin", "backends"]) => {
            let body = serde_json::to_string_pretty(&backends(app)).expect("backend views serialise");
            respond(200, "application/json", body)
        }
        ("POST", ["admin", "backends", id, action @ ("drain" | "undrain")]) => {
            let parsed = id
                .split_once('.')
                .and_then(|(pool, backend)| Some((pool.parse().ok()?, backend.parse().ok()?)));
            let Some((pool, backend)) = parsed else {
                return respond(
                    400,
                    "text/plain",
                    format!("backend id `{id}` is not POOL.BACKEND (see GET /admin/backends)\n"),
                );
            };
            let draining = *action == "drain";
            let generation = app.proxy.current();
            let found = generation
                .state()
                .set_draining(PoolId(pool), BackendId(backend), draining);
            generation.emit_state_events();
            if found {
                respond(200, "text/plain", format!("{action}ed {id}\n"))
            } else {
                respond(404, "text/plain", format!("no backend {id}\n"))
            }
        }
        ("POST", ["admin", "reload"]) => match app.reload() {
            Ok(()) => respond(200, "text/plain", "reloaded\n".into()),
            Err(error) => respond(
                400,
                "text/plain",
                format!("reload refused, the running configuration stays:\n{error}\n"),
            ),
        },
        _ => respond(
            404,
            "text/plain",
            "not found: /healthz /readyz /metrics /dashboard /admin/backends /admin/backends/{id}/drain /admin/drain /admin/reload\n".into(),
        ),
    }
}

/// Serve the admin endpoints from `listener`.
pub async fn serve<A: Accept, C: Connect>(mut listener: A, app: Arc<App<C>>) {
    loop {
        let io = match listener.accept().await {
            Ok((io, _)) => io,
            Err(error) => {
                // Out of file descriptors, for one: back off instead of spinning.
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let response = handle(&app, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        });
    }
}
