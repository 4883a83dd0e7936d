#!/usr/bin/env bash
# bench/run.sh — Storefront against direct access, nginx and HAProxy on one box (loopback
# only). Built on the team's peer harness (shared/bench/run-anchors.sh); Storefront is the
# "extra" target on :8085 (bench/storefront.toml), started from target/release/storefront.
# Needs: apt-get install -y nginx haproxy wrk; cargo install s3s-fs --version 0.14.1 --features binary;
#        cargo build --release -p storefront.
#
# Brings up 3 s3s-fs backends (127.0.0.1:9001-9003, separate data dirs on /dev/shm holding
# identical objects), nginx (:8081), haproxy (:8082) and optionally a Pingora LB (:8083),
# measures with wrk, and tears everything down by PID.
#
# Env knobs (defaults in brackets):
#   MODES ["unpinned pinned"]  pinned = servers (backends+proxy) on CPU 0, wrk on CPU 1
#   TESTS ["small large put"]  small = GET 1 KiB c64; large = GET 64 MiB c4; put = PUT 1 MiB c16
#                              optional: lat = GET 1 KiB, c1 (-t1), LAT_DUR s: unloaded per-hop latency (direct3 skipped)
#   TARGETS ["direct1 direct3 nginx haproxy extra sfpol"] (pingora too when PINGORA points at a build of
#            shared/bench/pingora-lb); optional extra target: nginxbuf
#            (nginx variant with proxy_buffering on, conf/nginx-buffered.conf, port 8084)
#            and "extra": any proxy of yours, started by EXTRA_CMD (a shell command line that
#            serves on 127.0.0.1:8085 in front of backends 127.0.0.1:9001-9003; its own process
#            is measured, so exec the server rather than wrapping it), e.g.
#            EXTRA_CMD="exec target/release/storefront --config bench/storefront.toml" TARGETS="direct3 haproxy extra"
#            optional: sfoff = Storefront with telemetry off (bench/storefront-off.toml, :8086;
#            no metrics recorded, no access log), started by SFOFF_CMD, beside "extra" (telemetry
#            on, as shipped: metrics and an access log line per request to stdout, here a file):
#            TESTS=small MODES=pinned TARGETS="haproxy extra sfoff" measures what telemetry costs
#            optional: sfpol = Storefront in policy mode (bench/storefront-policy.toml, :8087):
#            its clients sign (presigned URLs, bench/presign.py, needs boto3), it verifies and
#            re-signs for three more backends on 127.0.0.1:9004-9006 that require its key
#   BACKEND [s3s-fs]  or s3-mock: the repository's mock cluster (one process, three nodes, no
#            service time, 64 KiB body frames where s3s-fs sends 4 KiB: large GETs then
#            measure the proxy's framing rather than the backend's); build it with
#            cargo build --release -p s3-mock
#   REPS [2]  SMALL_DUR [15] LARGE_DUR [10] PUT_DUR [10]  (seconds)
#   OUT [$WORK/results/<timestamp>]   WORK [${TMPDIR:-/tmp}/sf-perf]
set -u
PERF=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-${TMPDIR:-/tmp}/sf-perf}
RUN=$WORK/run
DATA=${DATA:-/dev/shm/sf-perf-s3}
S3FS=${S3FS:-$HOME/.cargo/bin/s3s-fs}
PINGORA=${PINGORA:-$PERF/pingora-lb/target/release/pingora-lb}
SMALL_DUR=${SMALL_DUR:-15}
LARGE_DUR=${LARGE_DUR:-10}
PUT_DUR=${PUT_DUR:-10}
LAT_DUR=${LAT_DUR:-10}
REPS=${REPS:-2}
MODES=${MODES:-"unpinned pinned"}
TESTS=${TESTS:-"small large put"}
TARGETS=${TARGETS:-"direct1 direct3 nginx haproxy extra sfpol"}
ROOT=$(cd "$PERF/.." && pwd)
EXTRA_CMD=${EXTRA_CMD:-"RUST_LOG=warn exec $ROOT/target/release/storefront run --config $PERF/storefront.toml"}
SFOFF_CMD=${SFOFF_CMD:-"RUST_LOG=warn exec $ROOT/target/release/storefront run --config $PERF/storefront-off.toml"}
SFPOL_CMD=${SFPOL_CMD:-"RUST_LOG=warn exec $ROOT/target/release/storefront run --config $PERF/storefront-policy.toml"}
BACKEND=${BACKEND:-s3s-fs}
S3MOCK=${S3MOCK:-$ROOT/target/release/s3-mock}
# the keyed backends behind sfpol (bench/storefront-policy.toml signs with this key)
BACKEND_KEY=AKBENCHBACKEND BACKEND_SECRET=bench-backend-secret
OUT=${OUT:-$WORK/results/$(date +%Y%m%d-%H%M%S)}
CLK=$(getconf CLK_TCK)

