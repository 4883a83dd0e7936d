//! One run of one mode: build the turmoil world, drive it, collect what happened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use s3_mock::{CapacityConfig, ClusterConfig, MockCluster, NodeHandle, run_node};
use storefront::App;
use storefront::clock::Clock;
use storefront_core::balance::AlgorithmKind;

use crate::client::{self, BUCKET, ClientSpec, DnsModel, Record, Target};
use crate::fleet::{Order, ReplicaSamples, Rollout, Seen, Service};
use crate::proxy_config::{proxy_config, proxy_dns};
use crate::scenario::{Action, Event, Scenario};
use crate::tally::Tally;
use crate::transport::{NodeBind, ProxyListener, SimConnector};

/// Port every simulated server listens on.
pub(crate) const PORT: u16 = 9000;
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

    /// The mode of a report name.
    pub fn named(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.name() == name)
    }

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
    /// Every client operation's record.
    pub records: Vec<Record>,
    /// Client operations issued (each must have exactly one record).
    pub issued: u64,
    /// Requests each node received.
    pub node_requests: Vec<u64>,
    /// Node request counters every [`SAMPLE_EVERY`].
    pub samples: Vec<Vec<u64>>,
    /// Connections each node had accepted, every [`SAMPLE_EVERY`] (cumulative).
    pub connection_samples: Vec<Vec<u64>>,
    /// Retries the proxies made.
    pub retries: u64,
    /// Retries the clients made (as SDKs retry a 5xx or a broken connection).
    pub client_retries: u64,
    /// Hedges the proxies sent.
    pub hedges: u64,
    /// Hedges whose answer went back.
    pub hedges_won: u64,
    /// Passive ejections in the proxies.
    pub ejections: u64,
    /// Slow readers the proxies cut off.
    pub slow_readers_cut: u64,
    /// `100 Continue` answered by the proxies themselves.
    pub local_continues: u64,
    /// Requests that failed after a retry budget refused a safe retry.
    pub budget_refusals: u64,
    /// Attempts sent to an unavailable backend outside panic mode (must be 0).
    pub dispatched_to_unavailable: u64,
    /// Acknowledged PUTs missing from the store afterwards, or stored at another size (must be
    /// empty).
    pub lost_writes: Vec<String>,
    /// Requests still in flight at a node at the end (must be 0).
    pub in_flight_at_end: u64,
    /// Requests the proxies' balancers still count in flight at the end (must be 0).
    pub proxy_in_flight_at_end: u64,
    /// Connections still open at the nodes after every client finished and the proxies shut
    /// down (must be 0).
    pub connections_open_at_end: u64,
    /// The proxies' exchanges by identity source and result.
    pub decisions: BTreeMap<(String, String), u64>,
    /// Each proxy's final metrics, as Prometheus text, with its name.
    pub metrics: Vec<(String, String)>,
    /// Each proxy replica's own figures.
    pub replicas: Vec<ReplicaRun>,
    /// How long the scenario's rolling update of the replicas took (none: no rollout, or it
    /// had not finished when the clients did).
    pub rollout: Option<Duration>,
}

/// What one proxy replica did (over all its processes, in a rollout).
#[derive(Debug)]
pub struct ReplicaRun {
    /// Its host name.
    pub name: String,
    /// The nodes of its own zone's pool (0-based; every node without zones).
    pub zone_nodes: Vec<usize>,
    /// Exchanges it handled.
    pub exchanges: u64,
    /// Of those, answered with an error of its own after every attempt failed.
    pub failed: u64,
    /// Requests it sent to each node, every [`SAMPLE_EVERY`] (cumulative).
    pub samples: Vec<Vec<u64>>,
    /// Processes it ran (1, plus one per replacement).
    pub processes: u64,
}

pub(crate) fn node_name(index: usize) -> String {
    format!("node-{}", index + 1)
}

/// The host name of client `index` (0-based) of group `group`.
fn client_host(group: &str, index: usize) -> String {
    format!("{group}-{}", index + 1)
}

/// The host name of replica `index` (0-based) of `zone`'s proxies (with one replica per
/// zone, just the zone's proxy).
fn proxy_name(zone: Option<&str>, index: usize, replicas: usize) -> String {
    let base = match zone {
        Some(zone) => format!("proxy-{zone}"),
        None => "proxy".to_owned(),
    };
    if replicas == 1 {
        base
    } else {
        format!("{base}-{}", index + 1)
    }
}

