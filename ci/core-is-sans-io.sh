#!/usr/bin/env bash
# storefront-core must not depend, even transitively, on an IO runtime: the simulation replays
# it from a seed only because it reads no clock and opens no socket.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p storefront-core -e normal --prefix none)
forbidden=$(printf '%s\n' "$tree" | grep -E '^(tokio|hyper|hyper-util|kube|kube-runtime|turmoil|mio|socket2)( |$)' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "storefront-core depends on IO crates:" >&2
  echo "$forbidden" >&2
  exit 1
fi
echo "ok: $(printf '%s\n' "$tree" | sort -u | wc -l) crates in storefront-core's normal dependency tree, none of them IO"