mkdir -p "$OUT" "$RUN/nginx-tmp" "$RUN/nginx-buf-tmp" "$RUN/objs" "$RUN/presigned"
case " $TARGETS " in *" sfpol "*) python3 "$PERF/presign.py" http://127.0.0.1:8087 "$RUN/presigned" || exit 1;; esac
[ "$BACKEND" = s3-mock ] && [ ! -x "$S3MOCK" ] && { echo "BACKEND=s3-mock needs $S3MOCK: cargo build --release -p s3-mock"; exit 1; }
for f in nginx.conf nginx-buffered.conf; do sed "s#@RUN@#$RUN#g" "$PERF/conf/$f" > "$RUN/$f"; done
CSV=$OUT/raw.csv
WRKLOG=$OUT/wrk-raw.log
if [ ! -x "$PINGORA" ]; then
  TARGETS=$(echo "$TARGETS" | sed 's/pingora//')
  echo "pingora binary not found, skipping pingora target" | tee -a "$OUT/run.log"
fi

declare -A PID        # name -> pid of every process this script started
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log"; }

start_bg() {  # start_bg NAME CMD... ; runs in background, remembers its PID
  local name=$1; shift
  "$@" > "$RUN/$name.log" 2>&1 &
  PID[$name]=$!
  log "started $name pid=${PID[$name]}: $*"
}

stop_one() {  # stop_one NAME [SIGNAL]
  local name=$1 sig=${2:-TERM} pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -s "$sig" "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid ($name) still alive, SIGKILL"; kill -9 "$pid" 2>/dev/null; }
  fi
  wait "$pid" 2>/dev/null
  unset "PID[$name]"
}

stop_all() {
  stop_one extra TERM
  stop_one sfoff TERM
  stop_one pingora INT      # SIGINT = fast shutdown for pingora (SIGTERM waits for grace period)
  stop_one haproxy TERM
  stop_one nginx TERM       # master; fast shutdown also stops its workers
  stop_one sfpol TERM
  stop_one nginxbuf TERM
  for i in 1 2 3 4 5 6; do stop_one s3fs$i TERM; done
  stop_one s3mock TERM
  stop_one s3mockkeyed TERM
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

wait_port() {  # wait_port PORT
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  log "port $1 did not come up"; return 1
}

# pids of a target's server-side processes (proxy: master + workers)
proc_pids() {
  case $1 in
    nginx)   echo "${PID[nginx]} $(ps -o pid= --ppid "${PID[nginx]}" 2>/dev/null)";;
    nginxbuf) echo "${PID[nginxbuf]} $(ps -o pid= --ppid "${PID[nginxbuf]}" 2>/dev/null)";;
    haproxy) echo "${PID[haproxy]:-}";;
    pingora) echo "${PID[pingora]:-}";;
    extra)   echo "${PID[extra]:-}";;
    sfoff)   echo "${PID[sfoff]:-}";;
    sfpol)   echo "${PID[sfpol]:-}";;
    backends) echo "${PID[s3fs1]:-} ${PID[s3fs2]:-} ${PID[s3fs3]:-} ${PID[s3mock]:-}";;
    keyed)   echo "${PID[s3fs4]:-} ${PID[s3fs5]:-} ${PID[s3fs6]:-} ${PID[s3mockkeyed]:-}";;
    *) echo "";;
  esac
}
cpu_ticks() {  # sum utime+stime (all threads) over the given pids
  local t=0 p f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat")        # drop "pid (comm) "
    set -- $f
    t=$(( t + ${12} + ${13} ))                   # fields 14,15 of stat
  done
  echo $t
}
rss_kib() {
  local t=0 p r
  for p in "$@"; do
    r=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null); t=$(( t + ${r:-0} ))
  done
  echo $t
}
sys_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }   # user nice system irq softirq steal

