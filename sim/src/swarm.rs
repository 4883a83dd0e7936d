//! Swarm testing: a scenario drawn from a seed, with each fault switched on or off at random
//! (Groce et al., "Swarm Testing"): a run with few faults reaches deep states that a run with
//! every fault at once never does. `sim --scenario swarm --seed N` replays seed N's scenario.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::scenario::{Scenario, ScenarioError};

/// The swarm scenario of `seed`, as a scenario file's text.
pub fn text(seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5157_4a52_4d00_0000);
    let slow_readers = rng.random_bool(0.4);
    // turmoil's listen backlog is the TCP window in segments: with the short window slow
    // readers need, at most 8 connections may be opening to one host at once, so those runs
    // have one zone and few connections (2 × 2 + 2 slow + 1 probe).
    let zones = !slow_readers && rng.random_bool(0.3);
    let nodes = if zones { 4 } else { rng.random_range(3..=4) };
    let expect_continue = rng.random_bool(0.5);
    let mut out = String::new();
    let _ = writeln!(out, "name = \"swarm\"");
    let _ = writeln!(
        out,
        "description = \"Generated from the seed: faults switched on and off at random (swarm testing)\""
    );
    let _ = writeln!(out, "duration = \"2s\"");
    // Short timeouts and frequent probes: a fault's whole life fits in two seconds.
    let _ = writeln!(
        out,
        "proxy_config = \"\"\"\n[health.active]\ninterval = \"300ms\"\njitter = \"50ms\"\ntimeout = \"200ms\"\n\n\
         [timeouts]\nresponse_write_idle = \"500ms\"\nbackend_first_byte = \"1s\"\nbackend_connect = \"300ms\"\n\
         backend_send_idle = \"1s\"\n\"\"\"\n"
    );
    let _ = writeln!(out, "[cluster]\nnodes = {nodes}");
    let _ = writeln!(out, "slots = {}", rng.random_range(4..=8));
    let _ = writeln!(out, "queue = {}", rng.random_range(32..=64));
    let _ = writeln!(out, "base_latency = \"{}ms\"", rng.random_range(2..=5));
    // Slow readers only block a sender through a short window (it also bounds the listen
    // backlog in turmoil, so not too short).
    let _ = writeln!(out, "tcp_window = {}", if slow_readers { 8 } else { 64 });
    if zones {
        let _ = writeln!(out, "zones = [\"dc1\", \"dc1\", \"dc2\", \"dc2\"]");
    }
    let _ = writeln!(out, "\n[dns]\nttl = \"{}ms\"\n", rng.random_range(500..=3000));
    // Responses larger than every buffer between node and client when slow readers exist.
    let size_max = if slow_readers { 4 * 1024 * 1024 } else { 64 * 1024 };
    let _ = writeln!(
        out,
        "[workload]\nobjects = 32\nsize_min = 1024\nsize_max = {size_max}\n"
    );
    let group_zones: Vec<Option<&str>> = if zones {
        vec![Some("dc1"), Some("dc2")]
    } else {
        vec![None]
    };
    for (index, zone) in group_zones.iter().enumerate() {
        let _ = writeln!(out, "[[clients]]\nname = \"app{index}\"");
        let (count, pool) = if slow_readers {
            (2, rng.random_range(1..=2))
        } else {
            (rng.random_range(3..=5), rng.random_range(2..=4))
        };
        let _ = writeln!(out, "count = {count}");
        let _ = writeln!(
            out,
            "rate = {}.0",
            rng.random_range(30..=80) / if slow_readers { 2 } else { 1 }
        );
        let cache = if rng.random_bool(0.5) { "ttl" } else { "forever" };
        let _ = writeln!(out, "cache = \"{cache}\"");
        let _ = writeln!(out, "pool = {pool}");
        let _ = writeln!(out, "connection_ttl = \"{}ms\"", rng.random_range(500..=5000));
        let arrivals = if !slow_readers && rng.random_bool(0.3) {
            "bursty"
        } else {
            "poisson"
        };
        let _ = writeln!(out, "arrivals = \"{arrivals}\"");
        let _ = writeln!(out, "timeout = \"5s\"");
        if expect_continue {
            let _ = writeln!(out, "expect_continue = true\ncontinue_wait = \"1s\"");
        }
        if let Some(zone) = zone {
            let _ = writeln!(out, "zone = \"{zone}\"");
        }
        out.push('\n');
    }
    if slow_readers {
        let read_rate = if rng.random_bool(0.5) { 0 } else { 65536 };
        let _ = writeln!(
            out,
            "[[clients]]\nname = \"slow\"\ncount = 1\nrate = 3.0\ncache = \"ttl\"\npool = 2\nread_rate = {read_rate}\n\
             timeout = \"3s\"\nretries = 0"
        );
        if zones {
            let _ = writeln!(out, "zone = \"dc1\"");
        }
        out.push('\n');
    }
    // Each fault on or off, at a random time within the run.
    let node = |rng: &mut StdRng| rng.random_range(1..=nodes);
    let at = |rng: &mut StdRng| rng.random_range(200..=1200);
    if rng.random_bool(0.5) {
        let (victim, start) = (node(&mut rng), at(&mut rng));
        let _ = writeln!(
            out,
            "[[events]]\nat = \"{start}ms\"\nnode = {victim}\naction = \"crash\"\n\n\
             [[events]]\nat = \"{}ms\"\nnode = {victim}\naction = \"restart\"\n",
            start + rng.random_range(200..=800)
        );
    }
    if rng.random_bool(0.5) {
        let (victim, start) = (node(&mut rng), at(&mut rng));
        let _ = writeln!(
            out,
            "[[events]]\nat = \"{start}ms\"\nnode = {victim}\naction = \"slow\"\nfactor = {}.0\n\n\
             [[events]]\nat = \"{}ms\"\nnode = {victim}\naction = \"heal\"\n",
            rng.random_range(5..=20),
            start + rng.random_range(200..=800)
        );
    }
    if zones && rng.random_bool(0.5) {
        let start = at(&mut rng);
        let _ = writeln!(
            out,
            "[[events]]\nat = \"{start}ms\"\nzone = \"dc2\"\naction = \"partition\"\noneway = {}\n\n\
             [[events]]\nat = \"{}ms\"\nzone = \"dc2\"\naction = \"repair\"\n",
            rng.random_bool(0.5),
            start + rng.random_range(200..=800)
        );
    }
    // Drawn last, so that the faults above stay what they were for every seed.
    if rng.random_bool(0.5) {
        let (victim, rate) = (node(&mut rng), rng.random_range(1..=10));
        let _ = writeln!(
            out,
            "[[events]]\nat = \"{}ms\"\nnode = {victim}\naction = \"stall\"\nrate = 0.0{rate}\nfactor = 50.0\n",
            at(&mut rng)
        );
    }
    if rng.random_bool(0.5) {
        out = out.replacen("[timeouts]", "[hedge]\nenabled = true\n\n[timeouts]", 1);
    }
    out
}

/// The swarm scenario of `seed`.
pub fn scenario(seed: u64) -> Result<Scenario, ScenarioError> {
    Scenario::from_toml(&text(seed), &format!("swarm scenario of seed {seed}"))
}
