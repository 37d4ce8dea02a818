#!/usr/bin/env bash
# Hostile load (issue 13): tunnel-server on its defaults, one live http and one tcp tunnel from
# the real OpenSSH client to a local service, then one attack after the other. During each
# attack legitimate visitors (127.0.0.1; the attacker is 127.0.0.2, a source of its own) make
# requests through both tunnels: success rate and p50/p99 latency. After it, the server's fds are
# polled back to their idle figure (bounded); its CPU seconds during the attack, fds and RSS are
# printed beside the idle figures. One markdown table, one row per attack; on top of
# bench/hostile-results.md.
#
#   bash bench/hostile.sh                       # every attack, about 2 minutes on 2 cores
#   ONLY=ssh,fds bash bench/hostile.sh          # some of them
#
# Attacks (ONLY takes a comma list of their names):
#   none       no attacker: the legitimate visitors alone (the baseline row)
#   silent     SILENT_N (1000) TCP connections to the http listener that send nothing
#   tls        TLS_N (500) connections to the https listener: a ClientHello for the tunnel's name,
#              then nothing
#   slowloris  SLOWLORIS_N (500) request heads sent a byte every TRICKLE_S (1) s, never finished
#   body       BODY_N (300) POSTs with Content-Length 1 GB whose body trickles a byte every
#              TRICKLE_S s
#   h2         H2_N (500) HTTP/2 prefaces on the plain listener, then nothing
#   ssh        SSH_N (1000) connections to the SSH port, an SSH banner, then nothing
#   fds        FDS_N (400) silent connections against a second server started under
#              `ulimit -n FDS_LIMIT` (256), with its own two tunnels
#   hold       HOLD_N (1100) concurrent GETs through the http tunnel whose responses never finish
#              (the local service sends the head and 1 KiB of a 1 GB body, then holds)
#
# Other settings (environment): ATTACK_SOURCES (spread each attack over this many addresses,
# 127.0.0.2 on, default 1: the per-source rules see one source), DURATION (seconds of legitimate traffic per attack, at most 30,
# default 10), LEGIT_MS (one http request every LEGIT_MS ms and one tcp-tunnel request every
# 2 x LEGIT_MS, default 20), SETTLE (at most this many seconds for the server's fds to come back
# to idle after an attack, default 30), RSS_SETTLE (then at most this many for its RSS to come
# back within 10% of idle, default 5), SKIP_BUILD=1, TUNNEL_SERVER (another binary; with
# SKIP_BUILD=1), KEEP_TMP=1 (keep the temp dir with every log), OUT (results file, default
# bench/hostile-results.md; the new table goes on top).
#
# Nothing leaves loopback; every process started here is stopped on exit; every wait is bounded.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# The interpreter itself, not a wrapper (pyenv's shim), so that killing its pid stops it.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
PY="$PYTHON $BENCH_DIR/hostile.py"

DURATION=${DURATION:-10}
(( DURATION <= 30 )) || { echo "DURATION must be at most 30 s" >&2; exit 2; }
LEGIT_MS=${LEGIT_MS:-20}
SETTLE=${SETTLE:-30}
export RSS_SETTLE=${RSS_SETTLE:-5}
TRICKLE_S=${TRICKLE_S:-1}
SILENT_N=${SILENT_N:-1000} TLS_N=${TLS_N:-500} SLOWLORIS_N=${SLOWLORIS_N:-500}
BODY_N=${BODY_N:-300} H2_N=${H2_N:-500} SSH_N=${SSH_N:-1000} FDS_N=${FDS_N:-400}
FDS_LIMIT=${FDS_LIMIT:-256} HOLD_N=${HOLD_N:-1100}
ONLY=${ONLY:-none,silent,tls,slowloris,body,h2,ssh,hold,fds}
export ATTACK_SOURCES=${ATTACK_SOURCES:-1}
OUT=${OUT:-$BENCH_DIR/hostile-results.md}
attack() { [[ ",$ONLY," == *",$1,"* ]]; }

log() { printf '[hostile %s] %s\n' "$(date +%T)" "$*" >&2; }

