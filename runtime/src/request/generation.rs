//! One configuration generation: what the runtime derived from a configuration (signers,
//! connection settings, key stores, sessions, the token exchange, the pod watch) over core's
//! state, which the generations share; and who the caller of a request is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use storefront_core::auth::cidr::CidrMap;
use storefront_core::auth::identify::{self, IdentityFacts};
use storefront_core::auth::policy::Policy;
use storefront_core::auth::{Authorize, Caller};
use storefront_core::config::{AuthMode, AuthSection, Config, ConfigError, IdentitySource, StsSection};
use storefront_core::event::Event;
use storefront_core::exchange::{Exchange, Step};
use storefront_core::s3::S3ErrorResponse;
use storefront_core::state::{ProxyState, Snapshot, StateError, Timeouts};

use crate::auth::pods::PodWatch;
use crate::auth::sessions::Sessions;
use crate::auth::sigv4::{ChunkVerifier, KeyStore, Rejection};
use crate::auth::sts::Sts;
use crate::backend::pool::PoolSettings;
use crate::backend::sign::Signer;
use crate::backend::tls::BackendTls;
use crate::clock::Clock;
use crate::settings::KeyPair;
use crate::telemetry::Events;
use crate::transport::Kubernetes;

/// One configuration generation: what the runtime derived from a configuration, over core's
/// state, which generations share (a reload reconfigures it in place).
pub struct Generation {
    /// The configuration.
    pub config: Arc<Config>,
    pub(crate) state: Arc<ProxyState>,
    /// Core's snapshot of this generation's configuration: its requests route among these
    /// pools, whose indices match this generation's signers and connection settings.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) signers: Vec<Signer>,
    pub(crate) pool_settings: Vec<PoolSettings>,
    pub(crate) timeouts: Timeouts,
    pub(crate) cidrs: CidrMap,
    pub(crate) keys: KeyStore,
    pub(crate) sts: Option<Arc<Sts>>,
    pub(crate) pods: Option<Arc<PodWatch>>,
    pub(crate) retired: AtomicBool,
    pub(crate) events: Arc<Events>,
}

