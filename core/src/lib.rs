//! storefront-core: the sans-IO heart of Storefront, an S3 load-balancing reverse proxy.
//!
//! This crate takes every decision the proxy makes and performs none of its IO. It opens no
//! socket, reads no clock and draws no random number of its own: time comes in as
//! [`time::Instant`] arguments and randomness as `&mut impl rand::Rng`. That is what lets the
//! same code run in the tokio/hyper runtime and, replayed exactly from a seed, in the turmoil
//! simulation; and what lets property tests drive it through millions of events.
//!
//! The pieces, in the order a request meets them:
//!
//! - [`s3`]: classify a request head (operation, bucket, exact key, addressing style,
//!   idempotency) and render the S3 errors the proxy answers itself.
//! - [`auth`]: the caller and the authorisation seam, decided from headers alone.
//! - [`route`]: which pool (data centre) serves the request; bucket rules and failover.
//! - [`balance`]: which backend of the pool; four algorithms behind one trait.
//! - [`health`]: passive ejection and active probes, as a timer-driven state machine.
//! - [`retry`]: whether a failed attempt may be retried, and the retry budget.
//! - [`exchange`]: one request's life as a state machine the runtime drives.
//! - [`forward`]: the forwarding plan: the backend's head, the body's framing, the hash to sign.
//! - [`pool`]: one pool's balancer, health, retry budget, RNG and events, kept consistent.
//! - [`state`]: what all exchanges share: every pool behind its own lock, and the settings;
//!   reconfigured in place on reload.
//! - [`event`]: what core did, as records the driver drains for telemetry and reports.
//! - [`config`]: the TOML schema, defaults with their reasons, validation: a leaf that the
//!   modules above compile their own types from.
//! - [`glob`]: the one pattern matcher of policy and routing rules.
//! - [`outcome`]: how an attempt ended, and whose fault it was.
//! - [`trace`]: an exchange's place in a distributed trace, carried to its record.
//!
//! Conventions, after quinn-proto: input arrives through `handle_*(now, ...)` methods, output
//! leaves through return values and `poll_*` methods, `poll_timeout()` says when the driver
//! must call back, and `now` never goes backwards across calls into one machine.
#![forbid(unsafe_code)]

pub mod auth;
pub mod balance;
pub mod calendar;
pub mod config;
pub mod event;
pub mod exchange;
pub mod forward;
pub mod glob;
pub mod health;
pub mod hedge;
pub mod outcome;
pub mod pool;
pub mod retry;
pub mod route;
pub mod s3;
pub mod state;
pub mod time;
pub mod trace;
pub mod warm;
