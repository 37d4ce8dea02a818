#!/usr/bin/env bash
# Benchmark: OpenSSH `sshd` remote forwarding vs tunnel-server, one after the other in one run,
# on loopback only. Prints one table (tunnel / OpenSSH) and writes it to bench/results.md.
#
#   bash bench/run.sh              # the whole run, about 5 minutes on 2 cores (plus the builds)
#   QUICK=1 bash bench/run.sh      # shorter: 2 s per load test, 5 set-ups, 100 idle tunnels
#
# Settings (environment): DURATION (seconds per iperf3/wrk run, at most 10, default 5),
# SETUP_RUNS (default 20), TUNNEL_IDLE_N (default 1000), OPENSSH_IDLE_N (default 100),
# ONLY (a comma list of the sections to run: tcp,http,slow,setup,mem; default all), SKIP_BUILD=1,
# KEEP_TMP=1 (keep the temp dir with every log), OUT (results file), TUNNEL_ENV (extra
# environment for tunnel-server only, e.g. GLIBC_TUNABLES=glibc.malloc.trim_threshold=67108864),
# SERVERS (default "openssh tunnel"; "tunnel" alone for quick A/B runs of tunnel-server changes),
# TUNNEL_SERVER (a tunnel-server binary to use instead of the one built here; with SKIP_BUILD=1),
# SLOW_BYTES (the slow reader's download, default 200 MiB), SLOW_RATE (its bytes/s, default
# 300 KiB/s).
#
# Needs root for the apt-get installs of what is missing (openssh-server, openssh-client,
# iperf3, wrk, python3) and to run a private sshd. Nothing listens beyond 127.0.0.1; every
# process started here is stopped on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/bench.py"

DURATION=${DURATION:-5}
SETUP_RUNS=${SETUP_RUNS:-20}
TUNNEL_IDLE_N=${TUNNEL_IDLE_N:-1000}
OPENSSH_IDLE_N=${OPENSSH_IDLE_N:-100}
if [[ -n "${QUICK:-}" ]]; then
    DURATION=2 SETUP_RUNS=5 TUNNEL_IDLE_N=100 OPENSSH_IDLE_N=20
