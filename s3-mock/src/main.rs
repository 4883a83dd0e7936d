//! `s3-mock`: run a mock S3 cluster on loopback.
//!
//! ```text
//! cargo run -p s3-mock -- --nodes 3 --port 9001 --access-key K --secret-key S
//! ```

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use s3_mock::transport::TcpBind;
use s3_mock::{BodyFault, CapacityConfig, ClusterConfig, ErrorKind, Faults, MockCluster, NodeHandle, serve_stats};

/// A VAST-like S3 cluster: N nodes over one in-memory namespace.
#[derive(Debug, Parser)]
#[command(name = "s3-mock", version)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Address every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first node; node i listens on port + i.
    #[arg(long, default_value_t = 9001)]
    port: u16,
    /// Access key the nodes accept (SigV4).
    #[arg(long, default_value = "s3mock")]
    access_key: String,
    /// Secret key the nodes accept.
    #[arg(long, default_value = "s3mock-secret")]
    secret_key: String,
    /// Accept unsigned requests and skip signature checks.
    #[arg(long)]
    anonymous: bool,
    /// Serve every node's counters as JSON on this port.
    #[arg(long)]
    stats_port: Option<u16>,
    /// Concurrent service slots per node.
    #[arg(long, default_value_t = CapacityConfig::default().slots)]
    slots: usize,
    /// Requests that may wait for a slot before a node answers 503 SlowDown.
    #[arg(long, default_value_t = CapacityConfig::default().queue_max)]
    queue: usize,
    /// Service time of an empty request, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    base_latency_ms: f64,
    /// Bytes per second one slot moves, in MiB/s (0: unlimited).
    #[arg(long, default_value_t = 500)]
    bandwidth_mib: u64,
    /// Keep a request's slot until its response body is sent: a client that stops reading
    /// then ties up the node, as it does a real storage node's request thread.
    #[arg(long)]
    hold_slot_while_sending: bool,
    /// Close keep-alive connections idle this many seconds between requests (0: never).
    #[arg(long, default_value_t = 0)]
    idle_timeout_secs: u64,
    /// Smallest part (except the last) of a multipart upload, in bytes.
    #[arg(long, default_value_t = s3_mock::store::MIN_PART_SIZE_DEFAULT)]
    min_part_size: u64,
    /// Seed of the fault RNGs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A fault on one node, as NODE:SETTING=VALUE (repeatable; nodes count from 1):
    /// slow=FACTOR, stall-rate=P, stall-factor=FACTOR, error-rate=P, error=500|503, stall-after=BYTES, reset-after=BYTES,
    /// throttle=BYTES_PER_SECOND, lose-completions=true.
    #[arg(long = "fault", value_name = "NODE:SETTING=VALUE")]
    faults: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("s3-mock: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let parsed = args
        .faults
        .iter()
        .map(|text| parse_fault(text, args.nodes))
        .collect::<Result<Vec<_>, _>>()?;
    let config = ClusterConfig {
        nodes: args.nodes,
        credentials: (!args.anonymous).then(|| (args.access_key.clone(), args.secret_key.clone())),
        capacity: CapacityConfig {
            slots: args.slots.max(1),
            queue_max: args.queue,
            base: Duration::from_secs_f64(args.base_latency_ms.max(0.0) / 1000.0),
            bandwidth_bytes_per_second: args.bandwidth_mib * 1024 * 1024,
            hold_while_sending: args.hold_slot_while_sending,
            idle_timeout: (args.idle_timeout_secs > 0).then(|| Duration::from_secs(args.idle_timeout_secs)),
        },
        faults: Faults::default(),
        seed: args.seed,
        min_part_size: args.min_part_size,
        wall_clock: true,
    };
    let handles = MockCluster::start_tcp(&config, args.host, args.port)
        .await
        .map_err(|error| format!("cannot listen on {}:{}..: {error}", args.host, args.port))?;
    for (node, apply) in parsed {
        let handle: &NodeHandle = &handles[node];
        let mut faults = handle.faults();
        apply(&mut faults);
        handle.set_faults(faults);
    }
    for handle in &handles {
        let address = handle.address().expect("started nodes have bound");
        let faults = handle.faults();
        let note = if faults == Faults::default() {
            String::new()
        } else {
            format!("  faults: {faults:?}")
        };
        println!("node {} listening on http://{address}{note}", handle.index() + 1);
    }
    if args.anonymous {
        println!("anonymous access: requests are not authenticated");
    } else {
        println!(
            "credentials: access key `{}`, secret key `{}`",
            args.access_key, args.secret_key
        );
    }
    if let Some(port) = args.stats_port {
        let bind = TcpBind::new(SocketAddr::new(args.host, port));
        println!("stats: http://{}:{port}/", args.host);
        let handles = handles.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_stats(bind, handles).await {
                eprintln!("s3-mock: stats port: {error}");
            }
        });
    }
    let first = handles[0].address().expect("bound");
    println!(
        "try: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url http://{first} s3 mb s3://demo",
        args.access_key, args.secret_key
    );
    tokio::signal::ctrl_c()
        .await
        .map_err(|error| format!("waiting for Ctrl-C: {error}"))?;
    Ok(())
}

