#!/usr/bin/env bash
# bench/soak.sh — the long soak: the proxy (its own process) for 10 minutes at about 80 % of
# its measured capacity with a GET / ranged GET / PUT / multipart / LIST mix, beside 10,000
# idle keep-alive client connections, against three s3-mock nodes on loopback. Fails if the
# proxy's RSS grows more than 5 % over the second half, if any request fails, or if its file
# descriptors do not return to their baseline once the clients leave. Writes soak.json,
# soak.txt and soak.svg (RSS and fds over time) to $SOAK_OUT.
#
#   bash bench/soak.sh                     # 600 s, 10,000 idle connections
#   SOAK_SECONDS=120 SOAK_IDLE=2000 bash bench/soak.sh
#
# The short version (60 s, 1,000 idle connections) is part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS=${SOAK_SECONDS:-600}
export SOAK_IDLE=${SOAK_IDLE:-10000}
export SOAK_OUT=${SOAK_OUT:-$PWD/target/soak}
# The clients (the test process) and the proxy each hold a socket per idle connection, plus
# the load's and the backends' connections.
need=$((SOAK_IDLE + 4096))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt "$need" ]; then
  echo "soak: needs $need open files (ulimit -n is $(ulimit -n)); lower SOAK_IDLE or raise the hard limit" >&2
  exit 2
fi
cargo test -p storefront --test soak -- --nocapture
echo "soak: samples in $SOAK_OUT"