for tool in ssh ssh-keygen python3 cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building tunnel-server (release)"
    (cd "$ROOT" && cargo build --release -q -p tunnel-runtime)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TUNNEL_SERVER=${TUNNEL_SERVER:-$TARGET_DIR/release/tunnel-server}
[[ -x $TUNNEL_SERVER ]] || { echo "missing $TUNNEL_SERVER" >&2; exit 2; }

# --- processes and cleanup ---------------------------------------------------------------------
W=$(mktemp -d /tmp/tunnel-hostile.XXXXXX)
PIDS=()
cleanup() {
    local status=$?
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [[ -n "${KEEP_TMP:-}" ]]; then log "logs kept in $W"; else rm -rf "$W"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE REGEX SECONDS: the first match of REGEX's group 1 in FILE, or fail.
wait_for() {
    local file=$1 regex=$2 seconds=$3 i
    for ((i = 0; i < seconds * 20; i++)); do
        if [[ -f $file ]]; then
            local hit
            hit=$(sed 's/\x1b\[[0-9;]*m//g' "$file" | sed -nE "s#.*${regex}.*#\\1#p" | head -n1)
            if [[ -n $hit ]]; then printf '%s\n' "$hit"; return 0; fi
        fi
        sleep 0.05
    done
    echo "timed out waiting for /$regex/ in $file:" >&2
    tail -n 20 "$file" >&2 || true
    return 1
}

ssh-keygen -q -t ed25519 -N '' -C hostile-user -f "$W/user_key"
SSH_OPTS=(-F /dev/null -i "$W/user_key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null
    -o CheckHostIP=no -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none
    -o ServerAliveInterval=0 -o LogLevel=INFO)

# The local service behind both tunnels (hostile.py serve: `200 ok`, and /hold never finishes).
$PY serve >"$W/service.log" 2>&1 &
PIDS+=($!)
SERVICE_PORT=$(wait_for "$W/service.log" 'listening 127\.0\.0\.1:([0-9]+)' 10)

# start_server NAME [FD_LIMIT]: tunnel-server on its defaults (port-0 listeners, a temp state
# dir, the temp key authorized), under `ulimit -n FD_LIMIT` (soft and hard: the server raises
# its soft limit to the hard one) if given, with one http and one tcp tunnel. Sets TS_PID,
# TS_HTTP, TS_HTTPS, TS_SSH, HTTP_HOST, TCP_PORT.
start_server() {
    local name=$1 limit=${2:-}
    local state=$W/state-$name
    mkdir -p "$state"
    cp "$W/user_key.pub" "$state/authorized_keys"
    (
        # Without -H/-S both limits are set: the server cannot raise its soft one past it.
        if [[ -n $limit ]]; then ulimit -n "$limit" || exit 2; fi
        exec env NO_COLOR=1 "$TUNNEL_SERVER" --ssh-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
            --https-addr 127.0.0.1:0 --state-dir "$state" \
            --authorized-keys "$state/authorized_keys"
    ) >"$W/server-$name.log" 2>&1 &
    TS_PID=$!
    PIDS+=("$TS_PID")
    TS_SSH=$(wait_for "$W/server-$name.log" 'listening ssh on 127\.0\.0\.1:([0-9]+)' 10)
    TS_HTTP=$(wait_for "$W/server-$name.log" 'listening http on 127\.0\.0\.1:([0-9]+)' 10)
    TS_HTTPS=$(wait_for "$W/server-$name.log" 'listening https on 127\.0\.0\.1:([0-9]+)' 10)
    ssh "${SSH_OPTS[@]}" -R "80:127.0.0.1:$SERVICE_PORT" -p "$TS_SSH" 127.0.0.1 \
        http --inspect=false </dev/null >"$W/http-tunnel-$name.out" 2>&1 &
    PIDS+=($!)
    HTTP_HOST=$(wait_for "$W/http-tunnel-$name.out" 'Forwarding http://([^: ]+)' 10)
    ssh "${SSH_OPTS[@]}" -R "0:127.0.0.1:$SERVICE_PORT" -p "$TS_SSH" 127.0.0.1 tcp \
        </dev/null >"$W/tcp-tunnel-$name.out" 2>&1 &
    PIDS+=($!)
    TCP_PORT=$(wait_for "$W/tcp-tunnel-$name.out" 'Forwarding tcp://localhost:([0-9]+)' 10)
    log "server $name (pid $TS_PID${limit:+, ulimit -n $limit}): ssh :$TS_SSH http :$TS_HTTP" \
        "https :$TS_HTTPS; http tunnel $HTTP_HOST, tcp tunnel :$TCP_PORT"
}
stop_server() { kill "$TS_PID" 2>/dev/null || true; wait "$TS_PID" 2>/dev/null || true; }

RESULTS=$W/results.jsonl
: >"$RESULTS"
# run_phase KIND PORT N: one attack beside legitimate visitors; its figures go to RESULTS.
run_phase() {
    local kind=$1 port=$2 n=$3 extra=${4:-}
    log "attack $kind: $n connections to :$port for ${DURATION} s"
    local line
    line=$(timeout $((DURATION + SETTLE + 120)) $PY phase "$kind" "$TS_PID" "$port" "$n" \
        "$HTTP_HOST" "$TRICKLE_S" "$DURATION" "$SETTLE" "$TS_HTTP" "$HTTP_HOST" "$TCP_PORT" \
        "$LEGIT_MS" 2>>"$W/phase-$kind.err") || { log "attack $kind failed"; return 0; }
    if [[ -n $extra ]]; then line="${line%\}}, $extra}"; fi
    printf '%s\n' "$line" >>"$RESULTS"
    log "attack $kind: $line"
}

# In ONLY's order (a name may come twice, to see whether a second round costs the same); fds
# last, on a server of its own.
start_server main
for kind in ${ONLY//,/ }; do
    case $kind in
        none) run_phase none "$TS_HTTP" 0 ;;
        silent) run_phase silent "$TS_HTTP" "$SILENT_N" ;;
        tls) run_phase tls "$TS_HTTPS" "$TLS_N" ;;
        slowloris) run_phase slowloris "$TS_HTTP" "$SLOWLORIS_N" ;;
        body) run_phase body "$TS_HTTP" "$BODY_N" ;;
        h2) run_phase h2 "$TS_HTTP" "$H2_N" ;;
        ssh) run_phase ssh "$TS_SSH" "$SSH_N" ;;
        hold) run_phase hold "$TS_HTTP" "$HOLD_N" ;;
        fds) ;;
        *) log "unknown attack $kind (none,silent,tls,slowloris,body,h2,ssh,fds,hold)"; exit 2 ;;
    esac
