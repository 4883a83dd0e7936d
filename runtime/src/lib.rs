//! storefront: the S3 load-balancing reverse proxy's runtime.
//!
//! A tokio + hyper server and backend client that drive `storefront-core`: core decides
//! (classify, authorise, route, pick, retry, eject); this crate does the IO (accept, read,
//! dial, sign, stream, time out) and reports back. The folders follow the request:
//!
//! - [`server`]: accept, PROXY protocol, TLS on the listener, write-idle timeouts;
//! - [`request`]: one request's path, from the head to the record: the generation it runs
//!   under, driving core's exchange, its attempts, the response streamed back, bodies;
//! - [`auth`]: SigV4 verification, sessions, the token exchange (STS), the pod watch;
//! - [`backend`]: connection pools, TLS to backends, re-signing;
//! - [`background`]: probes, DNS re-resolution, idle-connection reaping;
//! - [`telemetry`]: the event seam's observers;
//! - [`admin`]: health, readiness, backend state, drain, reload;
//! - [`app`]: a running proxy: generations, reload, shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod background;
pub mod clock;
#[cfg(feature = "demo")]
pub mod demo;
pub mod request;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod transport;

pub use app::App;