start_servers() {  # start_servers MODE
  local pin=""
  [ "$1" = pinned ] && pin="taskset -c 0"
  local keyed=0
  case " $TARGETS " in *" sfpol "*) keyed=1;; esac
  if [ "$BACKEND" = s3-mock ]; then
    local mock="--nodes 3 --host 127.0.0.1 --base-latency-ms 0 --bandwidth-mib 0 --slots 4096 --queue 0"
    start_bg s3mock $pin "$S3MOCK" $mock --port 9001 --anonymous
    [ $keyed = 1 ] && start_bg s3mockkeyed $pin "$S3MOCK" $mock --port 9004 --access-key $BACKEND_KEY --secret-key $BACKEND_SECRET
  else
    for i in 1 2 3; do
      mkdir -p "$DATA/b$i/bench"
      start_bg s3fs$i $pin "$S3FS" --host 127.0.0.1 --port 900$i "$DATA/b$i"
    done
    if [ $keyed = 1 ]; then
      for i in 4 5 6; do
        mkdir -p "$DATA/b$i/bench"
        start_bg s3fs$i $pin "$S3FS" --host 127.0.0.1 --port 900$i --access-key $BACKEND_KEY --secret-key $BACKEND_SECRET "$DATA/b$i"
      done
    fi
  fi
  for i in 1 2 3; do wait_port 900$i; done
  [ $keyed = 1 ] && for i in 4 5 6; do wait_port 900$i; done
  start_bg nginx $pin nginx -c "$RUN/nginx.conf" -g "daemon off;"
  case " $TARGETS " in *" nginxbuf "*) start_bg nginxbuf $pin nginx -c "$RUN/nginx-buffered.conf" -g "daemon off;";; esac
  start_bg haproxy $pin haproxy -db -f "$PERF/conf/haproxy.cfg"
  if [ -x "$PINGORA" ]; then
    start_bg pingora $pin "$PINGORA" -c "$PERF/pingora-lb/conf.yaml"
  fi
  case " $TARGETS " in *" extra "*) start_bg extra $pin bash -c "${EXTRA_CMD:?EXTRA_CMD must start a proxy on 127.0.0.1:8085}";; esac
  case " $TARGETS " in *" sfoff "*) start_bg sfoff $pin bash -c "$SFOFF_CMD";; esac
  case " $TARGETS " in *" sfpol "*) start_bg sfpol $pin bash -c "$SFPOL_CMD";; esac
  wait_port 8081; wait_port 8082; [ -x "$PINGORA" ] && wait_port 8083
  [ -n "${PID[extra]:-}" ] && wait_port 8085
  [ -n "${PID[sfoff]:-}" ] && wait_port 8086
  [ -n "${PID[sfpol]:-}" ] && wait_port 8087
  [ -n "${PID[nginxbuf]:-}" ] && wait_port 8084
  sleep 0.5
  for n in s3fs1 s3fs2 s3fs3 s3fs4 s3fs5 s3fs6 s3mock s3mockkeyed nginx nginxbuf haproxy pingora extra sfoff sfpol; do
    [ -n "${PID[$n]:-}" ] && log "$n pid=${PID[$n]} affinity=$(taskset -pc "${PID[$n]}" | awk -F': ' '{print $2}') threads=$(awk '/^Threads:/{print $2}' /proc/${PID[$n]}/status)"
  done
  for t in nginx nginxbuf haproxy pingora extra sfoff sfpol backends keyed; do
    [ -n "$(proc_pids $t | tr -d ' ')" ] && log "idle RSS $t: $(rss_kib $(proc_pids $t)) KiB (pids: $(proc_pids $t | xargs))"
  done
}

