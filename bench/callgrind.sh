#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request through each proxy, counted by callgrind:
# repeatable on a shared, noisy machine where seconds are not. Loopback only.
#
#   bash bench/callgrind.sh [TARGET...]     default: storefront storefront-off
#
# TARGET is `storefront`, `storefront-off`, `storefront-policy` (bench/<TARGET>.toml: shipped
# telemetry, telemetry off, policy mode with presigned clients), `haproxy` (conf/haproxy.cfg)
# or `nginx` (conf/nginx.conf, run as one process: master_process off), or the path of
# another Storefront configuration. TESTS ["small"] picks the request streams: small = GET
# 1 KiB over 16 connections, put = PUT 1 MiB over 16, large = GET 64 MiB over 4 (also reported
# per GiB). BACKEND [s3s-fs] or s3-mock, as in bench/run.sh.
#
# Starts the backends (127.0.0.1:9001-9003 anonymous; 9004-9006 requiring the key of
# bench/storefront-policy.toml when that target is asked for), then for each target and test:
# the proxy under `valgrind --tool=callgrind` with instrumentation off, a 5 s wrk warm-up,
# instrumentation on for DUR [20] s of wrk (one thread), off again; prints the instructions
# counted over the requests wrk completed. Valgrind runs a process's threads one at a time, so
# HAProxy's and Storefront's thread pools are counted as the work they do, not as parallelism.
# The profiles stay in $OUT (callgrind_annotate them to see where the instructions go).
# Needs: valgrind, wrk, s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary),
#        cargo build --release -p storefront [-p s3-mock]; haproxy, nginx, boto3 for those.
set -u
export RUST_LOG=warn
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
S3FS=${S3FS:-$HOME/.cargo/bin/s3s-fs}
S3MOCK=${S3MOCK:-$ROOT/target/release/s3-mock}
BACKEND=${BACKEND:-s3s-fs}
TESTS=${TESTS:-small}
DUR=${DUR:-20}
OUT=${OUT:-${TMPDIR:-/tmp}/sf-callgrind}
DATA=$OUT/data
KEY=AKBENCHBACKEND SECRET=bench-backend-secret
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(storefront storefront-off)
mkdir -p "$OUT/presigned"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done; }
trap cleanup EXIT
keyed=0
case " ${TARGETS[*]} " in *" storefront-policy "*) keyed=1;; esac

[ -f "$OUT/obj-64m" ] || {
  head -c 1024 /dev/urandom > "$OUT/obj-1k"
  head -c 67108864 /dev/urandom > "$OUT/obj-64m"
}
if [ "$BACKEND" = s3-mock ]; then
  mock="--nodes 3 --host 127.0.0.1 --base-latency-ms 0 --bandwidth-mib 0 --slots 4096 --queue 0"
  "$S3MOCK" $mock --port 9001 --anonymous > "$OUT/s3mock.log" 2>&1 &
  pids+=($!)
  [ $keyed = 1 ] && { "$S3MOCK" $mock --port 9004 --access-key $KEY --secret-key $SECRET > "$OUT/s3mock-keyed.log" 2>&1 & pids+=($!); }
else
  for i in 1 2 3; do
    mkdir -p "$DATA/b$i/bench"
    "$S3FS" --host 127.0.0.1 --port 900$i "$DATA/b$i" > "$OUT/s3fs$i.log" 2>&1 &
    pids+=($!)
  done
  if [ $keyed = 1 ]; then
    for i in 4 5 6; do
      mkdir -p "$DATA/b$i/bench"
      "$S3FS" --host 127.0.0.1 --port 900$i --access-key $KEY --secret-key $SECRET "$DATA/b$i" > "$OUT/s3fs$i.log" 2>&1 &
      pids+=($!)
    done
  fi
fi
nodes="1 2 3"; [ $keyed = 1 ] && nodes="1 2 3 4 5 6"
sign=(-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 aws:amz:us-east-1:s3 --user "$KEY:$SECRET")
for i in $nodes; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:900$i/" && break; sleep 0.1; done
  args=(); [ "$i" -gt 3 ] && args=("${sign[@]}")
  [ "$BACKEND" = s3-mock ] && curl -s -o /dev/null -X PUT "${args[@]}" "http://127.0.0.1:900$i/bench"
  for o in obj-1k obj-64m; do
    curl -s -o /dev/null -X PUT "${args[@]}" --data-binary "@$OUT/$o" "http://127.0.0.1:900$i/bench/$o"
  done
done
[ $keyed = 1 ] && { python3 "$BENCH/presign.py" http://127.0.0.1:8087 "$OUT/presigned" || exit 1; }
sed "s#@RUN@#$OUT#g" "$BENCH/conf/nginx.conf" > "$OUT/nginx.conf"
mkdir -p "$OUT/nginx-tmp"

for target in "${TARGETS[@]}"; do
  case $target in
    haproxy) name=haproxy; port=8082; cmd=(haproxy -db -f "$BENCH/conf/haproxy.cfg");;
    nginx)   name=nginx; port=8081; cmd=(nginx -c "$OUT/nginx.conf" -g "daemon off; master_process off;");;
    *)       config=$target; [ -f "$config" ] || config=$BENCH/$target.toml
             name=$(basename "$config" .toml)
             port=$(awk -F'"' '/^listen/{split($2, a, ":"); print a[2]; exit}' "$config")
             cmd=("$ROOT/target/release/storefront" run --config "$config");;
  esac
  for test in $TESTS; do
    case $test in
      small) path=/bench/obj-1k; conns=16; script=;;
      large) path=/bench/obj-64m; conns=4; script=;;
      put)   path=/; conns=16; script=$BENCH/lua/put1m.lua;;
    esac
    export PUT_PATHS=
    if [ "$port" = 8087 ]; then   # policy mode: the presigned form of the same request
      case $test in
        small) path=$(cat "$OUT/presigned/get-1k");;
        large) path=$(cat "$OUT/presigned/get-64m");;
        put)   export PUT_PATHS=$OUT/presigned/put-1m;;
      esac
    fi
    wrkargs=(-t1 -c$conns --timeout 60s); [ -n "$script" ] && wrkargs+=(-s "$script")
    profile=$OUT/$name-$test.callgrind
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$profile" \
      "${cmd[@]}" > "$OUT/$name-$test.stdout" 2> "$OUT/$name-$test.stderr" &
    pid=$!
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.3; done
    wrk "${wrkargs[@]}" -d5s "http://127.0.0.1:$port$path" > /dev/null
    callgrind_control -i on "$pid" > /dev/null
    wrk "${wrkargs[@]}" -d"${DUR}s" "http://127.0.0.1:$port$path" > "$OUT/$name-$test.wrk"
    callgrind_control -i off "$pid" > /dev/null
    kill -TERM "$pid"   # callgrind writes the profile as the process exits
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$name did not stop on SIGTERM: killed, no profile"; kill -9 "$pid"; }
    wait "$pid" 2>/dev/null
    requests=$(awk '/requests in/{print $1}' "$OUT/$name-$test.wrk")
    non2xx=$(awk '/Non-2xx/{print $NF}' "$OUT/$name-$test.wrk")
    ir=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
    line="$name $test: $requests requests${non2xx:+ ($non2xx not 2xx)}, $ir instructions, $(( ir / requests )) per request"
    [ "$test" = large ] && line="$line, $(( ir / requests * 16 )) per GiB"
    echo "$line"
  done
done
