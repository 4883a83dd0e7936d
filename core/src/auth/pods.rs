//! The pod table: which Kubernetes pod holds a source IP, from a pod watch's events, applied
//! in whatever order they arrive. The table never names a pod that its latest known state
//! does not show running at that IP; when in doubt it names none (the caller is then
//! anonymous, and policy denies by default).
//!
//! Rules (kube2iam and kiam attributed traffic by IP alone and got these wrong):
//!
//! - Only Running pods that are not on the host network count (a hostNetwork pod shares its
//!   node's IP with every other such pod).
//! - Two pods claiming one IP: nobody (the usual cause is a watch that has not yet seen the
//!   old pod's deletion).
//! - A deleted pod's uid is remembered (a tombstone), so a late update cannot bring it back;
//!   its IP names nobody until a pod is seen running with it.
//! - Per pod, an event older than the latest seen (by resourceVersion) is ignored.
//! - Only IPs inside the trusted pod networks are looked up at all.
//!
//! The runtime feeds it from a kube-rs watch; this module performs no IO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use crate::auth::{Principal, Source};

/// What the table needs to know of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`, as a number (etcd's revision): orders a pod's events.
    pub version: u64,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// The node's zone (`topology.kubernetes.io/zone`), if known.
    pub zone: Option<String>,
    /// `status.podIP`.
    pub ip: Option<IpAddr>,
    /// `status.phase == "Running"`.
    pub running: bool,
    /// `spec.hostNetwork`.
    pub host_network: bool,
}

/// A pod watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEvent {
    /// Added or modified.
    Applied(PodInfo),
    /// Deleted (at `version`).
    Deleted {
        /// The pod's uid.
        uid: String,
        /// The deletion's resourceVersion.
        version: u64,
    },
}

/// The outcome of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodLookup {
    /// Exactly one running pod holds the IP.
    Pod(Box<Principal>),
    /// No running pod is known at this IP.
    Unknown,
    /// Several pods claim the IP: nobody.
    Ambiguous,
    /// The IP is outside the trusted pod networks.
    Untrusted,
}

/// The pod table.
#[derive(Clone, Debug, Default)]
pub struct PodTable {
    trusted: Vec<ipnet::IpNet>,
    pods: HashMap<String, PodInfo>,
    /// Deleted uids, with the deletion's version.
    deleted: HashMap<String, u64>,
    /// IP → uids of pods whose latest state claims it (running, not host network).
    by_ip: HashMap<IpAddr, HashSet<String>>,
}

impl PodTable {
    /// An empty table trusting IPs in `networks` (the cluster's pod CIDRs).
    pub fn new(networks: Vec<ipnet::IpNet>) -> PodTable {
        PodTable {
            trusted: networks,
            ..PodTable::default()
        }
    }

    /// Apply one watch event.
    pub fn apply(&mut self, event: PodEvent) {
        match event {
            PodEvent::Applied(pod) => {
                if self.deleted.contains_key(&pod.uid) {
                    return; // a late event of a deleted pod
                }
                if self
                    .pods
                    .get(&pod.uid)
                    .is_some_and(|known| known.version >= pod.version)
                {
                    return; // stale
                }
                self.forget(&pod.uid);
                if let Some(ip) = claimed_ip(&pod) {
                    self.by_ip.entry(ip).or_default().insert(pod.uid.clone());
                }
                self.pods.insert(pod.uid.clone(), pod);
            }
            PodEvent::Deleted { uid, version } => {
                self.forget(&uid);
                self.pods.remove(&uid);
                let tombstone = self.deleted.entry(uid).or_insert(version);
                *tombstone = (*tombstone).max(version);
            }
        }
    }

    /// Start over from a full list (after a watch restart): pods not in it are gone.
    pub fn relist(&mut self, pods: Vec<PodInfo>) {
        let listed: HashSet<&str> = pods.iter().map(|pod| pod.uid.as_str()).collect();
        let gone: Vec<(String, u64)> = self
            .pods
            .values()
            .filter(|pod| !listed.contains(pod.uid.as_str()))
            .map(|pod| (pod.uid.clone(), pod.version))
            .collect();
        for (uid, version) in gone {
            self.apply(PodEvent::Deleted { uid, version });
        }
        for pod in pods {
            self.apply(PodEvent::Applied(pod));
        }
    }

    /// Who holds `ip`.
    pub fn lookup(&self, ip: IpAddr) -> PodLookup {
        let ip = canonical(ip);
        if !self.trusted.iter().any(|network| network.contains(&ip)) {
            return PodLookup::Untrusted;
        }
        let Some(uids) = self.by_ip.get(&ip) else {
            return PodLookup::Unknown;
        };
        let mut holders = uids.iter().filter_map(|uid| self.pods.get(uid));
        match (holders.next(), holders.next()) {
            (None, _) => PodLookup::Unknown,
            (Some(pod), None) => PodLookup::Pod(Box::new(principal(pod))),
            (Some(_), Some(_)) => PodLookup::Ambiguous,
        }
    }

    /// Number of pods known (for the admin API and logs).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// True when no pod is known.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn forget(&mut self, uid: &str) {
        if let Some(ip) = self.pods.get(uid).and_then(claimed_ip)
            && let Some(uids) = self.by_ip.get_mut(&ip)
        {
            uids.remove(uid);
            if uids.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The IP a pod's state claims, if it counts for identity.
fn claimed_ip(pod: &PodInfo) -> Option<IpAddr> {
    pod.ip.filter(|_| pod.running && !pod.host_network).map(canonical)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn principal(pod: &PodInfo) -> Principal {
    let mut principal = Principal::new(format!("pod:{}/{}", pod.namespace, pod.name), Source::Pod);
    principal.namespace = Some(pod.namespace.clone());
    principal.service_account = Some(pod.service_account.clone());
    principal.labels = pod.labels.clone();
    principal.zone = pod.zone.clone();
    principal.node = pod.node.clone();
    principal
}

#[cfg(test)]
mod tests;