load_objects() {  # same objects into each backend's own data dir (s3s-fs tmp-file names are per process, so dirs are not shared)
  [ -f "$RUN/objs/obj-64m" ] || {
    head -c 1024 /dev/urandom > "$RUN/objs/obj-1k"
    head -c 65536 /dev/urandom > "$RUN/objs/obj-64k"
    head -c 1048576 /dev/urandom > "$RUN/objs/obj-1m"
    head -c 67108864 /dev/urandom > "$RUN/objs/obj-64m"
  }
  if [ "$BACKEND" = s3-mock ]; then   # one namespace per cluster: create the bucket once
    curl -s -o /dev/null -X PUT http://127.0.0.1:9001/bench
    [ -n "${PID[sfpol]:-}" ] && curl -s -o /dev/null -X PUT -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
      --aws-sigv4 aws:amz:us-east-1:s3 --user "$BACKEND_KEY:$BACKEND_SECRET" http://127.0.0.1:9004/bench
  fi
  for i in 1 2 3; do
    for o in obj-1k obj-64k obj-1m obj-64m; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
             --data-binary "@$RUN/objs/$o" "http://127.0.0.1:900$i/bench/$o")
      [ "$code" = 200 ] || log "PUT $o to 900$i -> $code"
    done
  done
  if [ -n "${PID[sfpol]:-}" ]; then   # the keyed backends take signed PUTs only
    for i in 4 5 6; do
      for o in obj-1k obj-64k obj-1m obj-64m; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
               -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 aws:amz:us-east-1:s3 \
               --user "$BACKEND_KEY:$BACKEND_SECRET" --data-binary "@$RUN/objs/$o" "http://127.0.0.1:900$i/bench/$o")
        [ "$code" = 200 ] || log "PUT $o to 900$i -> $code"
      done
    done
    for o in 1k 64m; do
      s=$(curl -s "http://127.0.0.1:8087$(cat "$RUN/presigned/get-$o")" | sha256sum | cut -c1-16)
      e=$(sha256sum < "$RUN/objs/obj-$o" | cut -c1-16)
      [ "$s" = "$e" ] && log "verify 8087 obj-$o OK (presigned)" || log "verify 8087 obj-$o MISMATCH ($s vs $e)"
    done
  fi
  # verify through every entry point
  for port in 9001 9002 9003 8081 8082 8083 8084 8085 8086; do
    [ $port = 8085 ] && [ -z "${PID[extra]:-}" ] && continue
    [ $port = 8086 ] && [ -z "${PID[sfoff]:-}" ] && continue
    [ $port = 8083 ] && [ ! -x "$PINGORA" ] && continue
    [ $port = 8084 ] && [ -z "${PID[nginxbuf]:-}" ] && continue
    for o in obj-1k obj-64m; do
      s=$(curl -s "http://127.0.0.1:$port/bench/$o" | sha256sum | cut -c1-16)
      e=$(sha256sum < "$RUN/objs/$o" | cut -c1-16)
      [ "$s" = "$e" ] && log "verify $port $o OK" || log "verify $port $o MISMATCH ($s vs $e)"
    done
  done
}

