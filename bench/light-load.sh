#!/usr/bin/env bash
# bench/light-load.sh — balance at light load (issue "Performance", goal 6): one sequential
# keep-alive client, 600 GETs, over the three identical nodes of `storefront demo`, through
# proxies beside each other, one per variant of p2c-peak-ewma's settings: `ratio/floor/stale`
# is `balance.tie_ratio`, `tie_floor`, `stale_after` ("default" is the shipped configuration).
# Prints each round's per-node counts and max/mean for every variant. Loopback only; bounded
# (ROUNDS × variants × GETS requests).
#
#   STOREFRONT [target/release/storefront]  ROUNDS [3]  GETS [600]
#   VARIANTS ["0/0ms/0s 0.25/1ms/0s default"]
set -euo pipefail
cd "$(dirname "$0")/.."
STOREFRONT=${STOREFRONT:-target/release/storefront}
ROUNDS=${ROUNDS:-3}
GETS=${GETS:-600}
VARIANTS=${VARIANTS:-0/0ms/0s 0.25/1ms/0s default}
[ -x "$STOREFRONT" ] || cargo build --release -p storefront
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
demo_port=$(free_port)
demo_admin=$(free_port)
"$STOREFRONT" demo --listen "127.0.0.1:$demo_port" --admin "127.0.0.1:$demo_admin" > "$work/demo.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "storage:" "$work/demo.out" && break; sleep 0.1; done
nodes=$(sed -n 's/.*storage: *3 s3-mock nodes at //p' "$work/demo.out" | tr -d ' ')
[ -n "$nodes" ] || { cat "$work/demo.out" >&2; exit 1; }
backends=$(echo "$nodes" | sed 's/\([^,]*\)/"\1"/g')
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
python3 - "$demo_port" <<'EOF'
import sys, urllib.request
port = sys.argv[1]
# Through the demo (unsigned requests from loopback are the demo identity): a bucket, an object.
for method, path, body in (("PUT", "/light", None), ("PUT", "/light/object", b"x" * 4096)):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)).read()
EOF

start_proxy() { # name variant; sets proxy_port, proxy_admin (no subshell: its pid is kept)
  local port admin balance=""
  if [ "$2" != default ]; then
    IFS=/ read -r ratio floor stale <<< "$2"
    balance=$(printf 'tie_ratio = %s\ntie_floor = "%s"\nstale_after = "%s"' "$ratio" "$floor" "$stale")
  fi
  port=$(free_port); admin=$(free_port)
  cat > "$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin"
watch_config = false
[telemetry]
access_log = "off"
[auth]
mode = "trust"
[balance]
$balance
[[pools]]
name = "demo"
backends = [$backends]
[pools.credentials]
access_key = "demo-backend"
secret_key = "demo-backend-secret"
EOF
  "$STOREFRONT" run --config "$work/$1.toml" > "$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "127.0.0.1:$admin/readyz" > /dev/null 2>&1 && break
    sleep 0.1
  done
  proxy_port=$port
  proxy_admin=$admin
}
ports=()
for variant in $VARIANTS; do
  start_proxy "v${#ports[@]}" "$variant"
  ports+=("$proxy_port:$proxy_admin")
done

round() { # port admin
  python3 - "$1" "$2" "$GETS" <<'EOF'
import http.client, json, sys
port, admin, gets = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def totals():
    connection = http.client.HTTPConnection("127.0.0.1", admin)
    connection.request("GET", "/admin/backends")
    return [backend["requests_total"] for backend in json.loads(connection.getresponse().read())]
before = totals()
client = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(gets):
    client.request("GET", "/light/object")
    response = client.getresponse()
    response.read()
    assert response.status == 200, response.status
counts = [after - then for after, then in zip(totals(), before)]
print(f"{'/'.join(map(str, counts)):>14} {max(counts) * len(counts) / sum(counts):6.3f}")
EOF
}
printf 'round'
for variant in $VARIANTS; do printf ' %21s' "$variant"; done
echo
for r in $(seq "$ROUNDS"); do
  printf '%5s' "$r"
  for pair in "${ports[@]}"; do printf ' %s' "$(round "${pair%%:*}" "${pair##*:}")"; done
  echo
done
