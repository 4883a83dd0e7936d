//! A running proxy: generations, their background drivers, reload and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use storefront_core::config::Config;
use tokio::sync::watch;

use crate::background as driver;
use crate::clock::Clock;
use crate::request::{ConfigureError, Generation, Proxy};
use crate::server::{self, ServerLimits};
use crate::settings;
use crate::settings::KeyPair;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Tracer;
use crate::telemetry::{Events, RuntimeEvent};
use crate::transport::{Accept, Connect};

/// Shared by the server, the admin listener and the signal handlers.
pub struct App<C: Connect> {
    /// The proxy.
    pub proxy: Arc<Proxy<C>>,
    /// Its metrics (the admin listener serves them at `/metrics`).
    pub metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    stop: watch::Sender<bool>,
    /// Drain: `/readyz` answers 503, keep-alive ends, new connections get one request each.
    drain: watch::Sender<bool>,
    /// Terminate: drain for `server.drain_delay`, then [`App::shutdown`].
    terminate: watch::Sender<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl<C: Connect> App<C> {
    /// A proxy for `config` (already validated, credentials resolved), not yet serving. Its
    /// RNG is seeded from the operating system's entropy, so that replicas of a fleet do not
    /// draw the same picks and probe jitter in lockstep; the seed is logged for replay.
    pub fn new(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        config_path: Option<PathBuf>,
        connector: C,
    ) -> Result<Arc<Self>, ConfigureError> {
        let seed = os_seed();
        tracing::info!(seed, "random seed from OS entropy (replay with --seed {seed})");
        Self::with_seed(config, credentials, config_path, connector, seed)
    }

    /// [`App::new`] with the seed of the balancer's RNG given (`--seed`, and the simulation,
    /// which derives it from its run's seed so that every random choice replays).
    pub fn with_seed(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        config_path: Option<PathBuf>,
        connector: C,
        seed: u64,
    ) -> Result<Arc<Self>, ConfigureError> {
        Self::with_clock(config, credentials, config_path, connector, seed, Clock::start())
    }

    /// [`App::with_seed`] on `clock` (the simulation's: a simulated wall clock, so that
    /// signatures and session expiries replay too).
    pub fn with_clock(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        config_path: Option<PathBuf>,
        connector: C,
        seed: u64,
        clock: Clock,
    ) -> Result<Arc<Self>, ConfigureError> {
        let tls = match &config.server.tls {
            Some(section) => Some(crate::server::tls::server_config(section).map_err(ConfigureError::ServerTls)?),
            None => None,
        };
        let events = Arc::new(Events::default());
        let metrics = Arc::new(Metrics::new(&config).map_err(|error| ConfigureError::Telemetry(error.to_string()))?);
        if config.telemetry.metrics {
            events.subscribe(metrics.clone());
        }
        if let Some(log) = AccessLog::start(&config.telemetry).map_err(ConfigureError::Telemetry)? {
            let log = Arc::new(log);
            events.subscribe(log.clone());
            metrics.watch_access_log(log);
        }
        let tracer = Tracer::start(&config).map_err(ConfigureError::Telemetry)?.map(Arc::new);
        if let Some(tracer) = &tracer {
            events.subscribe(tracer.clone());
            metrics.watch_tracer(tracer.counts().clone());
        }
        let generation = Generation::new(config, credentials, &clock, seed, events.clone(), &connector)?;
        let proxy = Arc::new(Proxy::new(generation, connector, clock, seed, events, tracer));
        let watched = Arc::downgrade(&proxy);
        metrics.watch_backends(Arc::new(move || {
            watched
                .upgrade()
                .map(|proxy| crate::admin::backend_views(&proxy))
                .unwrap_or_default()
        }));
        let watched = Arc::downgrade(&proxy);
        metrics.watch_pods(Arc::new(move || {
            watched.upgrade().and_then(|proxy| proxy.current().pod_stats())
        }));
        let (stop, _) = watch::channel(false);
        let (drain, _) = watch::channel(false);
        let (terminate, _) = watch::channel(false);
        let app = Arc::new(App {
            proxy,
            metrics,
            config_path,
            stop,
            drain,
            terminate,
            tls,
        });
        tokio::spawn(driver::terminate_after_drain(
            Arc::downgrade(&app),
            app.drain.subscribe(),
            app.terminate.subscribe(),
        ));
        app.start_drivers(app.proxy.current());
        tokio::spawn(driver::reap_idle(app.proxy.clone(), app.stop.subscribe()));
        if let Some(path) = app.config_path.clone()
            && app.proxy.current().config.admin.watch_config
        {
            let loaded = driver::config_file::digest_now(&path);
            tokio::spawn(driver::config_file::watch_config_file(
                Arc::downgrade(&app),
                path,
                loaded,
                app.stop.subscribe(),
            ));
        }
        Ok(app)
    }

    fn start_drivers(&self, generation: Arc<Generation>) {
        tokio::spawn(driver::drive_health(
            self.proxy.clone(),
            generation.clone(),
            self.stop.subscribe(),
        ));
        let warms = generation
            .config
            .pools
            .iter()
            .any(|pool| pool.connections.min_idle > 0 || pool.connections.warm_ahead);
        if warms {
            tokio::spawn(driver::drive_warm(
                self.proxy.clone(),
                generation.clone(),
                self.stop.subscribe(),
            ));
        }
        tokio::spawn(driver::drive_dns(self.proxy.clone(), generation, self.stop.subscribe()));
    }

    /// Serve clients from `listener` until [`App::shutdown`].
    pub async fn serve<A: Accept>(self: &Arc<Self>, listener: A) {
        let config = self.proxy.current().config.clone();
        let timeouts = *self.proxy.current().timeouts();
        let limits = ServerLimits {
            max_connections: config.server.max_connections,
            max_connections_per_client: config.server.max_connections_per_client,
            max_header_bytes: config.server.max_header_bytes,
            max_headers: config.server.max_headers,
            header_read_timeout: timeouts.client_header,
            idle_timeout: config.timeouts.client_idle.get(),
            handshake_timeout: config.timeouts.tls_handshake.get(),
            write_idle_timeout: timeouts.response_write_idle,
            shutdown_grace: config.server.shutdown_grace.get(),
            proxy_protocol_from: config.server.proxy_protocol_from.clone(),
        };
        server::serve(
            listener,
            self.proxy.clone(),
            limits,
            self.tls.clone(),
            self.drain.subscribe(),
            self.stop.subscribe(),
        )
        .await;
        // Drained: nothing will lease a backend connection again.
        self.proxy.connections.close_idle();
    }

    /// Re-read the configuration file and apply it in place (backends that stay keep their
    /// health, ejections, latency estimates, in-flight counts and connections; the pod watch
    /// survives unless its settings changed); a bad file is refused and the running
    /// configuration stays. Server limits and listen addresses take effect at restart only.
    pub fn reload(&self) -> Result<(), ConfigureError> {
        let next = self
            .next_generation()
            .inspect_err(|_| self.proxy.events.runtime(RuntimeEvent::ConfigRefused))?;
        self.metrics.configure(&next.config);
        if let Some(tracer) = &self.proxy.tracer {
            tracer.configure(&next.config);
        }
        let path = self.config_path.as_ref().ok_or(ConfigureError::NoConfigFile)?;
        let next = self.proxy.swap(next);
        let names: Vec<&str> = next.config.pools.iter().map(|pool| pool.name.as_str()).collect();
        self.proxy.connections.retain_pools(&names);
        self.start_drivers(next);
        tracing::info!(file = %path.display(), "configuration reloaded");
        Ok(())
    }

    /// The generation the configuration file now describes (not yet in force).
    fn next_generation(&self) -> Result<Generation, ConfigureError> {
        let path = self.config_path.as_ref().ok_or(ConfigureError::NoConfigFile)?;
        let (config, credentials) = settings::load(path)?;
        self.proxy.current().next(
            config,
            credentials,
            &self.proxy.clock,
            self.proxy.connections.connector(),
        )
    }

    /// Stop accepting, drain in-flight requests (up to the grace period), stop the drivers.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Start draining, and stay up: `/readyz` answers 503 (endpoints and load balancers take
    /// the replica out), idle keep-alive connections close, in-flight responses carry
    /// `Connection: close`, and connections still arriving are served one request each.
    /// Idempotent; a later [`App::terminate`] counts its drain delay from the first call.
    pub fn drain(&self) {
        if !self.drain.send_replace(true) {
            tracing::info!("draining: not ready, closing keep-alive connections");
        }
    }

    /// Whether the proxy is draining.
    pub fn is_draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// Drain (if not already), and [`App::shutdown`] once `server.drain_delay` has passed since
    /// the drain began: what SIGTERM does, so that a replica leaving a fleet costs its clients
    /// nothing. Returns at once; [`App::serve`] returns when the shutdown is done.
    pub fn terminate(&self) {
        self.drain();
        self.terminate.send_replace(true);
    }

    /// Bind a tokio listener on `address`.
    pub async fn bind(address: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    }
}

/// A seed from the operating system's entropy source. Should the source fail (it does not on
/// Linux after boot), the seed falls back to the process id mixed with the wall clock: still
/// distinct per replica, which is what matters here; nothing cryptographic uses it.
pub fn os_seed() -> u64 {
    use rand::TryRng as _;
    rand::rngs::SysRng.try_next_u64().unwrap_or_else(|error| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        tracing::warn!(%error, "no OS entropy: seeding from the process id and the clock");
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}
