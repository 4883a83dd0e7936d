//! One run of one mode: build the turmoil world, drive it, collect what happened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use s3_mock::{CapacityConfig, ClusterConfig, MockCluster, NodeHandle, run_node};
use storefront::App;
use storefront_core::balance::AlgorithmKind;
use storefront_core::config::Config;

use crate::client::{self, BUCKET, ClientSpec, DnsModel, Record, Target};
use crate::scenario::{Action, Scenario};
use crate::transport::{NodeBind, ProxyListener, SimConnector};

/// Port every simulated server listens on.
const PORT: u16 = 9000;
/// How often node counters are sampled (simulated time).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How clients reach the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the DNS name, straight to nodes.
    Direct,
    /// Through one Storefront proxy with this algorithm.
    Proxy(AlgorithmKind),
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 4] = [
        Mode::Direct,
        Mode::Proxy(AlgorithmKind::RoundRobin),
        Mode::Proxy(AlgorithmKind::LeastInFlight),
        Mode::Proxy(AlgorithmKind::P2cPeakEwma),
    ];

    /// The mode's name in reports.
    pub fn name(self) -> String {
        match self {
            Mode::Direct => "direct".to_owned(),
            Mode::Proxy(algorithm) => format!("proxy-{}", algorithm.name()),
        }
    }
}

/// What one mode's run produced.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: Mode,
    /// Every client request.
    pub records: Vec<Record>,
    /// Requests each node received.
    pub node_requests: Vec<u64>,
    /// Node request counters every [`SAMPLE_EVERY`].
    pub samples: Vec<Vec<u64>>,
    /// Retries the proxy made.
    pub retries: u64,
    /// Passive ejections in the proxy.
    pub ejections: u64,
    /// Slow readers the proxy cut off.
    pub slow_readers_cut: u64,
    /// `100 Continue` answered by the proxy itself.
    pub local_continues: u64,
    /// Acknowledged PUTs missing from the store afterwards (must be empty).
    pub lost_writes: Vec<String>,
    /// Requests still in flight at a node at the end (must be 0).
    pub in_flight_at_end: u64,
}

fn node_name(index: usize) -> String {
    format!("node-{}", index + 1)
}

