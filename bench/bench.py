#!/usr/bin/env python3
"""Helpers for bench/run.sh: timing set-up, reading memory, parsing tool output, the table.

Every loop here is bounded in count and time. Only the standard library is used.
"""

import json
import os
import re
import select
import socket
import signal
import statistics
import subprocess
import sys
import time


def die(msg):
    print(f"bench.py: {msg}", file=sys.stderr)
    sys.exit(1)


# --- set-up time -------------------------------------------------------------------------------

def setup_time(args):
    """setup-time RUNS PATTERN OUTFILE -- SSH-COMMAND...

    Spawns the command RUNS times, one after the other; each time measures from the spawn to the
    first line (stdout or stderr) matching PATTERN, then kills it. Each try is bounded at 10 s.
    Writes one number per line (seconds; 'timeout' for a miss) to OUTFILE and prints the median.
    """
    sep = args.index("--")
    runs, pattern, outfile = int(args[0]), re.compile(args[1]), args[2]
    cmd = args[sep + 1:]
    times = []
    for _ in range(runs):
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        buf = b""
        found = None
        deadline = start + 10.0
        try:
            while found is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([proc.stdout], [], [], left)
                if not ready:
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                for line in buf.split(b"\n"):
                    if pattern.search(line.decode("utf-8", "replace")):
                        found = time.monotonic() - start
                        break
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        times.append(found)
        if found is None:
            sys.stderr.write("setup-time: no match; output was:\n" + buf.decode("utf-8", "replace")[-2000:] + "\n")
    with open(outfile, "w") as f:
        for t in times:
            f.write(("%.4f" % t if t is not None else "timeout") + "\n")
    ok = [t for t in times if t is not None]
    if not ok:
        print("nan")
        return
    print("%.4f" % statistics.median(ok))


# --- memory ------------------------------------------------------------------------------------

def _status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid):
    kids = _children_map()
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def mem(args):
    """mem PID [descendants]: prints 'RSS_KB PSS_KB NPROCS' of PID, or of all its descendants."""
    pid = int(args[0])
    pids = descendants(pid) if len(args) > 1 and args[1] == "descendants" else [pid]
    rss = pss = 0
    n = 0
    for p in pids:
        try:
            rss += _status_kb(p, "VmRSS")
            pss += _pss_kb(p)
            n += 1
        except (FileNotFoundError, ProcessLookupError):
            pass
    print(rss, pss, n)


def cpu(args):
    """cpu PID [descendants]: prints the user+system CPU seconds of PID (or its descendants,
    which includes only the living ones)."""
    pid = int(args[0])
    pids = descendants(pid) if len(args) > 1 and args[1] == "descendants" else [pid]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    print("%.2f" % (total / tick))


