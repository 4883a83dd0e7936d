//! The pod table's rules, and a property over every order of watch events.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn pod(uid: &str, version: u64, ip: &str, running: bool) -> PodInfo {
    PodInfo {
        uid: uid.to_owned(),
        version,
        namespace: "etl".to_owned(),
        name: format!("pod-{uid}"),
        service_account: "spark".to_owned(),
        labels: BTreeMap::from([("app".to_owned(), "spark".to_owned())]),
        node: Some("node-a".to_owned()),
        zone: Some("dc1".to_owned()),
        ip: Some(ip.parse().expect("ip")),
        running,
        host_network: false,
    }
}

fn table() -> PodTable {
    PodTable::new(vec!["10.0.0.0/16".parse().expect("network")])
}

fn name(lookup: PodLookup) -> Option<String> {
    match lookup {
        PodLookup::Pod(principal) => Some(principal.name),
        _ => None,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[test]
fn only_one_running_pod_off_the_host_network_names_an_ip() {
    // Proves each rule: running pods are found with their attributes; pending, host-network,
    // deleted and doubly-claimed IPs name nobody; untrusted IPs are not looked up; stale and
    // late events change nothing; a relist drops pods that are gone.
    let mut pods = table();
    pods.apply(PodEvent::Applied(pod("a", 1, "10.0.0.5", false)));
    assert_eq!(pods.lookup(ip("10.0.0.5")), PodLookup::Unknown, "pending");
    pods.apply(PodEvent::Applied(pod("a", 2, "10.0.0.5", true)));
    let PodLookup::Pod(found) = pods.lookup(ip("10.0.0.5")) else {
        panic!("running pod not found");
    };
    assert_eq!(found.name, "pod:etl/pod-a");
    assert_eq!(found.namespace.as_deref(), Some("etl"));
    assert_eq!(found.service_account.as_deref(), Some("spark"));
    assert_eq!(found.zone.as_deref(), Some("dc1"));
    assert_eq!(name(pods.lookup(ip("::ffff:10.0.0.5"))), Some("pod:etl/pod-a".into()));
    // A stale event (older version) is ignored.
    pods.apply(PodEvent::Applied(pod("a", 1, "10.0.0.5", false)));
    assert_eq!(name(pods.lookup(ip("10.0.0.5"))), Some("pod:etl/pod-a".into()));
    // A second pod claiming the IP (the old one's deletion not seen yet): nobody.
    pods.apply(PodEvent::Applied(pod("b", 3, "10.0.0.5", true)));
    assert_eq!(pods.lookup(ip("10.0.0.5")), PodLookup::Ambiguous);
    pods.apply(PodEvent::Deleted {
        uid: "a".into(),
        version: 4,
    });
    assert_eq!(name(pods.lookup(ip("10.0.0.5"))), Some("pod:etl/pod-b".into()));
    // A late update of the deleted pod does not bring it back.
    pods.apply(PodEvent::Applied(pod("a", 9, "10.0.0.5", true)));
    assert_eq!(name(pods.lookup(ip("10.0.0.5"))), Some("pod:etl/pod-b".into()));
    // Host network pods never count.
    let mut host = pod("h", 5, "10.0.0.7", true);
    host.host_network = true;
    pods.apply(PodEvent::Applied(host));
    assert_eq!(pods.lookup(ip("10.0.0.7")), PodLookup::Unknown);
    // Outside the pod networks: not looked up.
    pods.apply(PodEvent::Applied(pod("x", 6, "192.168.1.1", true)));
    assert_eq!(pods.lookup(ip("192.168.1.1")), PodLookup::Untrusted);
    // A relist without b: b is gone.
    pods.relist(vec![pod("c", 10, "10.0.0.8", true)]);
    assert_eq!(pods.lookup(ip("10.0.0.5")), PodLookup::Unknown);
    assert_eq!(name(pods.lookup(ip("10.0.0.8"))), Some("pod:etl/pod-c".into()));
}

/// One step of a real cluster's history.
#[derive(Clone, Debug)]
enum Change {
    /// A new pod (next uid) gets IP slot `ip` (if free), running or pending.
    Create { ip: usize, running: bool },
    /// Pod `pod` (index among created) changes phase.
    SetRunning { pod: usize, running: bool },
    /// Pod `pod` is deleted.
    Delete { pod: usize },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0..3usize, any::<bool>()).prop_map(|(ip, running)| Change::Create { ip, running }),
        (0..6usize, any::<bool>()).prop_map(|(pod, running)| Change::SetRunning { pod, running }),
        (0..6usize).prop_map(|pod| Change::Delete { pod }),
    ]
}

