#!/usr/bin/env bash
# Format, lint, the core's sans-IO rule, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "storefront-core depends on no IO crate"
bash ci/core-is-sans-io.sh

step "storefront without the demo feature names no s3s"
bash ci/runtime-without-demo.sh

step "Kubernetes manifests render and validate (kubectl kustomize, kubernetes-validate --strict)"
bash ci/manifests.sh

step "bash ci/test.sh (the README's test command)"
bash ci/test.sh

step "the image: the Dockerfile built with podman from local stages, and checked"
bash ci/image.sh