/// One proxy replica of the fleet.
#[derive(Clone, Debug)]
struct Replica {
    name: String,
    zone: Option<String>,
    /// Its place among its zone's replicas (the Service's endpoint index).
    endpoint: usize,
}

/// Nodes close keep-alive connections idle this long (as S3 servers do, after tens of
/// seconds; shorter here to keep runs short). This also closes connections a partition
/// orphaned: their FIN was lost, so only the node's idle timeout ends them.
const NODE_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy closes idle backend connections before the nodes do (as the proxy's default, 60
/// s, is below the usual keep-alive of S3 servers), so it never reuses one a node is closing.
pub(crate) const PROXY_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long the world keeps running after the last client finished, for connections to close
/// (past the nodes' idle timeout).
const WIND_DOWN: Duration = Duration::from_secs(6);

/// Each replica's running proxy (the latest process's), by replica index.
type AppSlots = Arc<Mutex<Vec<Option<Arc<App<SimConnector>>>>>>;

/// Run `scenario` in `mode` from `seed`.
pub fn run_mode(scenario: &Scenario, mode: Mode, seed: u64) -> Result<ModeRun, String> {
    let duration = scenario.duration.get();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(duration + Duration::from_secs(300))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_micros(500))
        .tcp_capacity(scenario.cluster.tcp_window)
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
            hold_while_sending: true,
            idle_timeout: Some(NODE_IDLE_TIMEOUT),
        },
        seed,
        // Small parts keep multipart uploads cheap to simulate.
        min_part_size: 0,
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

    // The Kubernetes API server, when clients are pods or trade tokens for sessions.
    if scenario.has_kubernetes() {
        let cluster = Arc::new(crate::kubernetes::Cluster {
            pods: scenario
                .clients
                .iter()
                .filter_map(|group| group.pod.as_ref().map(|pod| (group, pod)))
                .flat_map(|(group, pod)| {
                    (0..group.count).map(move |index| crate::kubernetes::SimPod {
                        host: client_host(&group.name, index),
                        namespace: pod.namespace.clone(),
                        service_account: pod.service_account.clone(),
                        labels: pod.labels.clone(),
                    })
                })
                .collect(),
            tokens: scenario.kubernetes.tokens.clone(),
        });
        sim.host(crate::kubernetes::HOST, move || {
            crate::kubernetes::serve(cluster.clone())
        });
    }

    // One proxy, or one per zone (each preferring its own zone's pool); or a fleet of replicas
    // per zone, each zone's behind a Service.
    let zones: Vec<Option<String>> = if scenario.cluster.zones.is_empty() {
        vec![None]
    } else {
        scenario
            .cluster
            .zone_names()
            .into_iter()
            .map(|zone| Some(zone.to_owned()))
            .collect()
    };
    let per_zone = scenario.fleet.replicas;
    let replicas: Vec<Replica> = zones
        .iter()
        .flat_map(|zone| {
            (0..per_zone).map(move |endpoint| Replica {
                name: proxy_name(zone.as_deref(), endpoint, per_zone),
                zone: zone.clone(),
                endpoint,
            })
        })
        .collect();
    let services: BTreeMap<Option<String>, Arc<Service>> = zones
        .iter()
        .map(|zone| {
            let hosts = replicas
                .iter()
                .filter(|replica| replica.zone == *zone)
                .map(|replica| format!("{}:{PORT}", replica.name))
                .collect();
            (zone.clone(), Arc::new(Service::new(hosts)))
        })
        .collect();
    let apps: AppSlots = Arc::new(Mutex::new(vec![None; replicas.len()]));
    let tallies: Vec<Arc<Tally>> = replicas.iter().map(|_| Arc::new(Tally::default())).collect();
    let processes: Vec<Arc<AtomicU64>> = replicas.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    // Set when a replica's proxy has shut down: its process exits, which the runner carries
    // out by stopping the host (every socket it still holds closes, as at a process's exit).
    let exited: Vec<Arc<AtomicBool>> = replicas.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut stopped = vec![false; replicas.len()];
    if let Mode::Proxy(algorithm) = mode {
        for (index, replica) in replicas.iter().enumerate() {
            let config = proxy_config(scenario, algorithm, replica.zone.as_deref())?;
            let pools = config.pools.len();
            let slot = apps.clone();
            let tally = tallies[index].clone();
            let processes = processes[index].clone();
            let exited = exited[index].clone();
            let dns = proxy_dns(scenario);
            sim.host(replica.name.as_str(), move || {
                let config = config.clone();
                let slot = slot.clone();
                let tally = tally.clone();
                let dns = dns.clone();
                let exited = exited.clone();
                // Every process draws from its own seed, derived from the run's: replicas of
                // a fleet must not pick and probe in lockstep, a replaced process is a new
                // one, and the run must still replay exactly.
                let process = processes.fetch_add(1, Ordering::Relaxed);
                let proxy_seed = seed
                    ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f)
                    ^ process.wrapping_mul(0xe703_7ed1_a0b4_28db);
                async move {
                    let app = App::with_clock(
                        config,
                        vec![None; pools],
                        None,
                        SimConnector::with_names(dns.clone()),
                        proxy_seed,
                        // The storage nodes' simulated wall time, advancing with simulated
                        // time: signatures and session expiries replay from the seed.
                        Clock::simulated(UNIX_EPOCH + Duration::from_secs(s3_mock::clock::BASE_UNIX_SECONDS)),
                    )?;
                    app.proxy.events.subscribe(tally);
                    slot.lock().expect("single-threaded simulation")[index] = Some(app.clone());
                    let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, PORT)).await?;
                    app.serve(ProxyListener(listener)).await;
                    exited.store(true, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        }
    }

    let records: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let mut client_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut front_hosts: Vec<(String, Option<String>)> = Vec::new();
    for group in &scenario.clients {
        let zone = group.zone.as_deref();
        let dns = DnsModel {
            nodes: (0..scenario.cluster.nodes)
                .filter(|&index| zone.is_none() || scenario.cluster.zone_of(index) == zone)
                .map(|index| format!("{}:{PORT}", node_name(index)))
                .collect(),
            ttl: scenario.dns.ttl.get(),
        };
        let per_host = group.per_host.max(1);
        let mut host_specs: Vec<Vec<ClientSpec>> = Vec::new();
        for index in 0..group.count {
            client_seed = client_seed.wrapping_add(1);
            let spec = ClientSpec {
                group: group.clone(),
                index,
                target: match mode {
                    Mode::Direct => Target::Direct(dns.clone()),
                    Mode::Proxy(_) => Target::Proxy(services[&group.zone].clone()),
                },
                workload: scenario.workload.clone(),
                duration,
                seed: client_seed,
                records: records.clone(),
                issued: issued.clone(),
                retried: retried.clone(),
            };
            if index % per_host == 0 {
                host_specs.push(Vec::new());
            }
            host_specs.last_mut().expect("pushed above").push(spec);
        }
        for (index, specs) in host_specs.into_iter().enumerate() {
            let name = client_host(&group.name, index);
            front_hosts.push((name.clone(), group.zone.clone()));
            if specs.len() == 1 {
                let spec = specs.into_iter().next().expect("one");
                sim.client(name, client::run(spec));
            } else {
                sim.client(name, async move {
                    let mut clients = tokio::task::JoinSet::new();
                    for spec in specs {
                        clients.spawn_local(client::run(spec));
                    }
                    while let Some(ended) = clients.join_next().await {
                        ended??;
                    }
                    Ok(())
                });
            }
        }
    }
    if matches!(mode, Mode::Proxy(_)) {
        for replica in &replicas {
            front_hosts.push((replica.name.clone(), replica.zone.clone()));
        }
    }
    // Traffic between data centres takes longer.
    if !scenario.cluster.zones.is_empty() {
        for (host, zone) in &front_hosts {
            for index in 0..scenario.cluster.nodes {
                if scenario.cluster.zone_of(index) != zone.as_deref() {
                    sim.set_link_latency(
                        host.as_str(),
                        node_name(index),
                        scenario.cluster.cross_zone_latency.get(),
                    );
                }
            }
        }
    }

    let mut events = scenario.events.clone();
    events.sort_by_key(|event| event.at);
    let mut next_event = 0;
    let mut samples = Vec::new();
    let mut connection_samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut finished_at: Option<Duration> = None;
    let mut replica_samples = ReplicaSamples::new(replicas.len(), scenario.cluster.nodes);
    let mut rollout: Option<(Duration, Rollout)> = None;
    let mut rolled: Option<Duration> = None;
    loop {
        let elapsed = sim.elapsed();
        while next_event < events.len() && events[next_event].at.get() <= elapsed {
            if events[next_event].action == Action::Rollout {
                if matches!(mode, Mode::Proxy(_)) && rollout.is_none() {
                    rollout = Some((elapsed, Rollout::start()));
                }
            } else {
                apply(&mut sim, &events[next_event], &handles, scenario, &front_hosts);
            }
            next_event += 1;
        }
        if elapsed >= next_sample && finished_at.is_none() {
            samples.push(handles.iter().map(|handle| handle.stats().requests_total).collect());
            connection_samples.push(handles.iter().map(|handle| handle.stats().connections_total).collect());
            replica_samples.sample(&apps.lock().expect("single-threaded simulation"));
            next_sample += SAMPLE_EVERY;
        }
        for (index, replica) in replicas.iter().enumerate() {
            if !stopped[index] && exited[index].load(Ordering::Relaxed) {
                sim.crash(replica.name.as_str());
                stopped[index] = true;
            }
        }
        if finished_at.is_none()
            && let Some((started, update)) = &mut rollout
        {
            let started = *started;
            let current = update.replica.min(replicas.len() - 1);
            let app = apps.lock().expect("single-threaded simulation")[current].clone();
            let running = !exited[current].load(Ordering::Relaxed);
            let seen = Seen {
                now: elapsed,
                running,
                ready: running
                    && app
                        .as_ref()
                        .is_some_and(|app| !app.is_draining() && app.proxy.current().readiness().is_ok()),
            };
            match update.advance(
                seen,
                replicas.len(),
                scenario.fleet.endpoint_lag.get(),
                scenario.fleet.start_delay.get(),
            ) {
                Order::Wait => {}
                Order::Terminate(_) => {
                    if let Some(app) = &app {
                        app.terminate();
                    }
                }
                Order::Unready(index) => services[&replicas[index].zone].set_ready(replicas[index].endpoint, false),
                Order::Start(index) => {
                    exited[index].store(false, Ordering::Relaxed);
                    stopped[index] = false;
                    sim.bounce(replicas[index].name.as_str());
                }
                Order::Ready(index) => services[&replicas[index].zone].set_ready(replicas[index].endpoint, true),
                Order::Done => {
                    rolled = Some(elapsed - started);
                    rollout = None;
                }
            }
        }
        match finished_at {
            None => {}
            Some(at) if elapsed >= at + WIND_DOWN => break,
            Some(_) => {}
        }
        match sim.step() {
            Ok(true) if finished_at.is_none() => {
                // Every client is done: drain the proxies, let connections close.
                finished_at = Some(sim.elapsed());
                for app in apps.lock().expect("single-threaded simulation").iter().flatten() {
                    app.shutdown();
                }
            }
            Ok(_) => {}
            Err(error) => return Err(format!("{} (mode {}, seed {seed})", error, mode.name())),
        }
    }

    let records = std::mem::take(&mut *records.lock().expect("single-threaded simulation"));
    let lost_writes = {
        let store = cluster.store.lock().expect("single-threaded simulation");
        records
            .iter()
            .filter_map(|record| record.written.as_ref())
            .filter(|(key, size)| {
                store
                    .get_object(BUCKET, key)
                    .map_or(true, |object| object.data.len() != *size)
            })
            .map(|(key, _)| key.clone())
            .collect()
    };
    let apps: Vec<Arc<App<SimConnector>>> = apps
        .lock()
        .expect("single-threaded simulation")
        .iter()
        .flatten()
        .cloned()
        .collect();
    let counter = |read: fn(&Tally) -> &AtomicU64| -> u64 {
        tallies.iter().map(|tally| read(tally).load(Ordering::Relaxed)).sum()
    };
    let mut decisions: BTreeMap<(String, String), u64> = BTreeMap::new();
    for tally in &tallies {
        for (key, count) in std::mem::take(&mut *tally.decisions.lock().expect("single-threaded simulation")) {
            *decisions.entry(key).or_insert(0) += count;
        }
    }
    let replica_runs = replicas
        .iter()
        .enumerate()
        .map(|(index, replica)| ReplicaRun {
            name: replica.name.clone(),
            zone_nodes: (0..scenario.cluster.nodes)
                .filter(|&node| replica.zone.is_none() || scenario.cluster.zone_of(node) == replica.zone.as_deref())
                .collect(),
            exchanges: tallies[index].exchanges.load(Ordering::Relaxed),
            failed: tallies[index].failed.load(Ordering::Relaxed),
            samples: std::mem::take(&mut replica_samples.samples[index]),
            processes: processes[index].load(Ordering::Relaxed),
        })
        .collect();
    let (ejections, proxy_in_flight_at_end) = apps.iter().fold((0, 0), |(ejections, in_flight), app| {
        let pools = app.proxy.current().state().pools();
        (
            ejections
                + pools
                    .iter()
                    .map(|pool| pool.lock().health().ejections_total())
                    .sum::<u64>(),
            in_flight
                + pools
                    .iter()
                    .map(|pool| pool.lock().balancer().in_flight_total())
                    .sum::<u64>(),
        )
    });
    Ok(ModeRun {
        mode,
        node_requests: handles.iter().map(|handle| handle.stats().requests_total).collect(),
        in_flight_at_end: handles.iter().map(|handle| handle.stats().in_flight).sum(),
        connections_open_at_end: handles.iter().map(|handle| handle.stats().connections_open).sum(),
        issued: issued.load(Ordering::Relaxed),
        records,
        samples,
        connection_samples,
        retries: counter(|counters| &counters.retries),
        client_retries: retried.load(Ordering::Relaxed),
        hedges: counter(|counters| &counters.hedges),
        hedges_won: counter(|counters| &counters.hedges_won),
        ejections,
        slow_readers_cut: counter(|counters| &counters.slow_readers_cut),
        local_continues: counter(|counters| &counters.local_continues),
        budget_refusals: counter(|counters| &counters.budget_refusals),
        dispatched_to_unavailable: counter(|counters| &counters.dispatched_to_unavailable),
        proxy_in_flight_at_end,
        lost_writes,
        decisions,
        metrics: apps
            .iter()
            .enumerate()
            .map(|(index, app)| (format!("proxy-{}", index + 1), app.metrics.render()))
            .collect(),
        replicas: if matches!(mode, Mode::Proxy(_)) {
            replica_runs
        } else {
            Vec::new()
        },
        rollout: rolled,
    })
}

