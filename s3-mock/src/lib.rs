//! s3-mock: a VAST-like S3 cluster for tests, the demo and the simulation.
//!
//! N nodes serve one in-memory namespace, as the VIPs of one VAST cluster do. Each node is a
//! real S3 server (s3s, with SigV4 verification against the cluster's key), with a capacity model
//! that turns load into queueing latency and `503 SlowDown`, run-time fault injection (slow
//! factor, error rate, crash and restart, stalled or broken response bodies, slow writes),
//! and per-node counters. Nodes serve over any transport that implements
//! [`transport::Listener`]: tokio TCP here, turmoil in the simulation. Nothing inside reads a
//! wall clock (unless asked to date objects by it: the demo) or draws unseeded randomness, so
//! a simulated run replays exactly.
#![forbid(unsafe_code)]

pub mod capacity;
pub mod clock;
pub mod cluster;
pub mod fault;
pub mod form;
pub mod node;
pub mod s3;
pub mod stats;
pub mod store;
pub mod transport;

pub use capacity::CapacityConfig;
pub use cluster::{ClusterConfig, MockCluster, serve_stats, stats_json};
pub use fault::{BodyFault, ErrorKind, Faults};
pub use node::{NodeHandle, NodeService, run_node};
pub use stats::StatsSnapshot;