/// Why a configuration could not be put into service, at start or on a reload. Every message
/// names the configuration key (and file) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigureError {
    /// The file did not load, parse or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Core refused the configuration (pools, backends).
    #[error(transparent)]
    State(#[from] StateError),
    /// `server.tls` could not be set up.
    #[error("server.tls: {0}")]
    ServerTls(String),
    /// A pool's `tls` could not be set up.
    #[error("pools[{pool}].tls: {message}")]
    BackendTls {
        /// The pool's index.
        pool: usize,
        /// What was wrong.
        message: String,
    },
    /// The access keys (`auth.keys_file`) could not be read.
    #[error("{0}")]
    Keys(String),
    /// The token exchange (`auth.sts`) could not be set up.
    #[error("{0}")]
    Sts(String),
    /// No client of the Kubernetes API (`auth.pods`, `auth.sts`) could be built.
    #[error(transparent)]
    Kubernetes(#[from] crate::transport::KubernetesError),
    /// Telemetry (`[telemetry]`) could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
    /// A reload was asked of a proxy that was not started from a file.
    #[error("this proxy was not started from a configuration file")]
    NoConfigFile,
}

/// The authoriser `config` asks for.
fn authorizer(config: &Config) -> Box<dyn Authorize> {
    match config.auth.mode {
        AuthMode::Trust => Box::new(storefront_core::auth::TrustAll),
        AuthMode::Deny => Box::new(storefront_core::auth::DenyAll),
        AuthMode::Policy => Box::new(Policy::new(&config.policy)),
    }
}

impl Generation {
    /// Build a first generation from a validated configuration and resolved pool
    /// credentials, with core's state fresh (its pools' RNGs derive from `seed`).
    pub fn new(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        clock: &Clock,
        seed: u64,
        events: Arc<Events>,
        kubernetes: &dyn Kubernetes,
    ) -> Result<Self, ConfigureError> {
        let state = ProxyState::from_config(&config, clock.now(), seed)?;
        state.set_authorizer(authorizer(&config));
        let state = Arc::new(state);
        let snapshot = state.snapshot();
        Self::build(config, credentials, state, snapshot, None, events, kubernetes)
    }

    /// The generation that follows this one for `config`: core's state is reconfigured in
    /// place (backends that stay keep their health, ejections, latency estimates, in-flight
    /// counts), and the pod watch carries over unless its settings changed. On error nothing
    /// changed and this generation stays in force.
    pub fn next(
        &self,
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        clock: &Clock,
        kubernetes: &dyn Kubernetes,
    ) -> Result<Self, ConfigureError> {
        let pods = (config.auth.pods == self.config.auth.pods && config.auth.mode == self.config.auth.mode)
            .then(|| self.pods.clone())
            .flatten();
        let mut next = Self::build(
            config,
            credentials,
            self.state.clone(),
            self.snapshot.clone(),
            pods,
            self.events.clone(),
            kubernetes,
        )?;
        // Last, once everything fallible on the runtime's side is built: reconfigure core.
        next.state
            .reconfigure(&next.config, authorizer(&next.config), clock.now())?;
        next.snapshot = next.state.snapshot();
        next.emit_state_events();
        Ok(next)
    }

    fn build(
        config: Config,
        credentials: Vec<Option<KeyPair>>,
        state: Arc<ProxyState>,
        snapshot: Arc<Snapshot>,
        pods: Option<Arc<PodWatch>>,
        events: Arc<Events>,
        kubernetes: &dyn Kubernetes,
    ) -> Result<Self, ConfigureError> {
        let cidrs = CidrMap::new(&config.auth.cidrs);
        let mut keys = load_keys(&config.auth).map_err(ConfigureError::Keys)?;
        let sts = match &config.auth.sts {
            Some(section) => {
                let sessions = master_key(section)
                    .and_then(Sessions::new)
                    .map_err(ConfigureError::Sts)?;
                keys = keys.with_sessions(sessions.clone());
                let client = kubernetes.kubernetes(section.kubernetes_url.as_deref(), "auth.sts")?;
                Some(Arc::new(Sts::new(section, sessions, client)))
            }
            None => None,
        };
        let pods = match (&config.auth.pods, pods) {
            (Some(_), Some(kept)) => Some(kept),
            (Some(section), None) if config.auth.mode == AuthMode::Policy => {
                let client = kubernetes.kubernetes(section.kubernetes_url.as_deref(), "auth.pods")?;
                Some(Arc::new(PodWatch::start(section, client)))
            }
            _ => None,
        };
        let timeouts = Timeouts::from_config(&config);
        let signers = config
            .pools
            .iter()
            .zip(credentials)
            .map(|(pool, credentials)| Signer::new(pool.region.clone(), credentials))
            .collect();
        let mut pool_settings = Vec::with_capacity(config.pools.len());
        for (index, pool) in config.pools.iter().enumerate() {
            let tls = match &pool.tls {
                Some(section) => Some(
                    BackendTls::new(section).map_err(|message| ConfigureError::BackendTls { pool: index, message })?,
                ),
                None => None,
            };
            let fingerprint = {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::hash::DefaultHasher::new();
                format!("{:?}", (&pool.connections, &pool.tls, timeouts.backend_connect)).hash(&mut hasher);
                hasher.finish()
            };
            pool_settings.push(PoolSettings {
                pool: pool.name.clone(),
                fingerprint,
                max_per_backend: pool.connections.max_per_backend,
                wait: pool.connections.wait.get(),
                max_waiting: pool.connections.max_waiting,
                idle_timeout: pool.connections.idle_timeout.get(),
                connect_timeout: timeouts.backend_connect,
                warm_dials_per_second: pool.connections.warm_dials_per_second,
                tls,
            });
        }
        Ok(Generation {
            config: Arc::new(config),
            state,
            snapshot,
            signers,
            pool_settings,
            timeouts,
            cidrs,
            keys,
            sts,
            pods,
            retired: AtomicBool::new(false),
            events,
        })
    }

    /// Who the caller of `parts` from `peer` is: the runtime looks up what the configured
    /// identity sources say (verifying a signature, asking the pod table and the CIDR map) and
    /// core decides (`auth::identify`). A signed upload that won by its signature comes with
    /// the verifier of its chunk signatures.
    pub fn identify(
        &self,
        parts: &http::request::Parts,
        peer: std::net::IpAddr,
        now: std::time::SystemTime,
    ) -> Result<(Caller, Option<ChunkVerifier>), Rejection> {
        let mut chunks = None;
        let caller = self.identify_by(peer, || {
            let verified = if crate::auth::sigv2::is_signed(parts) {
                self.verify_sigv2(parts, now)
            } else {
                self.keys.verify(parts, now, self.config.auth.max_clock_skew.get())
            };
            match verified {
                Ok(Some(verified)) => {
                    chunks = verified.chunks;
                    Some(Ok(verified.principal))
                }
                Ok(None) => None,
                Err(rejection) => Some(Err(S3ErrorResponse::new(rejection.code, rejection.message))),
            }
        })?;
        let chunks = chunks.filter(|_| caller.1 == Some(IdentitySource::Sigv4));
        Ok((caller.0, chunks))
    }

    /// Who the caller of a browser form upload is: as [`Generation::identify`], with the
    /// signature the form's fields carry instead of the head's.
    pub fn identify_form(
        &self,
        form: &storefront_core::s3::form::Form,
        peer: std::net::IpAddr,
        now: std::time::SystemTime,
    ) -> Result<Caller, Rejection> {
        self.identify_by(peer, || {
            let credential = match form.credential() {
                Ok(credential) => credential,
                Err(error) => return Some(Err(error)),
            };
            match crate::auth::form::verify(&self.keys, credential, now, self.config.auth.sigv2) {
                Ok(principal) => principal.map(Ok),
                Err(rejection) => Some(Err(S3ErrorResponse::new(rejection.code, rejection.message))),
            }
        })
        .map(|(caller, _)| caller)
    }

    /// Core's decision on the caller from `peer`, given what the configured identity sources
    /// say: `signature` (consulted only where SigV4 is a source) and the pod table and CIDR
    /// map's answers. Also which source won.
    fn identify_by(
        &self,
        peer: std::net::IpAddr,
        signature: impl FnOnce() -> Option<Result<storefront_core::auth::Principal, S3ErrorResponse>>,
    ) -> Result<(Caller, Option<IdentitySource>), Rejection> {
        let auth = &self.config.auth;
        let mut facts = IdentityFacts::default();
        let mut signature = Some(signature);
        for source in identify::consulted(auth.mode, &auth.sources) {
            match source {
                IdentitySource::Sigv4 => facts.signature = signature.take().and_then(|signature| signature()),
                IdentitySource::Pods => facts.pod = self.pods.as_ref().map(|pods| pods.lookup(peer)),
                IdentitySource::Cidrs => facts.cidr = self.cidrs.lookup(peer),
            }
        }
        let identified = identify::identify(auth.mode, &auth.sources, peer, facts).map_err(|error| Rejection {
            code: error.code,
            message: error.message.into_owned(),
        })?;
        Ok((identified.caller, identified.source))
    }

    /// A SigV2 signature verified, where `auth.sigv2` accepts them.
    fn verify_sigv2(
        &self,
        parts: &http::request::Parts,
        now: std::time::SystemTime,
    ) -> Result<Option<crate::auth::sigv4::Verified>, Rejection> {
        if !self.config.auth.sigv2 {
            return Err(crate::auth::reject(
                storefront_core::s3::ErrorCode::InvalidRequest,
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
            ));
        }
        // Virtual-host style signs the bucket in front of the path.
        let bucket = storefront_core::s3::classify(parts, self.snapshot.settings().classify_config())
            .ok()
            .filter(|request| request.addressing == storefront_core::s3::Addressing::VirtualHost)
            .and_then(|request| request.bucket);
        crate::auth::sigv2::verify(
            &self.keys,
            parts,
            bucket.as_deref(),
            now,
            self.config.auth.max_clock_skew.get(),
        )
        .map(Some)
    }

    /// Core's state (shared with the generations before and after this one). Drain its
    /// events with [`Generation::emit_state_events`] after calling into it.
    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// Replace the backends of this generation's pool `pool` (a DNS answer), in place.
    pub fn update_backends(
        &self,
        pool: storefront_core::route::PoolId,
        specs: Vec<storefront_core::balance::BackendSpec>,
        now: storefront_core::time::Instant,
    ) -> Result<storefront_core::balance::UpdateSummary, StateError> {
        match self.snapshot.pools().get(pool.0) {
            Some(cell) => cell.update_backends(specs, now),
            None => Ok(storefront_core::balance::UpdateSummary::default()),
        }
    }

    /// Hand the events core's state queued to the observers.
    pub fn emit_state_events(&self) {
        let events: Vec<Event> = std::iter::from_fn(|| self.state.poll_event()).collect();
        self.events.emit(events);
    }

    /// Run one step of `exchange` (core locks its pool for the call), then hand what the
    /// exchange queued (its pool's events, and its record once it has ended) to the observers.
    pub fn step(&self, exchange: &mut Exchange, f: impl FnOnce(&mut Exchange) -> Step) -> Step {
        let step = f(exchange);
        self.drain(exchange);
        step
    }

    /// Hand what an exchange queued to the observers.
    pub(crate) fn drain(&self, exchange: &mut Exchange) {
        let events: Vec<Event> = std::iter::from_fn(|| exchange.poll_event()).collect();
        self.events.emit(events);
    }

    /// The pod watch's figures, where pods are an identity source.
    pub fn pod_stats(&self) -> Option<crate::auth::pods::PodWatchStats> {
        self.pods.as_ref().map(|pods| pods.stats())
    }

    /// Whether this generation can serve what it is configured for (the `/readyz` rule): the
    /// pod table has its first listing where pods are an identity source, and every pool has
    /// an available backend (which a DNS pool has only once its name first resolved). `Err`
    /// says what is missing.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.pods.as_ref().is_some_and(|pods| !pods.is_synced()) {
            return Err("the pod table has not listed the cluster's pods yet");
        }
        if !self.state.is_ready() {
            return Err("a pool has no available backend");
        }
        Ok(())
    }

    /// The per-phase timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The signer of a pool.
    pub fn signer(&self, pool: usize) -> Option<&Signer> {
        self.signers.get(pool)
    }

    /// The pool settings of a pool.
    pub fn pool_settings(&self, pool: usize) -> Option<&PoolSettings> {
        self.pool_settings.get(pool)
    }

    /// True once a newer generation replaced this one.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// The access keys of `auth`: inline ones, then those of its keys file.
fn load_keys(auth: &AuthSection) -> Result<KeyStore, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KeysFile {
        #[serde(default)]
        keys: Vec<storefront_core::config::AccessKey>,
    }
    let mut keys = auth.keys.clone();
    if let Some(path) = &auth.keys_file {
        let text = std::fs::read_to_string(path).map_err(|error| format!("auth.keys_file `{path}`: {error}"))?;
        let file: KeysFile = toml::from_str(&text).map_err(|error| format!("auth.keys_file `{path}`: {error}"))?;
        keys.extend(file.keys);
    }
    Ok(KeyStore::new(keys))
}

/// The session master key of `section`: its file's bytes (surrounding whitespace trimmed) or
/// the inline key.
fn master_key(section: &StsSection) -> Result<Vec<u8>, String> {
    match (&section.master_key_file, &section.master_key) {
        (Some(path), _) => std::fs::read(path)
            .map(|bytes| bytes.trim_ascii().to_vec())
            .map_err(|error| format!("auth.sts.master_key_file `{path}`: {error}")),
        (None, Some(key)) => Ok(key.as_bytes().to_vec()),
        (None, None) => Err("auth.sts needs master_key_file or master_key".to_owned()),
    }
}