/// Run `scenario` in `mode` from `seed`.
pub fn run_mode(scenario: &Scenario, mode: Mode, seed: u64) -> Result<ModeRun, String> {
    let duration = scenario.duration.get();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(duration + Duration::from_secs(300))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_micros(500))
        .rng_seed(seed)
        .build();

    let cluster_config = ClusterConfig {
        nodes: scenario.cluster.nodes,
        credentials: None,
        capacity: CapacityConfig {
            slots: scenario.cluster.slots,
            queue_max: scenario.cluster.queue,
            base: scenario.cluster.base_latency.get(),
            bandwidth_bytes_per_second: scenario.cluster.bandwidth_mib * 1024 * 1024,
        },
        seed,
        ..ClusterConfig::default()
    };
    let cluster = MockCluster::build(&cluster_config);
    preload(&cluster, scenario);
    let handles: Vec<NodeHandle> = cluster.handles.clone();
    for (index, service) in cluster.services.iter().enumerate() {
        let service = service.clone();
        sim.host(node_name(index), move || {
            let service = service.clone();
            async move {
                run_node(NodeBind(PORT), service).await?;
                Ok(())
            }
        });
    }

    let app_slot: Arc<Mutex<Option<Arc<App<SimConnector>>>>> = Arc::new(Mutex::new(None));
    if let Mode::Proxy(algorithm) = mode {
        let config = proxy_config(scenario, algorithm)?;
        let slot = app_slot.clone();
        sim.host("proxy", move || {
            let config = config.clone();
            let slot = slot.clone();
            async move {
                let app = App::with_seed(config, vec![None], None, SimConnector, seed)?;
                *slot.lock().expect("single-threaded simulation") = Some(app.clone());
                let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, PORT)).await?;
                app.serve(ProxyListener(listener)).await;
                Ok(())
            }
        });
    }

    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let dns = DnsModel {
        nodes: (0..scenario.cluster.nodes)
            .map(|index| format!("{}:{PORT}", node_name(index)))
            .collect(),
        ttl: scenario.dns.ttl.get(),
    };
    let mut client_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for group in &scenario.clients {
        for index in 0..group.count {
            client_seed = client_seed.wrapping_add(1);
            let spec = ClientSpec {
                group: group.clone(),
                index,
                target: match mode {
                    Mode::Direct => Target::Direct(dns.clone()),
                    Mode::Proxy(_) => Target::Proxy(format!("proxy:{PORT}")),
                },
                workload: scenario.workload.clone(),
                duration,
                seed: client_seed,
                records: records.clone(),
            };
            sim.client(format!("{}-{}", group.name, index + 1), client::run(spec));
        }
    }

    let mut events = scenario.events.clone();
    events.sort_by_key(|event| event.at);
    let mut next_event = 0;
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    loop {
        let elapsed = sim.elapsed();
        while next_event < events.len() && events[next_event].at.get() <= elapsed {
            let event = &events[next_event];
            let node = event.node - 1;
            match event.action {
                Action::Slow => handles[node].set_slow_factor(event.factor.unwrap_or(1.0)),
                Action::Heal => handles[node].set_slow_factor(1.0),
                Action::Crash => sim.crash(node_name(node)),
                Action::Restart => sim.bounce(node_name(node)),
            }
            next_event += 1;
        }
        if elapsed >= next_sample {
            samples.push(handles.iter().map(|handle| handle.stats().requests_total).collect());
            next_sample += SAMPLE_EVERY;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => return Err(format!("{} (mode {}, seed {seed})", error, mode.name())),
        }
    }

    let records = std::mem::take(&mut *records.lock().expect("single-threaded simulation"));
    let lost_writes = {
        let store = cluster.store.lock().expect("single-threaded simulation");
        records
            .iter()
            .filter_map(|record| record.written.as_ref())
            .filter(|key| store.get_object(BUCKET, key).is_err())
            .cloned()
            .collect()
    };
    let app = app_slot.lock().expect("single-threaded simulation").clone();
    let (retries, ejections, slow_readers_cut, local_continues) = match &app {
        Some(app) => {
            let counters = &app.proxy.counters;
            let ejections = app.proxy.current().with(|state| {
                state
                    .cluster
                    .pools()
                    .iter()
                    .map(|pool| pool.health().ejections_total())
                    .sum()
            });
            (
                counters.retries.load(std::sync::atomic::Ordering::Relaxed),
                ejections,
                counters.slow_readers_cut.load(std::sync::atomic::Ordering::Relaxed),
                counters.local_continues.load(std::sync::atomic::Ordering::Relaxed),
            )
        }
        None => (0, 0, 0, 0),
    };
    Ok(ModeRun {
        mode,
        node_requests: handles.iter().map(|handle| handle.stats().requests_total).collect(),
        in_flight_at_end: handles.iter().map(|handle| handle.stats().in_flight).sum(),
        records,
        samples,
        retries,
        ejections,
        slow_readers_cut,
        local_continues,
        lost_writes,
    })
}

/// Put the scenario's objects straight into the store (no requests: they would count as load).
fn preload(cluster: &MockCluster, scenario: &Scenario) {
    let epoch = UNIX_EPOCH + Duration::from_secs(s3_mock::clock::BASE_UNIX_SECONDS);
    let mut store = cluster.store.lock().expect("no one else holds the store yet");
    store
        .create_bucket(BUCKET, epoch)
        .expect("a fresh store has no buckets");
    let span = scenario
        .workload
        .size_max
        .saturating_sub(scenario.workload.size_min)
        .max(1);
    for index in 0..scenario.workload.objects {
        // Sizes spread over the range deterministically (no RNG needed for the catalogue).
        let size = scenario.workload.size_min + (index * 7919) % span;
        let data = Bytes::from(vec![(index % 251) as u8; size]);
        store
            .put_object(
                BUCKET,
                &client::object_key(index),
                data,
                s3_mock::store::ObjectMeta::default(),
                epoch,
            )
            .expect("the bucket exists");
    }
}

/// The proxy's configuration: the scenario's extra TOML, the cluster's nodes as one pool,
/// trust mode (no identities in the simulation yet), the mode's algorithm. Active probes are
/// off unless the scenario turns them on, so node counters count client traffic only.
fn proxy_config(scenario: &Scenario, algorithm: AlgorithmKind) -> Result<Config, String> {
    let backends: Vec<String> = (0..scenario.cluster.nodes)
        .map(|index| format!("\"{}:{PORT}\"", node_name(index)))
        .collect();
    let probes = if scenario.proxy_config.contains("[health.active]") {
        ""
    } else {
        "[health.active]\nenabled = false\n"
    };
    let text = format!(
        "[auth]\nmode = \"trust\"\n{probes}{}\n\n[[pools]]\nname = \"cluster\"\nbackends = [{}]\n",
        scenario.proxy_config,
        backends.join(", ")
    );
    let mut config = Config::from_toml(&text, &format!("scenario {} proxy_config", scenario.name))
        .map_err(|error| error.to_string())?;
    config.balance.algorithm = algorithm;
    Ok(config)
}
