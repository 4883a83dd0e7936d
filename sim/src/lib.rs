//! sim: Storefront, its clients and an S3 cluster under turmoil, replayed from a seed.
//!
//! Every host runs real code over turmoil's simulated network: s3-mock nodes (with their
//! capacity model), the storefront runtime (its own server and backend client, through the
//! transport traits) and client models (DNS caching, keep-alive pools, a seeded workload).
//! Only tokio's clock (turmoil's) and seeded RNGs are used, so a seed replays exactly.
#![forbid(unsafe_code)]

pub mod client;
pub mod fleet;
pub mod kubernetes;
pub mod plot;
mod proxy_config;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sign;
pub mod swarm;
mod tally;
pub mod transport;

use report::{ModeReport, Report};
use run::Mode;
use scenario::{Scenario, ScenarioError};

/// The scenarios that ship with Storefront: (name, file text).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("hotspot", include_str!("../../scenarios/hotspot.toml")),
    ("slow-node", include_str!("../../scenarios/slow-node.toml")),
    ("node-crash", include_str!("../../scenarios/node-crash.toml")),
    ("slow-reader", include_str!("../../scenarios/slow-reader.toml")),
    ("dc-partition", include_str!("../../scenarios/dc-partition.toml")),
    ("tail", include_str!("../../scenarios/tail.toml")),
    ("burst", include_str!("../../scenarios/burst.toml")),
    ("rolling-restart", include_str!("../../scenarios/rolling-restart.toml")),
    ("expect-continue", include_str!("../../scenarios/expect-continue.toml")),
    ("auth", include_str!("../../scenarios/auth.toml")),
    ("fleet", include_str!("../../scenarios/fleet.toml")),
    (
        "proxy-rolling-restart",
        include_str!("../../scenarios/proxy-rolling-restart.toml"),
    ),
];

/// A built-in scenario by name, or a scenario file by path.
pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
    if let Some((name, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
        return Scenario::from_toml(text, &format!("scenarios/{name}.toml"));
    }
    match std::fs::read_to_string(name_or_path) {
        Ok(text) => Scenario::from_toml(&text, name_or_path),
        Err(_) => Err(ScenarioError::Unknown(name_or_path.to_owned())),
    }
}

/// Like [`load`], and `swarm` is the scenario generated from `seed` ([`swarm::scenario`]).
pub fn load_seeded(name_or_path: &str, seed: u64) -> Result<Scenario, ScenarioError> {
    if name_or_path == "swarm" {
        swarm::scenario(seed)
    } else {
        load(name_or_path)
    }
}

/// Run `scenario` in every mode of `modes` from `seed`; check the invariants of each.
pub fn run(scenario: &Scenario, seed: u64, modes: &[Mode]) -> Result<Report, String> {
    let mut reports = Vec::with_capacity(modes.len());
    for &mode in modes {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run::run_mode(scenario, mode, seed)))
            .map_err(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let hint = if message.contains("server socket buffer full") {
                    " (turmoil's listen backlog is cluster.tcp_window connections: raise it)"
                } else {
                    ""
                };
                format!(
                    "the simulation panicked in mode {} of scenario {}, seed {seed}: {message}{hint}\nreplay: cargo run --release -p sim -- --scenario {} --seed {seed}",
                    mode.name(),
                    scenario.name,
                    scenario.name
                )
            })??;
        report::check_invariants(&run, scenario, seed)?;
        reports.push(ModeReport::from_run(&run, scenario));
    }
    Ok(Report {
        scenario: scenario.name.clone(),
        seed,
        modes: reports,
    })
}