def machine_cpu(args):
    """machine-cpu: prints the busy CPU seconds of the whole machine so far (every process and
    the kernel: /proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
    print("%.2f" % (busy / os.sysconf("SC_CLK_TCK")))


# --- tool output -------------------------------------------------------------------------------

def iperf(args):
    """iperf JSONFILE: prints the received rate in MB/s (10^6 bytes per second)."""
    with open(args[0]) as f:
        text = f.read()
    try:
        data = json.loads(text)
        bps = data["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError):
        print("nan")
        return
    print("%.1f" % (bps / 8 / 1e6))


def _ms(value):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(args):
    """wrk OUTFILE: prints 'REQ_PER_S P50_MS P99_MS ERRORS NON2XX REQUESTS'."""
    with open(args[0]) as f:
        text = f.read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    print("%s %.3f %.3f %d %d %s" % (
        rps.group(1) if rps else "nan",
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
        sum(int(x) for x in errs.groups()) if errs else 0,
        int(non2xx.group(1)) if non2xx else 0,
        total.group(1) if total else "nan",
    ))


# --- a slow reader beside neighbours -----------------------------------------------------------

_CHUNK = os.urandom(1 << 20)


def serve_mixed(args):
    """serve-mixed ADDR: a threaded HTTP/1.1 service on ADDR (port 0 picks one) that prints
    'listening IP:PORT' once bound. GET /big/N answers N bytes (Content-Length, streamed); any
    other request 'ok'. Keep-alive unless the request says Connection: close. Runs until killed.
    """
    import socketserver

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    if len(buf) > 65536:
                        return
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                path = parts[1] if len(parts) > 1 else "/"
                close = any(l.lower().startswith("connection:") and "close" in l.lower()
                            for l in lines[1:])
                conn = b"Connection: close\r\n" if close else b""
                if path.startswith("/big/") and path[5:].isdigit():
                    left = int(path[5:])
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                 + conn + b"Content-Length: %d\r\n\r\n" % left)
                    view = memoryview(_CHUNK)
                    while left > 0:
                        n = min(left, len(view))
                        sock.sendall(view[:n])
                        left -= n
                else:
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + conn
                                 + b"Content-Length: 3\r\n\r\nok\n")
                if close:
                    return

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

        def handle_error(self, request, client_address):
            pass  # a visitor that goes away mid-body is expected here

    host, port = args[0].rsplit(":", 1)
    with Server((host, int(port)), Handler) as server:
        print("listening %s:%d" % server.server_address, flush=True)
        server.serve_forever()


def _small_request(port, host, timeout):
    """One neighbour: a new connection, GET /small with Connection: close, read to the close.
    Returns (seconds, ok)."""
    start = time.perf_counter()
    deadline = start + timeout
    ok = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                      % host.encode())
            data = b""
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nok\n")
    except OSError:
        pass
    return time.perf_counter() - start, ok


def _neighbours(port, host, seconds, interval=0.01):
    """Neighbour requests, one every `interval` seconds (or right after the one before, when
    that took longer), for `seconds`; at least 20 unless that takes 20 s more. Each is bounded at
    15 s (beyond the server's 10 s channel-open timeout, so a stalled tunnel shows as its 502).
    Returns [(seconds, ok)]."""
    out = []
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end and (len(out) >= 20 or now >= end + 20):
            break
        due = start + len(out) * interval
        if due > now:
            time.sleep(due - now)  # pacing: neighbours arrive at a steady rate
        out.append(_small_request(port, host, 15.0))
    return out


def _pct(times, p):
    s = sorted(times)
    return s[min(len(s) - 1, len(s) * p // 100)] * 1000 if s else float("nan")


def slow_neighbours(args):
    """slow-neighbours PORT HOST BIG_BYTES RATE SECONDS OUTFILE [MEMPID [descendants]]

    Neighbours (a new connection with one small request every 10 ms, one after the other) for
    SECONDS alone; then one visitor GETs /big/BIG_BYTES on the same PORT and reads it at RATE
    bytes/s while the neighbours run SECONDS more beside it; then it stops reading and holds its
    socket while the server's memory is sampled (MEMPID as `mem` takes it), and goes. Every wait
    is bounded.
    Prints 'ALONE_P50 ALONE_P99 ALONE_N ALONE_FAILED BESIDE_P50 BESIDE_P99 BESIDE_N
    BESIDE_FAILED SLOW_BYTES RSS_KB' (ms; a failed request counts with the time it took) and
    writes every request's time to OUTFILE.
    """
    import threading

    port, host, big, rate, seconds, outfile = (int(args[0]), args[1], int(args[2]),
                                               float(args[3]), float(args[4]), args[5])
    alone = _neighbours(port, host, seconds)

    reading, stop_reading, release = threading.Event(), threading.Event(), threading.Event()
    slow = {"bytes": 0, "error": None}

    def slow_reader():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET /big/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (big, host.encode()))
                begun = time.monotonic()
                while not stop_reading.is_set() and time.monotonic() - begun < seconds + 30:
                    chunk = s.recv(16384)
                    if not chunk:
                        slow["error"] = "the download ended early"
                        break
                    slow["bytes"] += len(chunk)
                    reading.set()
                    # Pacing is the point: a visitor behind a slow link.
                    wait = slow["bytes"] / rate - (time.monotonic() - begun)
                    if wait > 0:
                        stop_reading.wait(wait)
                release.wait(30)  # stops reading, keeps the socket open
        except OSError as e:
            slow["error"] = str(e)
        finally:
            reading.set()

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    reading.wait(15)
    beside = _neighbours(port, host, seconds)
    stop_reading.set()
    rss = "nan"
    if len(args) > 6:
        pids = descendants(int(args[6])) if len(args) > 7 and args[7] == "descendants" else [int(args[6])]
        total = 0
        for p in pids:
            try:
                total += _status_kb(p, "VmRSS")
            except (FileNotFoundError, ProcessLookupError):
                pass
        rss = str(total)
    release.set()
    thread.join(35)
    if slow["error"]:
        sys.stderr.write("slow-neighbours: slow reader: %s\n" % slow["error"])
    with open(outfile, "w") as f:
        for phase, results in (("alone", alone), ("beside", beside)):
            for t, ok in results:
                f.write("%s %.6f %s\n" % (phase, t, "ok" if ok else "FAILED"))

    def summary(results):
        times = [t for t, _ in results]
        return "%.3f %.3f %d %d" % (_pct(times, 50), _pct(times, 99), len(results),
                                    sum(1 for _, ok in results if not ok))

    print(summary(alone), summary(beside), slow["bytes"], rss)


# --- the table ---------------------------------------------------------------------------------

def _fmt(v):
    if v is None or v != v:
        return "n/a"
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def table(args):
    """table RESULTS.tsv: prints a markdown table.

    Each row: metric, unit, openssh, tunnel, better (higher|lower|info), target ratio (or -),
    note. The ratio is tunnel / OpenSSH; 'met' compares it with the target in the right
    direction.
    """
    rows = []
    with open(args[0]) as f:
        for line in f:
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (7 - len(parts))
            rows.append(parts)
    out = ["| metric | OpenSSH | tunnel | ratio tunnel/OpenSSH | target | met |",
           "|---|---:|---:|---:|---|---|"]
    for metric, unit, o, t, better, target, note in rows:
        def num(x):
            try:
                return float(x)
            except ValueError:
                return None
        ov, tv = num(o), num(t)
        ratio = tv / ov if ov not in (None, 0) and tv is not None and ov == ov and tv == tv else None
        met, target_txt = "", "-"
        if target.startswith("abs<="):
            target_txt = "tunnel <= %s %s" % (target[5:], unit)
            if tv is not None and tv == tv:
                met = "yes" if tv <= float(target[5:]) else "NO"
        elif target not in ("", "-"):
            goal = float(target)
            target_txt = (">= " if better == "higher" else "<= ") + "%gx" % goal
            if ratio is not None:
                met = ("yes" if ratio >= goal else "NO") if better == "higher" else (
                    "yes" if ratio <= goal else "NO")
        label = f"{metric} ({unit})" if unit else metric
        if note:
            label += f" [{note}]"
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            label, _fmt(ov) if ov is not None else (o or "n/a"), _fmt(tv) if tv is not None else (t or "n/a"),
            ("%.2fx" % ratio) if ratio is not None else "n/a", target_txt, met))
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        die("usage: bench.py COMMAND ARGS...")
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"setup-time": setup_time, "mem": mem, "cpu": cpu, "machine-cpu": machine_cpu, "iperf": iperf, "wrk": wrk,
          "table": table, "serve-mixed": serve_mixed, "slow-neighbours": slow_neighbours}.get(cmd)
    if fn is None:
        die(f"unknown command {cmd}")
    fn(args)


if __name__ == "__main__":
    main()