/// Apply one scenario event to the world.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    event: &Event,
    handles: &[NodeHandle],
    scenario: &Scenario,
    front_hosts: &[(String, Option<String>)],
) {
    let zone_nodes = || -> Vec<String> {
        (0..scenario.cluster.nodes)
            .filter(|&index| scenario.cluster.zone_of(index) == event.zone.as_deref())
            .map(node_name)
            .collect()
    };
    match event.action {
        Action::Slow => handles[event.node.unwrap_or(1) - 1].set_slow_factor(event.factor.unwrap_or(1.0)),
        Action::Stall => {
            handles[event.node.unwrap_or(1) - 1].set_stalls(event.rate.unwrap_or(0.0), event.factor.unwrap_or(1.0))
        }
        Action::Heal => {
            handles[event.node.unwrap_or(1) - 1].set_slow_factor(1.0);
            handles[event.node.unwrap_or(1) - 1].set_stalls(0.0, 1.0);
        }
        Action::Crash => sim.crash(node_name(event.node.unwrap_or(1) - 1)),
        Action::Restart => sim.bounce(node_name(event.node.unwrap_or(1) - 1)),
        Action::Partition => {
            for node in zone_nodes() {
                for (host, _) in front_hosts {
                    if event.oneway {
                        sim.partition_oneway(node.as_str(), host.as_str());
                    } else {
                        sim.partition(node.as_str(), host.as_str());
                    }
                }
            }
        }
        // The runner drives rollouts itself (they need the replicas).
        Action::Rollout => {}
        Action::Repair => {
            for node in zone_nodes() {
                for (host, _) in front_hosts {
                    sim.repair(node.as_str(), host.as_str());
                    sim.repair_oneway(node.as_str(), host.as_str());
                }
            }
        }
    }
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
        let size = scenario.workload.size_min + (index * 7919 % 1009) * span / 1008;
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
