#!/usr/bin/env bash
# Profiles tunnel-server under one load with `perf record` (cpu-clock, DWARF call graphs: this
# kind of machine has no hardware counters and the release build has no frame pointers).
#
#   bash bench/profile.sh tcp|tcp-reverse|http-keepalive|http-close [CIPHER]
#
# Writes bench/profiles/SCENARIO.{perf.data,report.txt,flat.txt,summary.txt}; the load runs 5 s
# (PROFILE_SECONDS, at most 10). PROFILE_WHO=client profiles the user's ssh client instead
# (files named SCENARIO-client.*). PROFILE_MODE=syscalls counts syscalls instead (perf stat). Loopback only; every process started here is stopped on exit. Run bench/run.sh
# once first (it installs the tools and builds), or have perf, iperf3, wrk and the builds ready.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SCENARIO=${1:?usage: profile.sh tcp|tcp-reverse|http-keepalive|http-close [CIPHER]}
CIPHER=${2:-aes128-gcm@openssh.com}
SECS=${PROFILE_SECONDS:-5}
(( SECS <= 10 )) || { echo "PROFILE_SECONDS must be at most 10" >&2; exit 2; }
OUTDIR=$BENCH_DIR/profiles
mkdir -p "$OUTDIR"
TUNNEL_SERVER=${CARGO_TARGET_DIR:-$ROOT/target}/release/tunnel-server
HTTPD=$BENCH_DIR/target/release/bench-httpd

if ! command -v perf >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi

W=$(mktemp -d /tmp/tunnel-profile.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {
    local file=$1 regex=$2 i hit
    for ((i = 0; i < 200; i++)); do
        hit=$(sed 's/\x1b\[[0-9;]*m//g' "$file" 2>/dev/null | sed -nE "s#.*${regex}.*#\\1#p" | head -n1)
        if [[ -n $hit ]]; then printf '%s\n' "$hit"; return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for /$regex/ in $file" >&2
    return 1
}

ssh-keygen -q -t ed25519 -N '' -f "$W/key"
env NO_COLOR=1 ${TUNNEL_ENV:-} "$TUNNEL_SERVER" --ssh-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --https-addr 127.0.0.1:0 --state-dir "$W/state" --tcp-ports 23000-23099 --name-grace 0 \
    >"$W/ts.log" 2>&1 &
TS_PID=$!
PIDS+=("$TS_PID")
SSH_PORT=$(wait_for "$W/ts.log" 'listening ssh on 127\.0\.0\.1:([0-9]+)')
HTTP_PORT=$(wait_for "$W/ts.log" 'listening http on 127\.0\.0\.1:([0-9]+)')
SSH_OPTS=(-F /dev/null -i "$W/key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c "$CIPHER")

case $SCENARIO in
tcp | tcp-reverse)
    IPERF_PORT=23100
    iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$W/iperf.log" 2>&1 &
    PIDS+=($!)
    ssh "${SSH_OPTS[@]}" -R "0:127.0.0.1:$IPERF_PORT" -p "$SSH_PORT" 127.0.0.1 tcp \
        </dev/null >"$W/fwd.out" 2>&1 &
    PIDS+=($!)
    CLIENT_PID=$!
    PORT=$(wait_for "$W/fwd.out" 'Forwarding tcp://localhost:([0-9]+)')
    extra=()
    [[ $SCENARIO == tcp-reverse ]] && extra=(-R)
    load=(iperf3 -c 127.0.0.1 -p "$PORT" -t "$SECS" -f M "${extra[@]}")
    ;;
http-keepalive | http-close)
    "$HTTPD" 127.0.0.1:0 1 >"$W/httpd.log" 2>&1 &
    PIDS+=($!)
    HTTPD_PORT=$(wait_for "$W/httpd.log" 'listening 127\.0\.0\.1:([0-9]+)')
    ssh "${SSH_OPTS[@]}" -R "80:127.0.0.1:$HTTPD_PORT" -p "$SSH_PORT" 127.0.0.1 http \
        ${HTTP_FLAGS:-} </dev/null >"$W/fwd.out" 2>&1 &
    PIDS+=($!)
    CLIENT_PID=$!
    HOST=$(wait_for "$W/fwd.out" 'Forwarding http://([^ ]+)')
    extra=()
    [[ $SCENARIO == http-close ]] && extra=(-H "Connection: close")
    load=(wrk -t2 -c50 -d"${SECS}s" --latency -H "Host: $HOST" "${extra[@]}"
        "http://127.0.0.1:$HTTP_PORT/")
    ;;
*) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

NAME=$SCENARIO TARGET_PID=$TS_PID
if [[ ${PROFILE_WHO:-server} == client ]]; then NAME=$SCENARIO-client TARGET_PID=$CLIENT_PID; fi
if [[ ${PROFILE_MODE:-} == syscalls ]]; then
    # Counts the main syscalls during the load instead of sampling.
    events=sendto,recvfrom,write,writev,read,epoll_wait,futex,accept4,close,sched_yield,mmap,munmap,madvise,brk
    perf stat -x, -e "$(echo "$events" | sed 's/\([a-z0-9_]*\)/syscalls:sys_enter_\1/g')" \
        -p "$TARGET_PID" -o "$W/stat.txt" -- sleep "$SECS" &
    PERF_PID=$!
    sleep 0.2
    timeout $((SECS + 15)) "${load[@]}" >"$OUTDIR/$NAME.load.txt" 2>&1 || true
    wait "$PERF_PID" || true
    grep -E 'sender|receiver|Requests/sec|requests in' "$OUTDIR/$NAME.load.txt" || true
    awk -F, '$1 ~ /^[0-9]+$/ {printf "%12s %s\n", $1, $3}' "$W/stat.txt"
    exit 0
fi
DATA=$OUTDIR/$NAME.perf.data
perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$TARGET_PID" -o "$DATA" \
    -- sleep $((SECS + 1)) 2>"$W/perf.err" &
PERF_PID=$!
sleep 0.5
cpu0=$(python3 "$BENCH_DIR/bench.py" cpu "$TS_PID") ccpu0=$(python3 "$BENCH_DIR/bench.py" cpu "$CLIENT_PID")
timeout $((SECS + 15)) "${load[@]}" >"$OUTDIR/$NAME.load.txt" 2>&1 || true
cpu1=$(python3 "$BENCH_DIR/bench.py" cpu "$TS_PID") ccpu1=$(python3 "$BENCH_DIR/bench.py" cpu "$CLIENT_PID")
wait "$PERF_PID" || true
{
    grep -E 'sender|receiver|Requests/sec|99%' "$OUTDIR/$NAME.load.txt" || true
    echo "CPU seconds during the load: tunnel-server $(python3 -c "print(round($cpu1-$cpu0,2))")," \
        "ssh client $(python3 -c "print(round($ccpu1-$ccpu0,2))")"
    perf script -i "$DATA" -F tid,period,ip,sym,dso 2>/dev/null | python3 "$BENCH_DIR/perfsum.py"
} >"$OUTDIR/$NAME.summary.txt"
perf report -i "$DATA" --no-children --sort dso,symbol --percent-limit 0.5 --stdio \
    -g none 2>/dev/null >"$OUTDIR/$NAME.flat.txt"
echo "profile: $OUTDIR/$NAME.summary.txt (buckets, self and inclusive time), $NAME.flat.txt"
head -60 "$OUTDIR/$NAME.summary.txt" | cut -c1-150