type ApplyFault = Box<dyn FnOnce(&mut Faults)>;

/// Parse `NODE:SETTING=VALUE`.
fn parse_fault(text: &str, nodes: usize) -> Result<(usize, ApplyFault), String> {
    let usage = || format!("--fault `{text}`: expected NODE:SETTING=VALUE, e.g. 2:slow=10 or 1:error-rate=0.05");
    let (node, setting) = text.split_once(':').ok_or_else(usage)?;
    let node: usize = node.parse().map_err(|_| usage())?;
    if node == 0 || node > nodes {
        return Err(format!(
            "--fault `{text}`: node {node} does not exist (nodes are 1 to {nodes})"
        ));
    }
    let (name, value) = setting.split_once('=').ok_or_else(usage)?;
    let number = |kind: &str| -> Result<f64, String> {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("--fault `{text}`: {kind} must be a non-negative number"))
    };
    let apply: ApplyFault = match name {
        "slow" => {
            let factor = number("the slow factor")?;
            Box::new(move |faults| faults.slow_factor = factor)
        }
        "stall-rate" => {
            let rate = number("the stall rate")?;
            if rate > 1.0 {
                return Err(format!("--fault `{text}`: the stall rate is a probability (0 to 1)"));
            }
            Box::new(move |faults| faults.stall_rate = rate)
        }
        "stall-factor" => {
            let factor = number("the stall factor")?;
            Box::new(move |faults| faults.stall_factor = factor)
        }
        "error-rate" => {
            let rate = number("the error rate")?;
            if rate > 1.0 {
                return Err(format!("--fault `{text}`: the error rate is a probability (0 to 1)"));
            }
            Box::new(move |faults| faults.error_rate = rate)
        }
        "error" => {
            let kind = match value {
                "500" => ErrorKind::InternalError,
                "503" => ErrorKind::SlowDown,
                _ => return Err(format!("--fault `{text}`: error must be 500 or 503")),
            };
            Box::new(move |faults| faults.error_kind = kind)
        }
        "stall-after" => {
            let bytes = number("the byte count")? as u64;
            Box::new(move |faults| faults.body = BodyFault::StallAfter(bytes))
        }
        "reset-after" => {
            let bytes = number("the byte count")? as u64;
            Box::new(move |faults| faults.body = BodyFault::ResetAfter(bytes))
        }
        "throttle" => {
            let rate = number("the rate")? as u64;
            Box::new(move |faults| faults.body = BodyFault::Throttle(rate.max(1)))
        }
        "lose-completions" => {
            let lose = match value {
                "true" => true,
                "false" => false,
                _ => return Err(format!("--fault `{text}`: lose-completions is true or false")),
            };
            Box::new(move |faults| faults.lose_completions = lose)
        }
        _ => {
            return Err(format!(
                "--fault `{text}`: unknown setting `{name}` (slow, error-rate, error, stall-after, reset-after, throttle, lose-completions)"
            ));
        }
    };
    Ok((node - 1, apply))
}