done
if attack fds; then
    stop_server
    start_server fds "$FDS_LIMIT"
    run_phase fds "$TS_HTTP" "$FDS_N" "\"fd_limit\": $FDS_LIMIT"
fi

# --- the table ---------------------------------------------------------------------------------
TABLE=$($PY table "$RESULTS")
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- runtime core 2>/dev/null | head -c1)
HEADER="## $(date -u '+%Y-%m-%d %H:%M UTC'), tunnel $COMMIT${DIRTY:+ (with uncommitted changes)}

- machine: $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- command: \`ONLY=$ONLY DURATION=$DURATION ATTACK_SOURCES=$ATTACK_SOURCES bash bench/hostile.sh\`
- each attack from 127.0.0.2 (with ATTACK_SOURCES > 1, spread from there on); legitimate visitors from 127.0.0.1: an http request every
  $LEGIT_MS ms and a tcp-tunnel request every $((2 * LEGIT_MS)) ms (each a new connection,
  \`Connection: close\`, failed past 5 s) for $DURATION s once the attacker is up
- targets: every legitimate request ok, p99 under 100 ms, fds back to idle (polled, at most
  $SETTLE s) and RSS within 10% (at least 1 MiB) of idle after the attack"
printf '%s\n\n%s\n' "$HEADER" "$TABLE"
{
    echo "# tunnel-server under hostile load: results (newest first)"
    echo
    echo "Produced by \`bash bench/hostile.sh\` (see bench/README.md)."
    echo
    printf '%s\n\n%s\n\n' "$HEADER" "$TABLE"
    if [[ -f $OUT ]]; then sed '1,/^Produced by/d' "$OUT" | sed '1{/^$/d}'; fi
} >"$OUT.new"
mv "$OUT.new" "$OUT"
log "table written on top of $OUT"
