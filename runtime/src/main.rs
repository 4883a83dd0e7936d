//! The `storefront` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use storefront::demo;
use storefront::settings::KeyPair;
use storefront::transport::TcpConnector;
use storefront::{App, admin, settings};
use storefront_core::config::{AuthMode, Config};

/// Storefront: an S3 load-balancing reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "storefront", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy from a configuration file (SIGHUP or POST /admin/reload reloads it).
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Seed the balancer's RNG with this (to replay a run); default: OS entropy.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Validate a configuration file and exit (status 0 if valid).
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Start a local 3-node S3 cluster and the proxy in front of it: no setup needed.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// Where the admin endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        /// Seed the balancer's RNG with this (to replay a run); default: OS entropy.
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    // Colour only for a terminal: a log file or a collector gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let result = match Cli::parse().command {
        Command::Run { config, seed } => run(config, seed).await,
        Command::CheckConfig { file } => check(&file),
        #[cfg(feature = "demo")]
        Command::Demo { listen, admin, seed } => run_demo(&listen, &admin, seed).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("storefront: {message}");
            ExitCode::from(2)
        }
    }
}

fn check(file: &std::path::Path) -> Result<(), String> {
    let (config, _) = settings::load(file).map_err(|error| error.to_string())?;
    println!(
        "{}: valid ({} pool{}, {} static backend{})",
        file.display(),
        config.pools.len(),
        if config.pools.len() == 1 { "" } else { "s" },
        config.pools.iter().map(|pool| pool.backends.len()).sum::<usize>(),
        if config.pools.iter().map(|pool| pool.backends.len()).sum::<usize>() == 1 {
            ""
        } else {
            "s"
        },
    );
    Ok(())
}

async fn run(path: PathBuf, seed: Option<u64>) -> Result<(), String> {
    let (config, credentials) = settings::load(&path).map_err(|error| error.to_string())?;
    start(config, credentials, Some(path), None, seed).await
}

#[cfg(feature = "demo")]
async fn run_demo(listen: &str, admin_listen: &str, seed: Option<u64>) -> Result<(), String> {
    let nodes = demo::start_cluster()
        .await
        .map_err(|error| format!("cannot start the demo cluster: {error}"))?;
    let backends: Vec<String> = nodes
        .iter()
        .map(|node| node.address().expect("started nodes have bound").to_string())
        .collect();
    let text = demo::config_text(listen, admin_listen, &backends);
    let config = Config::from_toml(&text, "<demo>").map_err(|error| error.to_string())?;
    let credentials = settings::resolve_credentials(&config, "<demo>").map_err(|error| error.to_string())?;
    let banner = |local: &str, admin: &str| demo::banner(local, admin, &backends);
    start(config, credentials, None, Some(&banner), seed).await
}

/// What `storefront demo` prints once listening, from the proxy's and the admin's addresses.
type Banner<'a> = dyn Fn(&str, &str) -> String + 'a;

async fn start(
    config: Config,
    credentials: Vec<Option<KeyPair>>,
    path: Option<PathBuf>,
    banner: Option<&Banner<'_>>,
    seed: Option<u64>,
) -> Result<(), String> {
    if config.auth.mode == AuthMode::Trust {
        tracing::warn!("auth mode `trust` is INSECURE: every caller may do anything the backend credentials allow");
    }
    let listen = config.server.listen.clone();
    let admin_listen = config.admin.listen.clone();
    let (listener, local) = App::<TcpConnector>::bind(&listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let (admin_listener, admin_local) = App::<TcpConnector>::bind(&admin_listen)
        .await
        .map_err(|error| format!("cannot listen on {admin_listen} (admin): {error}"))?;
    let app = match seed {
        Some(seed) => {
            tracing::info!(seed, "random seed given on the command line");
            App::with_seed(config, credentials, path, TcpConnector, seed).map_err(|error| error.to_string())?
        }
        None => App::new(config, credentials, path, TcpConnector).map_err(|error| error.to_string())?,
    };
    tokio::spawn(admin::serve(admin_listener, app.clone()));
    match banner {
        Some(banner) => println!("{}", banner(&local.to_string(), &admin_local.to_string())),
        None => tracing::info!(%local, admin = %admin_local, "storefront listening"),
    }
    let signals = app.clone();
    tokio::spawn(async move { handle_signals(signals).await });
    app.serve(listener).await;
    Ok(())
}

#[cfg(unix)]
async fn handle_signals(app: std::sync::Arc<App<TcpConnector>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            biased;
            _ = hangup.recv() => {
                if let Err(error) = app.reload() {
                    tracing::error!("reload refused, the running configuration stays: {error}");
                }
            }
            // SIGTERM (Kubernetes, systemd, `docker stop`): drain first, then stop.
            _ = terminate.recv() => {
                app.terminate();
                return;
            }
            // Ctrl-C at a terminal: stop now (in-flight requests still finish).
            _ = interrupt.recv() => break,
        }
    }
    app.shutdown();
}

#[cfg(not(unix))]
async fn handle_signals(app: std::sync::Arc<App<TcpConnector>>) {
    let _ = tokio::signal::ctrl_c().await;
    app.shutdown();
}
