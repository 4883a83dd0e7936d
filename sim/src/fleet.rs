//! A fleet of proxy replicas behind a Service: the connection-level balancer clients reach
//! them through, and the rolling update that replaces them one at a time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use storefront::App;

use crate::transport::SimConnector;

/// A Service's endpoints as kube-proxy sees them: every replica's `host:port`, and which are
/// in the endpoints (ready) now. Each new connection goes to one picked at random among the
/// ready ones, as kube-proxy's rules pick (none ready: any, and the connection fails or is
/// refused there, as a Service with no endpoints does).
#[derive(Debug)]
pub struct Service {
    replicas: Vec<String>,
    ready: Mutex<Vec<bool>>,
}

impl Service {
    /// A Service over `replicas` (`host:port`), all ready.
    pub fn new(replicas: Vec<String>) -> Self {
        let ready = Mutex::new(vec![true; replicas.len()]);
        Service { replicas, ready }
    }

    /// The replica a new connection goes to.
    pub fn pick(&self, rng: &mut StdRng) -> &str {
        if self.replicas.len() == 1 {
            // One replica: no draw, so single-proxy runs replay as they always have.
            return &self.replicas[0];
        }
        let ready = self.ready.lock().expect("single-threaded simulation");
        let candidates: Vec<usize> = (0..self.replicas.len()).filter(|&index| ready[index]).collect();
        let index = if candidates.is_empty() {
            rng.random_range(0..self.replicas.len())
        } else {
            candidates[rng.random_range(0..candidates.len())]
        };
        &self.replicas[index]
    }

    /// Put replica `index` in or out of the endpoints.
    pub fn set_ready(&self, index: usize, ready: bool) {
        self.ready.lock().expect("single-threaded simulation")[index] = ready;
    }
}

/// Where a rolling update is with the replica it is replacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Next to be replaced: to be told to terminate.
    Due,
    /// Told to terminate; leaves the endpoints after the lag.
    Terminating {
        /// When it was told.
        since: Duration,
        /// Whether it has left the endpoints.
        out: bool,
    },
    /// Its process exited; the new one starts after the start delay.
    Exited {
        /// When it exited.
        since: Duration,
    },
    /// The new process runs; waiting for it to be ready.
    Starting,
    /// Ready; back in the endpoints after the lag, then the next replica.
    Ready {
        /// When it was first seen ready.
        since: Duration,
    },
}

/// A rolling update over every replica in order (`maxUnavailable: 1`, `maxSurge: 0`).
#[derive(Clone, Debug)]
pub struct Rollout {
    /// The replica being replaced.
    pub replica: usize,
    /// What is happening to it.
    pub step: Step,
}

/// What the world should do for a rollout now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Nothing yet.
    Wait,
    /// Take replica `.0` out of the endpoints.
    Unready(usize),
    /// Start replica `.0`'s new process.
    Start(usize),
    /// Put replica `.0` back in the endpoints.
    Ready(usize),
    /// Tell replica `.0` to terminate (SIGTERM).
    Terminate(usize),
    /// Every replica was replaced.
    Done,
}

/// What the world tells a rollout about the replica it is replacing.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// Simulated time now.
    pub now: Duration,
    /// Its process is running.
    pub running: bool,
    /// Its readiness probe would pass (the process runs, is not draining, has backends).
    pub ready: bool,
}

impl Rollout {
    /// A rollout starting with replica 0.
    pub fn start() -> Self {
        Rollout {
            replica: 0,
            step: Step::Due,
        }
    }

    /// Advance with what the world shows; the order to carry out.
    pub fn advance(&mut self, seen: Seen, replicas: usize, lag: Duration, start_delay: Duration) -> Order {
        if self.is_done(replicas) {
            return Order::Done;
        }
        match self.step {
            Step::Due => {
                self.step = Step::Terminating {
                    since: seen.now,
                    out: false,
                };
                Order::Terminate(self.replica)
            }
            Step::Terminating { since, out } => {
                if !out && seen.now >= since + lag {
                    self.step = Step::Terminating { since, out: true };
                    return Order::Unready(self.replica);
                }
                if out && !seen.running {
                    self.step = Step::Exited { since: seen.now };
                }
                Order::Wait
            }
            Step::Exited { since } if seen.now >= since + start_delay => {
                self.step = Step::Starting;
                Order::Start(self.replica)
            }
            Step::Starting if seen.ready => {
                self.step = Step::Ready { since: seen.now };
                Order::Wait
            }
            Step::Ready { since } if seen.now >= since + lag => {
                let back = self.replica;
                self.replica += 1;
                self.step = Step::Due;
                Order::Ready(back)
            }
            _ => Order::Wait,
        }
    }

    /// Whether every replica was replaced.
    pub fn is_done(&self, replicas: usize) -> bool {
        self.replica >= replicas
    }
}

/// Each replica's requests per node, sampled every [`SAMPLE_EVERY`](crate::run::SAMPLE_EVERY) and carried across its
/// processes (a replaced process starts counting from zero).
pub(crate) struct ReplicaSamples {
    nodes: usize,
    /// Per replica: the samples so far.
    pub(crate) samples: Vec<Vec<Vec<u64>>>,
    /// Per replica: what its earlier processes sent.
    carried: Vec<Vec<u64>>,
    /// Per replica: the process last sampled.
    last: Vec<Option<Arc<App<SimConnector>>>>,
}

impl ReplicaSamples {
    pub(crate) fn new(replicas: usize, nodes: usize) -> Self {
        ReplicaSamples {
            nodes,
            samples: vec![Vec::new(); replicas],
            carried: vec![vec![0; nodes]; replicas],
            last: vec![None; replicas],
        }
    }

    /// Requests `app` sent to each node so far (`node-N:port` is node N).
    fn counts(&self, app: &App<SimConnector>) -> Vec<u64> {
        let mut counts = vec![0; self.nodes];
        for pool in app.proxy.current().state().pools() {
            let pool = pool.lock();
            for backend in pool.balancer().backends() {
                let node = backend
                    .spec()
                    .address
                    .strip_prefix("node-")
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|number| number.parse::<usize>().ok());
                if let Some(node) = node.filter(|node| (1..=self.nodes).contains(node)) {
                    counts[node - 1] += backend.requests_total();
                }
            }
        }
        counts
    }

    pub(crate) fn sample(&mut self, apps: &[Option<Arc<App<SimConnector>>>]) {
        for (index, app) in apps.iter().enumerate() {
            let replaced = match (&self.last[index], app) {
                (Some(last), Some(app)) => !Arc::ptr_eq(last, app),
                _ => false,
            };
            if replaced && let Some(last) = self.last[index].take() {
                // The old process is done: what it sent stays counted.
                let finished = self.counts(&last);
                for (carried, count) in self.carried[index].iter_mut().zip(finished) {
                    *carried += count;
                }
            }
            self.last[index] = app.clone();
            let now = app.as_ref().map_or_else(|| vec![0; self.nodes], |app| self.counts(app));
            let sample = self.carried[index]
                .iter()
                .zip(now)
                .map(|(carried, now)| carried + now)
                .collect();
            self.samples[index].push(sample);
        }
    }
}