fi
(( DURATION <= 10 )) || { echo "DURATION must be at most 10 s" >&2; exit 2; }
OUT=${OUT:-$BENCH_DIR/results.md}
ONLY=${ONLY:-tcp,http,slow,setup,mem}
SLOW_BYTES=${SLOW_BYTES:-209715200}
SLOW_RATE=${SLOW_RATE:-307200}
SERVERS=${SERVERS:-openssh tunnel} # "tunnel" alone for quick A/B runs of tunnel-server changes
section() { [[ ",$ONLY," == *",$1,"* ]]; }
TCP_PORTS=21000-22999 # tunnel-server's tcp endpoint range: room for 1,000 idle tunnels and more

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
need_pkgs=()
[[ -x /usr/sbin/sshd ]] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null || need_pkgs+=(openssh-client)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v ss >/dev/null || need_pkgs+=(iproute2)
if (( ${#need_pkgs[@]} )); then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packaged daemons (sshd on port 22, iperf3) must not start: only loopback services run
    # here, and this script starts its own. A policy-rc.d saying "no" stops them, for the install.
    policy_added=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=yes
    fi
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    if [[ -n $policy_added ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
command -v cargo >/dev/null || { echo "cargo is needed" >&2; exit 2; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building tunnel-server (release)"
    (cd "$ROOT" && cargo build --release -q -p tunnel-runtime)
    log "building bench-httpd (release)"
    cargo build --release -q --manifest-path "$BENCH_DIR/httpd/Cargo.toml" \
        --target-dir "$BENCH_DIR/target"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TUNNEL_GIVEN=${TUNNEL_SERVER:+yes}
TUNNEL_SERVER=${TUNNEL_SERVER:-$TARGET_DIR/release/tunnel-server}
HTTPD=$BENCH_DIR/target/release/bench-httpd
[[ -x $TUNNEL_SERVER && -x $HTTPD ]] || { echo "missing $TUNNEL_SERVER or $HTTPD" >&2; exit 2; }

# 1,000 idle tunnels need about 2,000 descriptors in tunnel-server (connection + listener).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < 4 * TUNNEL_IDLE_N )); then
    log "warning: ulimit -n is $(ulimit -n); fewer idle tunnels may come up"
fi

# --- processes and cleanup ---------------------------------------------------------------------
W=$(mktemp -d /tmp/tunnel-bench.XXXXXX)
PIDS=()
IDLE_PIDS_FILE=$W/idle.pids
: >"$IDLE_PIDS_FILE"
cleanup() {
    local status=$?
    set +e
    kill_idle_clients
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [[ -n "${KEEP_TMP:-}" ]]; then log "logs kept in $W"; else rm -rf "$W"; fi
    exit "$status"
}
kill_idle_clients() {
    local pid
    # A client may have left already; that is not a failure of the run.
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$IDLE_PIDS_FILE"
    while read -r pid; do wait "$pid" 2>/dev/null || true; done <"$IDLE_PIDS_FILE"
    : >"$IDLE_PIDS_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

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

# --- keys and the private sshd -----------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$W/user_key"
ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$W/sshd_host_key"
cp "$W/user_key.pub" "$W/authorized_keys"
SSHD_PORT=$(free_port)
cat >"$W/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSHD_PORT
HostKey $W/sshd_host_key
PidFile none
AuthorizedKeysFile $W/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
GatewayPorts no
X11Forwarding no
PrintMotd no
MaxStartups 200
LogLevel ERROR
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$W/sshd_config"
/usr/sbin/sshd -D -f "$W/sshd_config" -E "$W/sshd.log" &
SSHD_PID=$!
PIDS+=("$SSHD_PID")

# --- local services ----------------------------------------------------------------------------
IPERF_PORT=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$W/iperf3-server.log" 2>&1 &
PIDS+=($!)
"$HTTPD" 127.0.0.1:0 1 >"$W/httpd.log" 2>&1 &
PIDS+=($!)
HTTPD_PORT=$(wait_for "$W/httpd.log" 'listening 127\.0\.0\.1:([0-9]+)' 10)
if section slow; then # serves both the slow reader's large body and the neighbours' small answers
    $PY serve-mixed 127.0.0.1:0 >"$W/mixed.log" 2>&1 &
    PIDS+=($!)
    MIXED_PORT=$(wait_for "$W/mixed.log" 'listening 127\.0\.0\.1:([0-9]+)' 10)
fi

# --- tunnel-server -----------------------------------------------------------------------------
env NO_COLOR=1 ${TUNNEL_ENV:-} "$TUNNEL_SERVER" --ssh-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --https-addr 127.0.0.1:0 --state-dir "$W/tunnel-state" --tcp-ports "$TCP_PORTS" \
    --name-grace 0 --max-connections-per-key 4096 --max-unauthenticated-per-ip 1024 \
    --max-tcp-ports-per-key 4096 --max-names-per-key 4096 --admin-addr 127.0.0.1:0 \
    >"$W/tunnel-server.log" 2>&1 &
TS_PID=$!
PIDS+=("$TS_PID")
TS_SSH_PORT=$(wait_for "$W/tunnel-server.log" 'listening ssh on 127\.0\.0\.1:([0-9]+)' 10)
TS_HTTP_PORT=$(wait_for "$W/tunnel-server.log" 'listening http on 127\.0\.0\.1:([0-9]+)' 10)
TS_ADMIN_PORT=$(wait_for "$W/tunnel-server.log" 'listening admin on 127\.0\.0\.1:([0-9]+)' 10)
for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SSHD_PORT") 2>/dev/null && break
    sleep 0.05
done
log "sshd :$SSHD_PORT, tunnel-server ssh :$TS_SSH_PORT http :$TS_HTTP_PORT," \
    "iperf3 :$IPERF_PORT, httpd :$HTTPD_PORT, temp $W"

SSH_OPTS=(-F /dev/null -i "$W/user_key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null
    -o CheckHostIP=no -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none
    -o LogLevel=INFO)
server_port() { if [[ $1 == openssh ]]; then echo "$SSHD_PORT"; else echo "$TS_SSH_PORT"; fi; }

# start_forward SERVER KIND TARGET_PORT NAME [SSH ARGS...]: starts one ssh client with one remote
# forward to 127.0.0.1:TARGET_PORT and sets FWD_PID and FWD_ADDR (the public port, or the
# http host for KIND http). SERVER is openssh or tunnel; KIND is tcp or http (http only for
# tunnel; OpenSSH always gets a plain tcp forward).
start_forward() {
    local server=$1 kind=$2 target=$3 name=$4
    shift 4
    local out=$W/fwd-$name.out
    if [[ $server == openssh ]]; then
        ssh "${SSH_OPTS[@]}" "$@" -N -R "0:127.0.0.1:$target" -p "$SSHD_PORT" 127.0.0.1 \
            </dev/null >"$out" 2>&1 &
        FWD_PID=$!
        FWD_ADDR=$(wait_for "$out" 'Allocated port ([0-9]+) for remote forward' 10)
    elif [[ $kind == tcp ]]; then
        ssh "${SSH_OPTS[@]}" "$@" -R "0:127.0.0.1:$target" -p "$TS_SSH_PORT" 127.0.0.1 tcp \
            </dev/null >"$out" 2>&1 &
        FWD_PID=$!
        FWD_ADDR=$(wait_for "$out" 'Forwarding tcp://localhost:([0-9]+)' 10)
    else
        ssh "${SSH_OPTS[@]}" "$@" -R "80:127.0.0.1:$target" -p "$TS_SSH_PORT" 127.0.0.1 \
            http "${HTTP_FLAGS[@]}" </dev/null >"$out" 2>&1 &
        FWD_PID=$!
        FWD_ADDR=$(wait_for "$out" 'Forwarding http://([^ ]+)' 10)
    fi
    PIDS+=("$FWD_PID")
}
stop_forward() {
    kill "$FWD_PID" 2>/dev/null || true
    wait "$FWD_PID" 2>/dev/null || true
}

# Server CPU seconds: tunnel-server's, or those of sshd's per-connection processes.
server_cpu() {
    if [[ $1 == openssh ]]; then $PY cpu "$SSHD_PID" descendants; else $PY cpu "$TS_PID"; fi
}

declare -A R # R[SERVER,KEY]: one figure
# Memory right after start, before any traffic (the load tests below grow the heaps).
sleep 0.5
read -r rss pss _ < <($PY mem "$SSHD_PID")
R[openssh,start-rss]=$rss R[openssh,start-pss]=$pss
read -r rss pss _ < <($PY mem "$TS_PID")
R[tunnel,start-rss]=$rss R[tunnel,start-pss]=$pss

RESULTS=$W/results.tsv
: >"$RESULTS"
# row METRIC UNIT KEY BETTER TARGET NOTE: one table row from R[openssh,KEY] and R[tunnel,KEY];
# none when neither has the figure (a section not run).
row() {
    [[ -n "${R[openssh,$3]:-}${R[tunnel,$3]:-}" ]] || return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${R[openssh,$3]:-nan}" "${R[tunnel,$3]:-nan}" \
        "$4" "$5" "${6:-}" >>"$RESULTS"
}

# --- 1. memory (first, on fresh servers: the load tests grow the heaps) ---------------------
# tunnel-server: one process. OpenSSH: the listener (idle), plus every per-connection process
# under it. Per tunnel = (total with N idle tunnels - total just before) / N.
mem_of() { # mem_of SERVER -> "RSS_KB PSS_KB NPROCS" for the server side
    if [[ $1 == openssh ]]; then
        local a b
        read -r -a a < <($PY mem "$SSHD_PID")
        read -r -a b < <($PY mem "$SSHD_PID" descendants)
        echo $((a[0] + b[0])) $((a[1] + b[1])) $((1 + b[2]))
    else
        $PY mem "$TS_PID"
    fi
}
# open_idle SERVER N: starts N idle `ssh -N -R 0:...` clients in batches of 50, each batch
# bounded at 20 s, the whole at 180 s; sets IDLE_UP to how many got their port.
open_idle() {
    local server=$1 n=$2 port started=0 batch up=0 t0=$SECONDS
    port=$(server_port "$server")
    mkdir -p "$W/idle-$server"
    while (( started < n && SECONDS - t0 < 180 )); do
        batch=$(( n - started < 50 ? n - started : 50 ))
        for ((j = 0; j < batch; j++)); do
            ssh "${SSH_OPTS[@]}" -N -R "0:127.0.0.1:$HTTPD_PORT" -p "$port" 127.0.0.1 \
                </dev/null >"$W/idle-$server/$started.out" 2>&1 &
            echo $! >>"$IDLE_PIDS_FILE"
            started=$((started + 1))
        done
        local t1=$SECONDS
        while (( SECONDS - t1 < 20 )); do
            up=$({ grep -l -s 'Allocated port' "$W/idle-$server/"*.out || true; } | wc -l)
            (( up >= started )) && break
            sleep 0.2
        done
    done
    sleep 1
    IDLE_UP=$({ grep -l -s 'Allocated port' "$W/idle-$server/"*.out || true; } | wc -l)
}
section mem && for server in $SERVERS; do
    n=$OPENSSH_IDLE_N
    [[ $server == tunnel ]] && n=$TUNNEL_IDLE_N
    sleep 1
    read -r rss0 pss0 procs0 < <(mem_of "$server")
    R[$server,idle-rss]=$rss0 R[$server,idle-pss]=$pss0
    t0=$SECONDS
    open_idle "$server" "$n"
    sleep 2
    read -r rss1 pss1 procs1 < <(mem_of "$server")
    R[$server,idle-n]=$IDLE_UP
    R[$server,per-rss]=$(( (rss1 - rss0) / (IDLE_UP > 0 ? IDLE_UP : 1) ))
    R[$server,per-pss]=$(( (pss1 - pss0) / (IDLE_UP > 0 ? IDLE_UP : 1) ))
    log "memory $server: idle RSS ${rss0} KiB PSS ${pss0} KiB; with $IDLE_UP/$n idle tunnels" \
        "(up in $((SECONDS - t0)) s) RSS ${rss1} KiB PSS ${pss1} KiB over $procs1 processes;" \
        "per tunnel RSS ${R[$server,per-rss]} KiB PSS ${R[$server,per-pss]} KiB"
    kill_idle_clients
done

# --- 2. TCP throughput -------------------------------------------------------------------------
# iperf3's client connects to the public port; its data goes visitor -> server -> SSH channel ->
# ssh client -> iperf3 server (the server encrypts). -R reverses it (the server decrypts).
section tcp && for cipher in aes128-gcm@openssh.com chacha20-poly1305@openssh.com; do
    c=${cipher%%@*}
    for server in $SERVERS; do
        start_forward "$server" tcp "$IPERF_PORT" "iperf-$server-$c" -c "$cipher"
        for mode in 1 8 R1; do
            args=(-P 1)
            case $mode in 8) args=(-P 8) ;; R1) args=(-P 1 -R) ;; esac
            cpu0=$(server_cpu "$server") ccpu0=$($PY cpu "$FWD_PID")
            timeout $((DURATION + 10)) iperf3 -c 127.0.0.1 -p "$FWD_ADDR" -t "$DURATION" \
                -J "${args[@]}" >"$W/iperf-$server-$c-$mode.json" 2>&1 || true
            cpu1=$(server_cpu "$server") ccpu1=$($PY cpu "$FWD_PID")
            R[$server,tcp-$c-$mode]=$($PY iperf "$W/iperf-$server-$c-$mode.json")
            # CPU seconds per GB moved: the server's, and the ssh client's (the same binary both
            # times; a difference comes from what the server sends it: packet sizes, window
            # adjusts). Both share the 2 cores with the iperf3 pair.
            read -r R[$server,cpu-$c-$mode] R[$server,ccpu-$c-$mode] < <(python3 -c "
r=float('${R[$server,tcp-$c-$mode]}'); gb=r * $DURATION / 1000
f=lambda d: '%.2f' % (d / gb) if r == r and r > 0 else 'nan'
print(f($cpu1 - $cpu0), f($ccpu1 - $ccpu0))")
            log "tcp $c $mode $server: ${R[$server,tcp-$c-$mode]} MB/s, CPU s/GB server" \
                "${R[$server,cpu-$c-$mode]} ssh client ${R[$server,ccpu-$c-$mode]}; server RSS" \
                "$(mem_of "$server" | cut -d' ' -f1) KiB"
        done
        stop_forward
    done
done

# --- 3. HTTP through a tunnel ------------------------------------------------------------------
# OpenSSH: wrk through a plain tcp forward to the same service. tunnel: the http endpoint,
# routed by Host. Default ciphers (both negotiate chacha20-poly1305 with OpenSSH 9.2's client).
run_wrk() { # run_wrk KEY URL [wrk args...]
    local key=$1 url=$2
    shift 2
    local cpu0 cpu1 ccpu0 ccpu1 mcpu0 mcpu1
    cpu0=$(server_cpu "$server") ccpu0=$($PY cpu "$FWD_PID") mcpu0=$($PY machine-cpu)
    timeout $((DURATION + 15)) wrk -t2 -c50 -d"${DURATION}s" --latency "$@" "$url" \
        >"$W/wrk-$key.txt" 2>&1 || true
    cpu1=$(server_cpu "$server") ccpu1=$($PY cpu "$FWD_PID") mcpu1=$($PY machine-cpu)
    read -r rps p50 p99 errs non2xx total < <($PY wrk "$W/wrk-$key.txt")
    # CPU per request, in microseconds: the server's (OpenSSH: the connection's sshd processes),
    # the user's ssh client's, and the whole machine's (wrk, the service and the kernel too).
    read -r us cus mus < <(python3 -c "
n=float('$total'); f=lambda d: '%.1f' % (d * 1e6 / n) if n == n and n > 0 else 'nan'
print(f($cpu1 - $cpu0), f($ccpu1 - $ccpu0), f($mcpu1 - $mcpu0))")
}
section http && for server in $SERVERS; do
    variants=(default)
    # scraped: keep-alive again with the admin listener's /metrics fetched every second.
    [[ $server == tunnel ]] && variants+=(noinspect scraped)
    for variant in "${variants[@]}"; do
        HTTP_FLAGS=()
        [[ $variant == noinspect ]] && HTTP_FLAGS=(--inspect=false)
        start_forward "$server" http "$HTTPD_PORT" "http-$server-$variant"
        if [[ $server == openssh ]]; then
            url=http://127.0.0.1:$FWD_ADDR/ host_args=()
        else
            url=http://127.0.0.1:$TS_HTTP_PORT/ host_args=(-H "Host: $FWD_ADDR")
        fi
        conns=(keepalive close)
        [[ $variant == scraped ]] && conns=(keepalive)
        for conn in "${conns[@]}"; do
            SCRAPER=
            if [[ $variant == scraped ]]; then
                (for ((i = 0; i < DURATION + 15; i++)); do
                    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$TS_ADMIN_PORT/metrics"
                    sleep 1
                done) &
                SCRAPER=$!
            fi
            extra=("${host_args[@]}")
            [[ $conn == close ]] && extra+=(-H "Connection: close")
            key=$server-$variant-$conn
            run_wrk "$key" "$url" "${extra[@]}"
            if [[ -n $SCRAPER ]]; then kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; fi
            sfx=""
            [[ $variant != default ]] && sfx=-$variant
            if [[ $variant == scraped ]]; then # the anchor here is the same server, unscraped
                R[openssh,rps-$conn-scraped]=${R[tunnel,rps-$conn]:-nan}
            fi
            R[$server,rps-$conn$sfx]=$rps R[$server,p50-$conn$sfx]=$p50 R[$server,p99-$conn$sfx]=$p99
            R[$server,us-$conn$sfx]=$us R[$server,cus-$conn$sfx]=$cus R[$server,mus-$conn$sfx]=$mus
            if [[ $server == openssh ]]; then # the same OpenSSH figures beside --inspect=false
                R[openssh,rps-$conn-noinspect]=$rps R[openssh,p50-$conn-noinspect]=$p50
                R[openssh,p99-$conn-noinspect]=$p99 R[openssh,us-$conn-noinspect]=$us
                R[openssh,cus-$conn-noinspect]=$cus R[openssh,mus-$conn-noinspect]=$mus
            fi
            log "http $conn $server $variant: $rps req/s p50 ${p50} ms p99 ${p99} ms," \
                "CPU us/request server ${us} ssh client ${cus} machine ${mus}, errors $errs, non-2xx $non2xx"
            if (( errs + non2xx > 0 )); then R[$server,errors]="${R[$server,errors]:-}$key:$errs+$non2xx "; fi
        done
        stop_forward
    done
done

# --- 3b. a slow reader beside neighbours -----------------------------------------------------
# One visitor downloads SLOW_BYTES through a forward and reads them at SLOW_RATE; neighbours make
# small requests through the same forward (one after the other, a new connection each): DURATION s
# alone first, then DURATION s beside the slow reader. All to one service (bench.py serve-mixed).
# OpenSSH: a plain tcp forward, whose figures stand beside both tunnel rows. tunnel: the http
# endpoint, then a tcp endpoint. Each run is bounded (2 x DURATION + 150 s at most).
section slow && for server in $SERVERS; do
    kinds=(tcp)
    [[ $server == tunnel ]] && kinds=(http tcp)
    if [[ $server == openssh ]]; then mem_args=("$SSHD_PID" descendants); else mem_args=("$TS_PID"); fi
    for kind in "${kinds[@]}"; do
        HTTP_FLAGS=()
        start_forward "$server" "$kind" "$MIXED_PORT" "slow-$server-$kind"
        if [[ $server == tunnel && $kind == http ]]; then
            port=$TS_HTTP_PORT host=$FWD_ADDR
        else
            port=$FWD_ADDR host=localhost
        fi
        read -r a50 a99 an af b50 b99 bn bf slow_read rss < <(timeout $((2 * DURATION + 150)) \
            $PY slow-neighbours "$port" "$host" "$SLOW_BYTES" "$SLOW_RATE" "$DURATION" \
            "$W/slow-$server-$kind.txt" "${mem_args[@]}" 2>>"$W/slow-$server-$kind.err" ||
            echo nan nan 0 0 nan nan 0 0 0 nan)
        read -r r50 r99 < <(python3 -c "
f=lambda b, a: '%.2f' % (b / a) if a == a and b == b and a > 0 else 'nan'
print(f($b50, $a50), f($b99, $a99))")
        for k in $kind $([[ $server == openssh ]] && echo http); do
            R[$server,slow-$k-a50]=$a50 R[$server,slow-$k-a99]=$a99 R[$server,slow-$k-b50]=$b50
            R[$server,slow-$k-b99]=$b99 R[$server,slow-$k-r50]=$r50 R[$server,slow-$k-r99]=$r99
            R[$server,slow-$k-failed]=$((af + bf)) R[$server,slow-$k-rss]=$rss
        done
        log "slow reader $server $kind: neighbours alone p50 $a50 ms p99 $a99 ms ($an, $af failed);" \
            "beside p50 $b50 ms p99 $b99 ms ($bn, $bf failed); ratio p50 ${r50}x p99 ${r99}x;" \
            "slow reader read $slow_read bytes; server RSS $rss KiB"
        if (( af + bf > 0 )); then R[$server,errors]="${R[$server,errors]:-}slow-$kind:$((af + bf)) "; fi
        stop_forward
    done
done

# --- 4. set-up time ----------------------------------------------------------------------------
# From spawning ssh to its Allocated port line (OpenSSH) / Forwarding line (tunnel), median of
# SETUP_RUNS, each bounded at 10 s. Default kex first (OpenSSH-OpenSSH negotiates
# sntrup761x25519, OpenSSH-tunnel curve25519), then both forced to curve25519-sha256.
section setup && for kex in default curve25519-sha256; do
    kex_args=()
    [[ $kex != default ]] && kex_args=(-o "KexAlgorithms=$kex")
    R[openssh,setup-$kex]=$($PY setup-time "$SETUP_RUNS" 'Allocated port [0-9]+ for remote forward' \
        "$W/setup-openssh-$kex.txt" -- ssh "${SSH_OPTS[@]}" "${kex_args[@]}" -N \
        -R "0:127.0.0.1:$HTTPD_PORT" -p "$SSHD_PORT" 127.0.0.1)
    R[tunnel,setup-$kex]=$($PY setup-time "$SETUP_RUNS" '^Forwarding tcp://' \
        "$W/setup-tunnel-$kex.txt" -- ssh "${SSH_OPTS[@]}" "${kex_args[@]}" \
        -R "0:127.0.0.1:$HTTPD_PORT" -p "$TS_SSH_PORT" 127.0.0.1 tcp)
    for s in openssh tunnel; do
        R[$s,setup-$kex]=$(python3 -c "print('%.1f' % (float('${R[$s,setup-$kex]}') * 1000))")
    done
    log "set-up ($kex kex): OpenSSH ${R[openssh,setup-$kex]} ms, tunnel ${R[tunnel,setup-$kex]} ms"
done

# Idle again after every test: what the heaps kept.
sleep 1
read -r rss pss _ < <(mem_of openssh)
R[openssh,after-rss]=$rss R[openssh,after-pss]=$pss
read -r rss pss _ < <(mem_of tunnel)
R[tunnel,after-rss]=$rss R[tunnel,after-pss]=$pss
R[tunnel,hwm]=$(awk '/VmHWM/{print $2}' "/proc/$TS_PID/status")
log "after the tests: tunnel-server RSS $rss KiB PSS $pss KiB, peak RSS ${R[tunnel,hwm]} KiB"

# --- the table ---------------------------------------------------------------------------------
for c in aes128-gcm chacha20-poly1305; do
    row "TCP 1 stream, $c" "MB/s" "tcp-$c-1" higher 1.0
    row "TCP 8 streams, $c" "MB/s" "tcp-$c-8" higher 1.0
    row "TCP 1 stream reverse (server decrypts), $c" "MB/s" "tcp-$c-R1" higher -
    row "server CPU per GB, 1 stream, $c" "s/GB" "cpu-$c-1" lower -
    row "ssh client CPU per GB, 1 stream, $c" "s/GB" "ccpu-$c-1" lower -
done
row "HTTP keep-alive" "req/s" rps-keepalive higher 1.0
row "HTTP keep-alive p50" "ms" p50-keepalive lower -
row "HTTP keep-alive p99" "ms" p99-keepalive lower 1.0
row "HTTP Connection: close" "req/s" rps-close higher 1.5
row "HTTP Connection: close p50" "ms" p50-close lower -
row "HTTP Connection: close p99" "ms" p99-close lower -
row "server CPU per request, keep-alive" "us" us-keepalive lower -
row "server CPU per request, Connection: close" "us" us-close lower -
row "ssh client CPU per request, keep-alive" "us" cus-keepalive lower -
row "ssh client CPU per request, Connection: close" "us" cus-close lower -
row "whole machine CPU per request, keep-alive" "us" mus-keepalive lower -
row "whole machine CPU per request, Connection: close" "us" mus-close lower -
row "HTTP keep-alive, admin /metrics scraped every 1 s" "req/s" rps-keepalive-scraped higher 0.95 "OpenSSH column: tunnel unscraped"
row "HTTP keep-alive" "req/s" rps-keepalive-noinspect higher 1.0 "tunnel --inspect=false"
row "HTTP keep-alive p99" "ms" p99-keepalive-noinspect lower 1.0 "tunnel --inspect=false"
row "HTTP Connection: close" "req/s" rps-close-noinspect higher 1.5 "tunnel --inspect=false"
row "server CPU per request, keep-alive" "us" us-keepalive-noinspect lower - "tunnel --inspect=false"
row "server CPU per request, Connection: close" "us" us-close-noinspect lower - "tunnel --inspect=false"
row "whole machine CPU per request, Connection: close" "us" mus-close-noinspect lower - "tunnel --inspect=false"
for kind in http tcp; do
    note="tunnel $kind endpoint; OpenSSH tcp forward"
    row "neighbours alone, p50" "ms" "slow-$kind-a50" lower - "$note"
    row "neighbours alone, p99" "ms" "slow-$kind-a99" lower - "$note"
    row "neighbours beside a slow reader, p50" "ms" "slow-$kind-b50" lower - "$note"
    row "neighbours beside a slow reader, p99" "ms" "slow-$kind-b99" lower - "$note"
    row "neighbours p50, beside / alone" "x" "slow-$kind-r50" lower 1.0 "$note"
    row "neighbours p99, beside / alone" "x" "slow-$kind-r99" lower 1.0 "$note"
    row "neighbour requests failed" "" "slow-$kind-failed" lower - "$note"
    row "server RSS beside a slow reader" "KiB" "slow-$kind-rss" lower - "$note"
done
row "set-up time, median of $SETUP_RUNS" "ms" setup-default lower 1.0 "default kex"
row "set-up time, median of $SETUP_RUNS" "ms" setup-curve25519-sha256 lower 1.0 "both kex curve25519-sha256"
row "server memory idle at start, RSS" "KiB" start-rss lower -
row "server memory idle at start, PSS" "KiB" start-pss lower -
row "server memory idle after all the tests, RSS" "KiB" after-rss lower -
row "server memory idle after all the tests, PSS" "KiB" after-pss lower -
row "memory per idle tunnel, RSS" "KiB" per-rss lower - \
    "OpenSSH over ${R[openssh,idle-n]:-0} connections, tunnel over ${R[tunnel,idle-n]:-0}"
row "memory per idle tunnel, PSS" "KiB" per-pss lower abs\<=64 \
    "OpenSSH over ${R[openssh,idle-n]:-0} connections, tunnel over ${R[tunnel,idle-n]:-0}"

TABLE=$($PY table "$RESULTS")
rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain -- core runtime Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
{
    echo "# tunnel vs OpenSSH: benchmark results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ -n $TUNNEL_GIVEN ]]; then
        tunnel_what="binary $TUNNEL_SERVER (${TUNNEL_LABEL:-given with TUNNEL_SERVER})"
    else
        tunnel_what="$rev$dirty"
    fi
    echo "- OpenSSH: $(ssh -V 2>&1) (client and sshd); tunnel: $tunnel_what"
    echo "- each load test ${DURATION} s; iperf3 client -> public port -> server -> SSH -> ssh -> iperf3 server; wrk -t2 -c50; HTTP and set-up use default ciphers (chacha20-poly1305 on both)"
    if section slow; then
        echo "- slow reader: $SLOW_BYTES bytes read at $SLOW_RATE bytes/s; neighbours: a new connection with one small request every 10 ms, ${DURATION} s alone then ${DURATION} s beside it"
    fi
    echo "- tunnel-server peak RSS over the run (VmHWM): ${R[tunnel,hwm]:-n/a} KiB"
    echo "- errors: OpenSSH ${R[openssh,errors]:-none}; tunnel ${R[tunnel,errors]:-none}"
    echo "- reproduce: \`bash bench/run.sh\` at the repository root"
    echo
    echo "$TABLE"
} >"$W/results-new.md"
# The newest run on top; earlier runs stay below it, so a run never erases the history.
if [[ -s $OUT ]]; then
    { cat "$W/results-new.md"; echo; echo "---"; echo; sed '1s/^# tunnel vs OpenSSH: benchmark results$/## An earlier run/' "$OUT"; } >"$W/results-all.md"
    mv "$W/results-all.md" "$OUT"
else
    mv "$W/results-new.md" "$OUT"
fi
echo
echo "$TABLE"
echo
log "written to $OUT"
