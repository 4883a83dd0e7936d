//! The simulated proxies' configuration and the DNS they resolve through.

use std::collections::BTreeMap;

use storefront_core::balance::AlgorithmKind;
use storefront_core::config::{Config, ConfigDuration};

use crate::run::{PORT, PROXY_IDLE_TIMEOUT, node_name};
use crate::scenario::{ProxyBackends, Scenario};

/// The simulated DNS name of the pool of `zone` (the whole cluster without zones).
fn pool_dns_name(zone: Option<&str>) -> String {
    match zone {
        Some(zone) => format!("{zone}.cluster.sim"),
        None => "cluster.sim".to_owned(),
    }
}

/// The simulated DNS the proxies resolve through: each pool's name answers with its nodes.
pub(crate) fn proxy_dns(scenario: &Scenario) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for index in 0..scenario.cluster.nodes {
        names.entry(pool_dns_name(None)).or_default().push(node_name(index));
        if let Some(zone) = scenario.cluster.zone_of(index) {
            names
                .entry(pool_dns_name(Some(zone)))
                .or_default()
                .push(node_name(index));
        }
    }
    names
}

/// The proxy's configuration: the scenario's extra TOML (trust mode unless it has an `[auth]`
/// section of its own), the mode's algorithm, and the cluster's nodes as one pool — or, with
/// zones, one pool per zone, this proxy's own zone first and the others as failover.
/// Everything else is the proxy's defaults (active probes too: they add a request per node
/// every five seconds to the node counters, a negligible share).
pub(crate) fn proxy_config(
    scenario: &Scenario,
    algorithm: AlgorithmKind,
    zone: Option<&str>,
) -> Result<Config, String> {
    let backends = |zone: Option<&str>| -> String {
        match scenario.proxy_backends {
            ProxyBackends::Static => format!(
                "backends = [{}]",
                (0..scenario.cluster.nodes)
                    .filter(|&index| zone.is_none() || scenario.cluster.zone_of(index) == zone)
                    .map(|index| format!("\"{}:{PORT}\"", node_name(index)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ProxyBackends::Dns => format!(
                "dns = {{ name = \"{}\", port = {PORT}, refresh = \"1s\" }}",
                pool_dns_name(zone)
            ),
        }
    };
    let pools = match zone {
        None => format!(
            "[[pools]]\nname = \"cluster\"\n{}\n{}\n",
            backends(None),
            scenario.pool_config
        ),
        Some(own) => {
            let zones = scenario.cluster.zone_names();
            let mut ordered = vec![own];
            ordered.extend(zones.iter().copied().filter(|other| *other != own));
            let mut text = format!("[routing]\ndefault_pool = \"{own}\"\nfailover = \"when-unavailable\"\n\n");
            for name in &ordered {
                let others: Vec<String> = ordered
                    .iter()
                    .filter(|other| *other != name)
                    .map(|other| format!("\"{other}\""))
                    .collect();
                text.push_str(&format!(
                    "[[pools]]\nname = \"{name}\"\nzone = \"{name}\"\nfailover_to = [{}]\n{}\n{}\n\n",
                    others.join(", "),
                    backends(Some(name)),
                    scenario.pool_config
                ));
            }
            text
        }
    };
    // Trust mode unless the scenario configures auth itself.
    let own_auth = toml::from_str::<toml::Table>(&scenario.proxy_config)
        .map_err(|error| format!("scenario {} proxy_config: {error}", scenario.name))?
        .contains_key("auth");
    let trust = if own_auth { "" } else { "[auth]\nmode = \"trust\"\n" };
    let text = format!("{trust}{}\n\n{pools}", scenario.proxy_config);
    let mut config = Config::from_toml(&text, &format!("scenario {} proxy_config", scenario.name))
        .map_err(|error| error.to_string())?;
    config.balance.algorithm = algorithm;
    // The report is the simulation's record of every request; an access log line per simulated
    // request would only slow it down.
    config.telemetry.access_log = "off".to_owned();
    for pool in &mut config.pools {
        pool.connections.idle_timeout = ConfigDuration(PROXY_IDLE_TIMEOUT);
    }
    Ok(config)
}