# wrk_one PORT THREADS CONNS DUR TIMEOUT SCRIPT PATH -> prints RESULT line
wrk_one() {
  local port=$1 t=$2 c=$3 d=$4 to=$5 script=$6 path=$7
  [ $port = 8087 ] && case $path in   # policy mode: the presigned form of the same request
    /bench/obj-1k) path=$(cat "$RUN/presigned/get-1k");;
    /bench/obj-64m) path=$(cat "$RUN/presigned/get-64m");;
    /) export PUT_PATHS=$RUN/presigned/put-1m;;
  esac
  [ $port = 8087 ] || export PUT_PATHS=
  $GEN_PIN timeout $(( d + 40 )) /usr/bin/time -f "WRKCPU %U %S" wrk -t"$t" -c"$c" -d"${d}s" --timeout "$to" -s "$script" "http://127.0.0.1:$port$path" 2>&1
}

measure() {  # measure MODE REP TEST TARGET
  local mode=$1 rep=$2 test=$3 target=$4
  local t=2 c d to script path
  case $test in
    lat)   t=1; c=1; d=$LAT_DUR; to=5s; script=$PERF/lua/report.lua; path=/bench/obj-1k
           [ "$target" = direct3 ] && return 0;;
    small) c=64; d=$SMALL_DUR; to=5s;  script=$PERF/lua/report.lua; path=/bench/obj-1k;;
    large) c=4;  d=$LARGE_DUR; to=60s; script=$PERF/lua/report.lua; path=/bench/obj-64m;;
    put)   c=16; d=$PUT_DUR;   to=30s; script=$PERF/lua/put1m.lua;  path=/;;
  esac
  local ppids bpids p0 b0 s0 p1 b1 s1 rss brss
  ppids=$(proc_pids "$target"); bpids=$(proc_pids backends)
  [ "$target" = sfpol ] && bpids=$(proc_pids keyed)
  p0=$(cpu_ticks $ppids); b0=$(cpu_ticks $bpids); s0=$(sys_busy_ticks)
  local tmp=$OUT/tmp.$$; rm -f "$tmp".*
  case $target in
    direct1) wrk_one 9001 $t $c $d $to $script $path > "$tmp.0";;
    direct3)
      local c1=$(( (c + 2) / 3 )) c2=$(( (c + 1) / 3 )) c3=$(( c / 3 ))
      wrk_one 9001 1 $c1 $d $to $script $path > "$tmp.1" &
      local w1=$!
      wrk_one 9002 1 $c2 $d $to $script $path > "$tmp.2" &
      local w2=$!
      wrk_one 9003 1 $c3 $d $to $script $path > "$tmp.3" &
      local w3=$!
      wait $w1 $w2 $w3;;
    nginx)   wrk_one 8081 $t $c $d $to $script $path > "$tmp.0";;
    haproxy) wrk_one 8082 $t $c $d $to $script $path > "$tmp.0";;
    pingora) wrk_one 8083 $t $c $d $to $script $path > "$tmp.0";;
    nginxbuf) wrk_one 8084 $t $c $d $to $script $path > "$tmp.0";;
    extra)   wrk_one 8085 $t $c $d $to $script $path > "$tmp.0";;
    sfoff)   wrk_one 8086 $t $c $d $to $script $path > "$tmp.0";;
    sfpol)   wrk_one 8087 $t $c $d $to $script $path > "$tmp.0";;
  esac
  p1=$(cpu_ticks $ppids); b1=$(cpu_ticks $bpids); s1=$(sys_busy_ticks)
  rss=$( [ -n "$(echo $ppids | tr -d ' ')" ] && rss_kib $ppids || echo 0 )
  brss=$(rss_kib $bpids)
  { echo "### mode=$mode rep=$rep test=$test target=$target"; cat "$tmp".*; } >> "$WRKLOG"
  # aggregate RESULT lines (direct3: sum requests/bytes, max duration, request-weighted p50/p99, max p99)
  cat "$tmp".* | python3 "$PERF/agg.py" > "$tmp.agg"
  local agg; agg=$(cat "$tmp.agg")
  local line="$mode,$rep,$test,$target,$c,$agg,$(awk -v a=$p0 -v b=$p1 -v k=$CLK 'BEGIN{printf "%.2f",(b-a)/k}'),$(awk -v a=$b0 -v b=$b1 -v k=$CLK 'BEGIN{printf "%.2f",(b-a)/k}'),$(awk -v a=$s0 -v b=$s1 -v k=$CLK 'BEGIN{printf "%.2f",(b-a)/k}'),$(( rss / 1024 )),$(( brss / 1024 )),$(cut -d' ' -f1 /proc/loadavg)"
  echo "$line" >> "$CSV"
  log "$line"
  rm -f "$tmp".*
  sleep 1
}

