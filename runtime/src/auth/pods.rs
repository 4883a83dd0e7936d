//! Pod identity by source IP: a kube-rs watch of every Pod feeds core's [`PodTable`]; requests
//! look their peer address up in it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::watcher;
use storefront_core::auth::pods::{PodEvent, PodInfo, PodLookup, PodTable};
use storefront_core::config::PodsSection;

/// The node label naming its zone (and the deprecated one older clusters still set).
const ZONE_LABELS: [&str; 2] = ["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"];

/// A running pod watch (and node watch, for the pods' zones) and the tables they keep.
pub struct PodWatch {
    table: Arc<RwLock<PodTable>>,
    zones: Arc<RwLock<HashMap<String, String>>>,
    /// Set once the first full listing is in the table: before it, every pod caller would be
    /// nobody, so the proxy is not ready.
    synced: Arc<AtomicBool>,
    counts: Arc<WatchCounts>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

/// What the pod watch went through.
#[derive(Debug, Default)]
struct WatchCounts {
    /// Full listings begun (the first, then one per restart of the watch).
    listings: AtomicU64,
    /// Errors from the watch (each makes kube-rs's watcher back off and retry).
    errors: AtomicU64,
}

/// The pod watch's figures, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodWatchStats {
    /// Pods in the table.
    pub pods: usize,
    /// Times the watch started over with a full listing, after its first.
    pub restarts: u64,
    /// Errors the watch met (and retried after).
    pub errors: u64,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keep `zones` (node name → zone) from a watch of the cluster's nodes.
async fn watch_zones(client: kube::Client, zones: Arc<RwLock<HashMap<String, String>>>) {
    let mut events = std::pin::pin!(watcher(Api::<Node>::all(client), watcher::Config::default()));
    let mut listing = HashMap::new();
    while let Some(event) = events.next().await {
        let zone_of = |node: &Node| {
            let labels = node.metadata.labels.as_ref()?;
            let zone = ZONE_LABELS.iter().find_map(|label| labels.get(*label))?;
            Some((node.metadata.name.clone()?, zone.clone()))
        };
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(node)) => listing.extend(zone_of(&node)),
            Ok(watcher::Event::InitDone) => {
                *zones.write().expect("the zone map lock is never poisoned") = std::mem::take(&mut listing);
            }
            Ok(watcher::Event::Apply(node)) => {
                if let Some((name, zone)) = zone_of(&node) {
                    zones
                        .write()
                        .expect("the zone map lock is never poisoned")
                        .insert(name, zone);
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                if let Some(name) = &node.metadata.name {
                    zones.write().expect("the zone map lock is never poisoned").remove(name);
                }
            }
            Err(error) => tracing::warn!(%error, "node watch error"),
        }
    }
}

impl PodWatch {
    /// Start watching the pods of the cluster `section` names, through `client`.
    pub fn start(section: &PodsSection, client: kube::Client) -> PodWatch {
        let table = Arc::new(RwLock::new(PodTable::new(section.networks.clone())));
        let zones = Arc::new(RwLock::new(HashMap::new()));
        let zone_task = tokio::spawn(watch_zones(client.clone(), zones.clone()));
        let feeding = table.clone();
        let synced = Arc::new(AtomicBool::new(false));
        let listed = synced.clone();
        let counts = Arc::new(WatchCounts::default());
        let counting = counts.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(Api::<Pod>::all(client), watcher::Config::default()));
            let mut listing: Vec<PodInfo> = Vec::new();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        // The watcher retries by itself; the table keeps what it knew.
                        counting.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "pod watch error");
                        continue;
                    }
                };
                let mut table = feeding.write().expect("the pod table lock is never poisoned");
                match event {
                    watcher::Event::Init => {
                        counting.listings.fetch_add(1, Ordering::Relaxed);
                        listing.clear();
                    }
                    watcher::Event::InitApply(pod) => listing.extend(info(&pod)),
                    watcher::Event::InitDone => {
                        table.relist(std::mem::take(&mut listing));
                        listed.store(true, Ordering::Release);
                        tracing::info!(pods = table.len(), "pod table listed");
                    }
                    watcher::Event::Apply(pod) => {
                        if let Some(info) = info(&pod) {
                            table.apply(PodEvent::Applied(info));
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            table.apply(PodEvent::Deleted {
                                uid,
                                version: version(&pod),
                            });
                        }
                    }
                }
            }
        });
        PodWatch {
            table,
            zones,
            synced,
            counts,
            tasks: [task, zone_task],
        }
    }

    /// The table's size and what the watch went through.
    pub fn stats(&self) -> PodWatchStats {
        PodWatchStats {
            pods: self.table.read().expect("the pod table lock is never poisoned").len(),
            restarts: self.counts.listings.load(Ordering::Relaxed).saturating_sub(1),
            errors: self.counts.errors.load(Ordering::Relaxed),
        }
    }

    /// True once the pod table holds a first full listing of the cluster's pods.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Who holds `peer` (with the zone of the pod's node).
    pub fn lookup(&self, peer: std::net::IpAddr) -> PodLookup {
        let found = self
            .table
            .read()
            .expect("the pod table lock is never poisoned")
            .lookup(peer);
        match found {
            PodLookup::Pod(mut principal) => {
                if principal.zone.is_none()
                    && let Some(node) = &principal.node
                {
                    principal.zone = self
                        .zones
                        .read()
                        .expect("the zone map lock is never poisoned")
                        .get(node)
                        .cloned();
                }
                PodLookup::Pod(principal)
            }
            other => other,
        }
    }
}

fn version(pod: &Pod) -> u64 {
    pod.metadata
        .resource_version
        .as_deref()
        .and_then(|version| version.parse().ok())
        .unwrap_or(0)
}

/// What the table needs of `pod` (none without a uid).
fn info(pod: &Pod) -> Option<PodInfo> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    Some(PodInfo {
        uid: pod.metadata.uid.clone()?,
        version: version(pod),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        service_account: spec
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: spec.and_then(|spec| spec.node_name.clone()),
        zone: None,
        ip: status
            .and_then(|status| status.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        running: status.and_then(|status| status.phase.as_deref()) == Some("Running"),
        host_network: spec.and_then(|spec| spec.host_network).unwrap_or(false),
    })
}
