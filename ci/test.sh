#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Python S3 clients (boto3, awscli, s3cmd) are part of the suite.
if ! python3 -c 'import boto3' 2>/dev/null || ! command -v aws >/dev/null 2>&1 || ! command -v s3cmd >/dev/null 2>&1; then
  echo "installing boto3, awscli and s3cmd (pip)"
  python3 -m pip install --quiet --disable-pip-version-check boto3 awscli s3cmd
fi

# The conformance suite's second server: s3s-fs, the s3s project's reference server, built
# from source (about 4 CPU-minutes once; cargo keeps it in ~/.cargo/bin).
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "installing s3s-fs 0.14.1 (cargo install)"
  cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary
fi
export CONFORMANCE_S3S_FS=required

# A real Prometheus scrapes the proxy in a test, and promtool checks the exposition and the
# alert rules: Debian's `prometheus` package (apt needs root; elsewhere those tests say they are
# skipped, and under CI they are required).
# And a real browser loads the live view: Debian's `chromium`.
missing=""
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing="prometheus"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing (apt)"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "not installed, and apt needs root:$missing; their tests will be skipped"
  fi
fi
# The manifests test reads kustomize's YAML with PyYAML (and needs kubectl, on the machine).
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "installing PyYAML (pip)"
  python3 -m pip install --quiet --disable-pip-version-check pyyaml
fi
if [ "${CI:-}" = true ]; then
  export STOREFRONT_PROMETHEUS=required STOREFRONT_CHROMIUM=required STOREFRONT_KUBECTL=required
fi

cargo test --workspace "$@"