# ---------------------------------------------------------------- main
{
  echo "date: $(date -Is)"; echo "host: $(uname -a)"; echo "cpus: $(nproc)"; grep -m1 'model name' /proc/cpuinfo
  free -m | head -2; echo "nginx: $(nginx -v 2>&1)"; echo "haproxy: $(haproxy -v | head -1)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"; echo "s3s-fs: $("$S3FS" --version 2>&1)"
  [ -x "$PINGORA" ] && echo "pingora-lb: $PINGORA (pingora $(grep -A1 'name = "pingora"' $PERF/pingora-lb/Cargo.lock | sed -n 2p))"
  echo "backend: $BACKEND"
  echo "MODES=$MODES TESTS=$TESTS TARGETS=$TARGETS REPS=$REPS SMALL_DUR=$SMALL_DUR LARGE_DUR=$LARGE_DUR PUT_DUR=$PUT_DUR"
} > "$OUT/env.txt"
cat "$OUT/env.txt" | tee -a "$OUT/run.log"
echo "mode,rep,test,target,conns,requests,duration_s,rps,mib_s,p50_ms,p99_ms,p99max_ms,errors,wrk_cpu_s,proxy_cpu_s,backend_cpu_s,sys_busy_cpu_s,proxy_rss_mib,backend_rss_mib,loadavg1" > "$CSV"

first=1
for mode in $MODES; do
  GEN_PIN=""; [ "$mode" = pinned ] && GEN_PIN="taskset -c 1"
  log "=== mode $mode: starting servers"
  start_servers "$mode"
  [ $first = 1 ] && { load_objects; first=0; }
  log "loadavg before mode $mode: $(cat /proc/loadavg)"
  top -b -n1 | head -15 >> "$OUT/top-$mode.txt"
  log "warmup (3 s small GET per target, not recorded)"
  for target in $TARGETS; do
    case $target in direct1) p=9001;; direct3) p=9002;; nginx) p=8081;; haproxy) p=8082;; pingora) p=8083;; nginxbuf) p=8084;; extra) p=8085;; sfoff) p=8086;; sfpol) p=8087;; esac
    wrk_one $p 2 64 3 5s $PERF/lua/report.lua /bench/obj-1k > /dev/null
  done
  for rep in $(seq "$REPS"); do
    for test in $TESTS; do
      for target in $TARGETS; do     # interleaved: A B C D E, A B C D E ...
        measure "$mode" "$rep" "$test" "$target"
      done
    done
  done
  for t in nginx nginxbuf haproxy pingora extra sfoff sfpol backends keyed; do
    [ -n "$(proc_pids $t | tr -d ' ')" ] && log "end-of-mode RSS $t: $(rss_kib $(proc_pids $t)) KiB"
  done
  log "=== mode $mode: stopping servers"
  stop_all
  sleep 1
done
trap - EXIT
python3 "$PERF/analyze.py" "$CSV" > "$OUT/summary.md" && cat "$OUT/summary.md"
log "done: $OUT"
