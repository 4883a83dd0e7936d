//! `sim`: run a scenario in every mode and compare.
//!
//! ```text
//! cargo run --release -p sim -- --scenario hotspot --seed 7 [--json out.json] [--metrics out.prom]
//! ```

use std::process::ExitCode;

use clap::Parser;

/// Replay a scenario deterministically: DNS round-robin against the proxy's balancers.
#[derive(Debug, Parser)]
#[command(name = "sim", version)]
struct Args {
    /// A built-in scenario name (see --list) or a scenario file.
    #[arg(long, default_value = "hotspot")]
    scenario: String,
    /// The seed every random choice draws from.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also draw per-node load over time for each mode as SVG to this file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Also write each proxy's final metrics (Prometheus text, as its `/metrics` would show
    /// them) for every proxy mode to this file.
    #[arg(long)]
    metrics: Option<std::path::PathBuf>,
    /// List the built-in scenarios.
    #[arg(long)]
    list: bool,
    /// Print the scenario file (for `swarm`, the one generated from the seed) and exit.
    #[arg(long)]
    show_scenario: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        // The proxies' and nodes' logs, to stderr, without wall-clock times (the simulation
        // has its own clock; stdout stays byte-identical per seed).
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    if args.list {
        for (name, _) in sim::BUILT_IN {
            match sim::load(name) {
                Ok(scenario) => println!("{name:<16} {}", scenario.description),
                Err(error) => println!("{name:<16} (invalid: {error})"),
            }
        }
        println!(
            "{:<16} Generated from --seed: faults switched on and off at random (swarm testing)",
            "swarm"
        );
        return ExitCode::SUCCESS;
    }
    if args.show_scenario {
        match (
            args.scenario.as_str(),
            sim::BUILT_IN.iter().find(|(name, _)| *name == args.scenario),
        ) {
            ("swarm", _) => print!("{}", sim::swarm::text(args.seed)),
            (_, Some((_, text))) => print!("{text}"),
            (path, None) => match std::fs::read_to_string(path) {
                Ok(text) => print!("{text}"),
                Err(error) => {
                    eprintln!("sim: cannot read {path}: {error}");
                    return ExitCode::from(2);
                }
            },
        }
        return ExitCode::SUCCESS;
    }
    let scenario = match sim::load_seeded(&args.scenario, args.seed) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("sim: {error}");
            return ExitCode::from(2);
        }
    };
    match sim::run(&scenario, args.seed, &scenario.modes()) {
        Ok(report) => {
            print!("{}", sim::report::table(&report));
            if let Some(path) = args.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                if let Err(error) = std::fs::write(&path, json + "\n") {
                    eprintln!("sim: cannot write {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            }
            if let Some(path) = args.metrics {
                let mut text = String::new();
                for mode in &report.modes {
                    for (proxy, exposition) in &mode.metrics {
                        text.push_str(&format!("# mode {} {proxy}\n{exposition}", mode.mode));
                    }
                }
                if let Err(error) = std::fs::write(&path, text) {
                    eprintln!("sim: cannot write {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            }
            if let Some(path) = args.plot {
                let written = sim::plot::svg(&report)
                    .and_then(|svg| std::fs::write(&path, svg).map_err(|error| error.to_string()));
                if let Err(error) = written {
                    eprintln!("sim: cannot write the plot {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sim: {error}");
            ExitCode::FAILURE
        }
    }
}
