//! The Kubernetes manifests as the API types see them: every object each overlay renders
//! deserialises into its `k8s-openapi` type with no field left over (k8s-openapi ignores
//! unknown fields silently; `serde_ignored` reports them), and every ConfigMap's
//! `storefront.toml` is a configuration the proxy accepts. (`ci/manifests.sh` validates the
//! same objects against the OpenAPI schemas with `kubernetes-validate --strict`.)

mod common;

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use storefront_core::config::Config;

fn kubernetes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The objects `kubectl kustomize` renders for `directory`, as JSON (PyYAML reads the YAML:
/// kubectl writes no JSON for kustomize output).
fn render(directory: &Path) -> Vec<serde_json::Value> {
    let rendered = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(directory)
        .output()
        .expect("kubectl runs");
    assert!(
        rendered.status.success(),
        "kubectl kustomize {}: {}",
        directory.display(),
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut python = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([o for o in yaml.safe_load_all(sys.stdin) if o]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&rendered.stdout)
        .expect("write");
    let converted = python.wait_with_output().expect("python3 ends");
    assert!(converted.status.success(), "PyYAML could not read the rendered objects");
    serde_json::from_slice(&converted.stdout).expect("a JSON list")
}

/// Deserialise `object` as `T`, returning the paths of the fields `T` does not know.
fn unknown_fields<T: serde::de::DeserializeOwned>(object: &serde_json::Value) -> Vec<String> {
    let mut unknown = Vec::new();
    // serde_ignored marks each optional field it passes through with `?`.
    let _: T = serde_ignored::deserialize(object.clone(), |path| unknown.push(path.to_string().replace(".?", "")))
        .unwrap_or_else(|error| panic!("not a valid {}: {error}", std::any::type_name::<T>()));
    unknown
}

#[test]
fn every_rendered_object_is_its_api_type_with_no_unknown_field() {
    // Proves the manifests against the Kubernetes types themselves: a misspelt or misplaced
    // field anywhere in any overlay fails here, and every proxy configuration they carry
    // parses and validates.
    if common::installed("kubectl", "STOREFRONT_KUBECTL").is_none() {
        return;
    }
    let mut directories = vec![kubernetes().join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(kubernetes().join("overlays"))
        .expect("overlays")
        .map(|entry| entry.expect("entry").path())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 4, "{overlays:?}");
    directories.extend(overlays);
    for directory in directories {
        let objects = render(&directory);
        assert!(!objects.is_empty(), "{} renders nothing", directory.display());
        let mut configurations = 0;
        for object in &objects {
            let kind = object["kind"].as_str().expect("a kind");
            let unknown = match kind {
                "Deployment" => unknown_fields::<Deployment>(object),
                "Service" => unknown_fields::<Service>(object),
                "ServiceAccount" => unknown_fields::<ServiceAccount>(object),
                "Secret" => {
                    // kustomize wraps long base64 values over lines, which the API server's
                    // decoder skips and k8s-openapi's does not.
                    let mut object = object.clone();
                    if let Some(data) = object["data"].as_object_mut() {
                        for value in data.values_mut() {
                            let joined: String = value.as_str().unwrap_or_default().split_whitespace().collect();
                            *value = serde_json::Value::String(joined);
                        }
                    }
                    unknown_fields::<Secret>(&object)
                }
                "PodDisruptionBudget" => unknown_fields::<PodDisruptionBudget>(object),
                "HorizontalPodAutoscaler" => unknown_fields::<HorizontalPodAutoscaler>(object),
                "NetworkPolicy" => unknown_fields::<NetworkPolicy>(object),
                "ClusterRole" => unknown_fields::<ClusterRole>(object),
                "ClusterRoleBinding" => unknown_fields::<ClusterRoleBinding>(object),
                "ConfigMap" => {
                    let unknown = unknown_fields::<ConfigMap>(object);
                    let text = object["data"]["storefront.toml"].as_str().expect("storefront.toml");
                    Config::from_toml(text, "storefront.toml")
                        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
                    configurations += 1;
                    unknown
                }
                // The Prometheus Operator's, which k8s-openapi has no type for: ci/manifests.sh
                // checks their required fields and the rules' equality with deploy/monitoring.
                "ServiceMonitor" | "PrometheusRule" => Vec::new(),
                other => panic!("{}: no check for a {other}", directory.display()),
            };
            assert!(
                unknown.is_empty(),
                "{}: {kind} {} has fields its type does not know: {unknown:?}",
                directory.display(),
                object["metadata"]["name"]
            );
        }
        assert_eq!(configurations, 1, "{}: one proxy configuration", directory.display());
    }
}

#[test]
fn an_unknown_field_is_caught() {
    // Proves the check above can fail: a Deployment with a misspelt field is reported by path.
    let object = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "storefront" },
        "spec": {
            "selector": { "matchLabels": { "app": "storefront" } },
            "template": { "spec": { "containers": [], "terminationGracePeriodSecond": 45 } }
        }
    });
    assert_eq!(
        unknown_fields::<Deployment>(&object),
        vec!["spec.template.spec.terminationGracePeriodSecond".to_owned()]
    );
}