const IPS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

/// The events a real cluster emits for `changes` (IPs are never held by two live pods), with
/// the cluster's final state: uid → (ip, running) of live pods.
fn history(changes: &[Change]) -> (Vec<PodEvent>, HashMap<String, (usize, bool)>) {
    let mut live: HashMap<String, (usize, bool)> = HashMap::new();
    let mut created: Vec<String> = Vec::new();
    let mut events = Vec::new();
    let mut version = 0;
    for change in changes {
        version += 1;
        match *change {
            Change::Create { ip, running } => {
                if live.values().any(|&(held, _)| held == ip) {
                    continue;
                }
                let uid = format!("u{}", created.len());
                created.push(uid.clone());
                live.insert(uid.clone(), (ip, running));
                events.push(PodEvent::Applied(pod(&uid, version, IPS[ip], running)));
            }
            Change::SetRunning { pod: index, running } => {
                let Some(uid) = created.get(index) else { continue };
                let Some(state) = live.get_mut(uid) else { continue };
                state.1 = running;
                events.push(PodEvent::Applied(pod(uid, version, IPS[state.0], running)));
            }
            Change::Delete { pod: index } => {
                let Some(uid) = created.get(index) else { continue };
                if live.remove(uid).is_some() {
                    events.push(PodEvent::Deleted {
                        uid: uid.clone(),
                        version,
                    });
                }
            }
        }
    }
    (events, live)
}

/// What the delivered events say, by each pod's latest event: the uids whose latest state
/// claims `ip` (none if any event of theirs was a deletion).
fn claimants(delivered: &[PodEvent], ip: usize) -> Vec<String> {
    let mut latest: HashMap<&str, &PodEvent> = HashMap::new();
    let mut deleted: HashSet<&str> = HashSet::new();
    for event in delivered {
        match event {
            PodEvent::Applied(info) => {
                let newer = match latest.get(info.uid.as_str()) {
                    Some(PodEvent::Applied(known)) => info.version > known.version,
                    _ => true,
                };
                if newer {
                    latest.insert(&info.uid, event);
                }
            }
            PodEvent::Deleted { uid, .. } => {
                deleted.insert(uid);
            }
        }
    }
    latest
        .into_iter()
        .filter(|(uid, _)| !deleted.contains(uid))
        .filter_map(|(uid, event)| match event {
            PodEvent::Applied(info) if info.running && info.ip == Some(IPS[ip].parse().expect("ip")) => {
                Some(uid.to_owned())
            }
            _ => None,
        })
        .collect()
}

proptest! {
    /// Over random cluster histories delivered in any order: at every point, a pod is named for
    /// an IP only if it is the one pod whose latest delivered state claims it running there, and
    /// never after its deletion was delivered; once every event is in, the table names exactly
    /// the pods of the cluster's final state.
    #[test]
    fn no_order_of_watch_events_names_the_wrong_pod(
        changes in prop::collection::vec(change(), 0..40),
        order_seed in any::<u64>(),
    ) {
        let (events, live) = history(&changes);
        // A permutation of the events, drawn from the seed.
        let mut delivered = events.clone();
        let mut state = order_seed | 1;
        for index in (1..delivered.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            delivered.swap(index, (state % (index as u64 + 1)) as usize);
        }
        let mut pods = table();
        for count in 0..=delivered.len() {
            if count > 0 {
                pods.apply(delivered[count - 1].clone());
            }
            for (slot, address) in IPS.iter().enumerate() {
                let claim = claimants(&delivered[..count], slot);
                match pods.lookup(ip(address)) {
                    PodLookup::Pod(principal) => {
                        prop_assert_eq!(claim.len(), 1, "named {} while {:?} claim it", principal.name, claim);
                        prop_assert_eq!(&principal.name, &format!("pod:etl/pod-{}", claim[0]));
                    }
                    PodLookup::Ambiguous => prop_assert!(claim.len() > 1),
                    PodLookup::Unknown => prop_assert!(claim.is_empty(), "{:?} claim it", claim),
                    PodLookup::Untrusted => prop_assert!(false, "pod IPs are trusted"),
                }
            }
        }
        for (slot, address) in IPS.iter().enumerate() {
            let truth: Vec<&String> = live
                .iter()
                .filter(|(_, state)| state.0 == slot && state.1)
                .map(|(uid, _)| uid)
                .collect();
            let named = name(pods.lookup(ip(address)));
            prop_assert_eq!(named, truth.first().map(|uid| format!("pod:etl/pod-{uid}")));
        }
    }
}
