//! The static CIDR identity source: a peer address in a configured network is that network's
//! identity. The most specific (longest-prefix) network wins; between equal ones, the first
//! configured.

use std::net::IpAddr;

use crate::auth::{Principal, Source};
use crate::config::CidrIdentity;

/// Networks and their identities.
#[derive(Clone, Debug, Default)]
pub struct CidrMap {
    entries: Vec<CidrIdentity>,
}

impl CidrMap {
    /// A map of `entries` (validated with the configuration).
    pub fn new(entries: &[CidrIdentity]) -> CidrMap {
        CidrMap {
            entries: entries.to_vec(),
        }
    }

    /// The identity of `peer`, if a network contains it. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.1.2.3`, as dual-stack listeners report IPv4 peers) count as IPv4.
    pub fn lookup(&self, peer: IpAddr) -> Option<Principal> {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        let mut best: Option<(&CidrIdentity, u8)> = None;
        for entry in &self.entries {
            for network in entry.networks.iter().filter(|network| network.contains(&peer)) {
                if best.is_none_or(|(_, length)| network.prefix_len() > length) {
                    best = Some((entry, network.prefix_len()));
                }
            }
        }
        best.map(|(entry, _)| {
            let mut principal = Principal::new(format!("cidr:{}", entry.name), Source::Cidr);
            principal.cidr = Some(entry.name.clone());
            principal.zone = entry.zone.clone();
            principal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, networks: &[&str]) -> CidrIdentity {
        CidrIdentity {
            name: name.to_owned(),
            networks: networks.iter().map(|n| n.parse().expect("network")).collect(),
            zone: Some(format!("zone-{name}")),
        }
    }

    #[test]
    fn the_most_specific_network_wins_and_mapped_addresses_count_as_ipv4() {
        // Proves longest-prefix matching, the first entry winning ties, IPv4-mapped IPv6, and
        // no identity outside every network.
        let map = CidrMap::new(&[
            entry("office", &["10.1.0.0/16"]),
            entry("build", &["10.1.2.0/24", "fd00::/8"]),
            entry("shadow", &["10.1.2.0/24"]),
        ]);
        let name = |ip: &str| map.lookup(ip.parse().expect("ip")).map(|p| (p.name, p.zone));
        assert_eq!(
            name("10.1.9.9"),
            Some(("cidr:office".into(), Some("zone-office".into())))
        );
        assert_eq!(name("10.1.2.3").map(|p| p.0), Some("cidr:build".into()));
        assert_eq!(name("::ffff:10.1.2.3").map(|p| p.0), Some("cidr:build".into()));
        assert_eq!(name("fd12::1").map(|p| p.0), Some("cidr:build".into()));
        assert_eq!(name("10.2.0.1"), None);
        assert_eq!(name("::1"), None);
    }
}
