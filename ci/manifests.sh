#!/usr/bin/env bash
# The Kubernetes manifests, with no cluster: every overlay (and the base) renders with
# `kubectl kustomize`; every built-in object passes `kubernetes-validate --strict` (unknown
# fields rejected) for the oldest and newest Kubernetes we claim; the Prometheus Operator's
# custom resources carry their required fields, and the PrometheusRule's groups are the alert
# rules of deploy/monitoring (and pass `promtool check rules` where promtool is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${KUBERNETES_VERSIONS:-"1.33.0 1.37.0"}
if ! command -v kubernetes-validate > /dev/null; then
  echo "installing kubernetes-validate (pip)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  name=$(basename "$dir")
  kubectl kustomize "$dir" > "$out/$name.yaml"
  python3 - "$out/$name.yaml" "$out/$name" <<'PY'
import sys, yaml
rendered, prefix = sys.argv[1], sys.argv[2]
objects = [o for o in yaml.safe_load_all(open(rendered)) if o]
builtin = [o for o in objects if not o["apiVersion"].startswith("monitoring.coreos.com/")]
custom = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(builtin, open(prefix + ".builtin.yaml", "w"))
for o in custom:
    kind, spec = o["kind"], o.get("spec") or {}
    assert o["metadata"].get("name"), f"{kind} without a name"
    if kind == "ServiceMonitor":
        assert spec.get("selector", {}).get("matchLabels"), "ServiceMonitor without a selector"
        assert spec.get("endpoints") and all("port" in e for e in spec["endpoints"]), "ServiceMonitor endpoints need a port"
    elif kind == "PrometheusRule":
        rules = yaml.safe_load(open("deploy/monitoring/storefront.rules.yaml"))["groups"]
        assert spec.get("groups") == rules, "the PrometheusRule's groups differ from deploy/monitoring/storefront.rules.yaml"
        yaml.safe_dump({"groups": spec["groups"]}, open(prefix + ".rules.yaml", "w"))
    else:
        raise SystemExit(f"unexpected custom resource {kind}")
print(f"{rendered}: {len(builtin)} built-in objects, {len(custom)} custom resources")
PY
  for version in $VERSIONS; do
    kubernetes-validate --strict --quiet -k "$version" "$out/$name.builtin.yaml"
  done
  if [ -f "$out/$name.rules.yaml" ] && command -v promtool > /dev/null; then
    promtool check rules "$out/$name.rules.yaml" > /dev/null
  fi
  echo "$name: renders and validates for Kubernetes $VERSIONS"
done
