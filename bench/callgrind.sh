#!/usr/bin/env bash
# bench/callgrind.sh — instructions per small GET through Storefront, counted by callgrind:
# repeatable on a shared, noisy machine where seconds are not. Loopback only.
#
#   bash bench/callgrind.sh [CONFIG...]     default: bench/storefront.toml bench/storefront-off.toml
#
# Starts three s3s-fs backends (127.0.0.1:9001-9003, a 1 KiB object in each), then for each
# configuration: the release proxy under `valgrind --tool=callgrind` with instrumentation off,
# a 5 s wrk warm-up, instrumentation on for 20 s of wrk (1 thread, 16 connections, GET 1 KiB),
# off again; prints the instructions counted divided by the requests wrk completed. The
# profiles stay in $OUT (callgrind_annotate them to see where the instructions go).
# Needs: valgrind, wrk, s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary),
#        cargo build --release -p storefront.
set -u
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
S3FS=${S3FS:-$HOME/.cargo/bin/s3s-fs}
OUT=${OUT:-${TMPDIR:-/tmp}/sf-callgrind}
DATA=$OUT/data
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=("$BENCH/storefront.toml" "$BENCH/storefront-off.toml")
mkdir -p "$OUT"
backends=()
cleanup() { for pid in "${backends[@]}"; do kill "$pid" 2>/dev/null; done; }
trap cleanup EXIT
head -c 1024 /dev/urandom > "$OUT/obj-1k"
for i in 1 2 3; do
  mkdir -p "$DATA/b$i/bench"
  "$S3FS" --host 127.0.0.1 --port 900$i "$DATA/b$i" > "$OUT/s3fs$i.log" 2>&1 &
  backends+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:900$i/" && break; sleep 0.1; done
  curl -s -o /dev/null -X PUT --data-binary "@$OUT/obj-1k" "http://127.0.0.1:900$i/bench/obj-1k"
done
for config in "${CONFIGS[@]}"; do
  name=$(basename "$config" .toml)
  port=$(awk -F'"' '/^listen/{split($2, a, ":"); print a[2]; exit}' "$config")
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.callgrind" \
    "$ROOT/target/release/storefront" run --config "$config" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" &
  pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/bench/obj-1k" && break; sleep 0.3; done
  wrk -t1 -c16 -d5s "http://127.0.0.1:$port/bench/obj-1k" > /dev/null
  callgrind_control -i on "$pid" > /dev/null
  wrk -t1 -c16 -d20s "http://127.0.0.1:$port/bench/obj-1k" > "$OUT/$name.wrk"
  callgrind_control -i off "$pid" > /dev/null
  kill -INT "$pid"; wait "$pid" 2>/dev/null
  requests=$(awk '/requests in/{print $1}' "$OUT/$name.wrk")
  ir=$(callgrind_annotate "$OUT/$name.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
  echo "$name: $requests requests, $ir instructions, $(( ir / requests )) per request"
done
