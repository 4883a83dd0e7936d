#!/usr/bin/env bash
# The production build of the proxy (--no-default-features) carries no demo cluster: s3-mock,
# and with it the s3s S3 server, sit behind the `demo` feature only.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p storefront --no-default-features -e normal --prefix none)
forbidden=$(printf '%s\n' "$tree" | grep -E '^(s3s|s3s-[a-z-]+|s3-mock)( |$)' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "storefront --no-default-features depends on the demo's crates:" >&2
  echo "$forbidden" >&2
  exit 1
fi
cargo check -p storefront --no-default-features --bins --lib --quiet
echo "ok: storefront builds without the demo feature and names no s3s"