#[test]
fn every_deployment_drains_before_it_is_stopped_and_is_given_the_time() {
    // Proves the rollout contract of every overlay: readiness is `/readyz`, the preStop hook
    // calls `/admin/drain`, both on the port the proxy's admin listener has in the overlay's
    // own configuration, and the grace period covers the drain delay and the shutdown grace
    // of that configuration with time to spare.
    if common::installed("kubectl", "STOREFRONT_KUBECTL").is_none() {
        return;
    }
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(kubernetes().join("overlays"))
        .expect("overlays")
        .map(|entry| entry.expect("entry").path())
        .collect();
    overlays.sort();
    for directory in overlays {
        let objects = render(&directory);
        let text = objects
            .iter()
            .find(|object| object["kind"] == "ConfigMap")
            .and_then(|object| object["data"]["storefront.toml"].as_str())
            .expect("a configuration");
        let config = Config::from_toml(text, "storefront.toml").expect("valid");
        let admin_port: i32 = config
            .admin
            .listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .expect("admin.listen has a port");
        let deployment: Deployment = serde_json::from_value(
            objects
                .iter()
                .find(|object| object["kind"] == "Deployment")
                .expect("a Deployment")
                .clone(),
        )
        .expect("a Deployment");
        let pod = deployment.spec.expect("spec").template.spec.expect("pod spec");
        let container = &pod.containers[0];
        let ports = container.ports.clone().unwrap_or_default();
        let port_number = |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(number) => *number,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => ports
                .iter()
                .find(|candidate| candidate.name.as_deref() == Some(name.as_str()))
                .map(|candidate| candidate.container_port)
                .unwrap_or_else(|| panic!("{}: no port named {name}", directory.display())),
        };
        let readiness = container
            .readiness_probe
            .as_ref()
            .and_then(|probe| probe.http_get.as_ref())
            .expect("an HTTP readiness probe");
        assert_eq!(readiness.path.as_deref(), Some("/readyz"), "{}", directory.display());
        assert_eq!(port_number(&readiness.port), admin_port, "{}", directory.display());
        let hook = container
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
            .and_then(|hook| hook.http_get.as_ref())
            .expect("a preStop HTTP hook");
        assert_eq!(hook.path.as_deref(), Some("/admin/drain"), "{}", directory.display());
        assert_eq!(port_number(&hook.port), admin_port, "{}", directory.display());
        let needed = config.server.drain_delay.get() + config.server.shutdown_grace.get();
        let grace = pod
            .termination_grace_period_seconds
            .expect("terminationGracePeriodSeconds");
        assert!(
            std::time::Duration::from_secs(grace as u64) > needed,
            "{}: {grace} s of grace for {needed:?} of drain and shutdown",
            directory.display()
        );
    }
}
