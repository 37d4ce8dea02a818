#!/usr/bin/env python3
"""Hostile-load helper for bench/hostile.sh (stdlib only; loopback only).

    hostile.py serve                      a local service for the tunnels (prints 'listening IP:PORT')
    hostile.py attacker KIND ARGS...      one attack, run as its own process (see ATTACKS)
    hostile.py phase KIND ...             the attacker beside legitimate visitors, and the server's
                                          figures before, during and after: one result line (JSON)
    hostile.py table RESULTS.jsonl        the markdown table

Every wait is bounded and every loop ends by itself; the attacker dies with its parent.
"""

import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

LEGIT_IP = "127.0.0.1"


def die(msg):
    sys.stderr.write("hostile.py: %s\n" % msg)
    sys.exit(2)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the local service -------------------------------------------------------------------------

async def _serve_one(reader, writer):
    """HTTP/1.1 (keep-alive unless asked otherwise). GET /hold answers a head with a 1 GB
    Content-Length and 1 KiB of it, then never more (holds until the visitor goes); a request with
    a body is answered once the body has all arrived; anything else '200 ok'."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection" and "close" in value.lower():
                    close = True
            if path.startswith("/hold"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: 1000000000\r\n\r\n" + b"x" * 1024)
                await writer.drain()
                while await reader.read(65536):
                    pass
                return
            while length > 0:
                data = await reader.read(min(length, 65536))
                if not data:
                    return
                length -= len(data)
            conn = b"Connection: close\r\n" if close else b""
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + conn
                         + b"Content-Length: 3\r\n\r\nok\n")
            await writer.drain()
            if close:
                return
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def serve(args):
    raise_nofile()

    async def main():
        server = await asyncio.start_server(_serve_one, LEGIT_IP, 0, backlog=1024)
        print("listening %s:%d" % server.sockets[0].getsockname()[:2], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- attacks -----------------------------------------------------------------------------------

def client_hello(name):
    """A real ClientHello for `name` (TLS 1.3 and 1.2 offered), from the ssl module's own engine."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class Attack:
    """N connections from 127.0.0.2 (or spread over `sources` addresses from it on), each doing `kind`'s thing until told to stop. Counts how
    many got connected, and how many the server closed before the end."""

    def __init__(self, kind, port, n, host, interval, sources):
        self.kind, self.port, self.n, self.host, self.interval = kind, port, n, host, interval
        # 127.0.0.2, 127.0.0.3, ...: connection i comes from the (i mod sources)-th.
        self.sources = ["127.0.0.%d" % (2 + i) for i in range(sources)]
        self.started = 0
        self.connected = 0
        self.closed_by_server = 0
        self.failed = 0
        self.stop = asyncio.Event()

    def first_bytes(self):
        host = self.host.encode()
        if self.kind in ("none", "silent", "fds"):
            return b""
        if self.kind == "tls":
            return client_hello(self.host)
        if self.kind == "slowloris":
            return b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-Slow: "
        if self.kind == "body":
            return (b"POST /upload HTTP/1.1\r\nHost: " + host
                    + b"\r\nContent-Length: 1000000000\r\n\r\n")
        if self.kind == "h2":
            return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        if self.kind == "ssh":
            return b"SSH-2.0-hostile_0.1\r\n"
        if self.kind == "hold":
            return b"GET /hold HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        raise ValueError(self.kind)

    def trickles(self):
        return self.kind in ("slowloris", "body")

    async def one(self, gate):
        source = self.sources[self.started % len(self.sources)]
        self.started += 1
        try:
            async with gate:  # at most so many connects under way at once
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port,
                                            local_addr=(source, 0)), 10)
        except (OSError, asyncio.TimeoutError):
            self.failed += 1
            return
        self.connected += 1
        try:
            first = self.first_bytes()
            if first:
                writer.write(first)
                await writer.drain()
            if self.kind == "hold":
                # Reads the head and the first KiB (a visitor let in), then nothing more: the
                # response stays in flight.
                head = await asyncio.wait_for(reader.read(4096), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    self.closed_by_server += 1  # refused (503), or closed
                    return
            closed = asyncio.ensure_future(self._until_closed(reader))
            stop = asyncio.ensure_future(self.stop.wait())
            while True:
                wait = self.interval if self.trickles() else None
                done, _ = await asyncio.wait({closed, stop}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    self.closed_by_server += 1
                    break
                if stop in done:
                    break
                writer.write(b"a")  # one more byte of the head / the body
                await writer.drain()
            for task in (closed, stop):
                task.cancel()
        except (OSError, asyncio.TimeoutError):
            self.closed_by_server += 1
        finally:
            writer.close()

    async def _until_closed(self, reader):
        # The hold visitor never reads on (its window fills), every other one only waits for EOF.
        if self.kind == "hold":
            await asyncio.Event().wait()
        while True:
            data = await reader.read(65536)
            if not data:
                return


def attacker(args):
    """attacker KIND PORT N HOST INTERVAL MAX_SECONDS: opens N connections (at most 100 connects
    under way at once; from 127.0.0.2, or spread over ATTACK_SOURCES addresses from it on), prints 'up CONNECTED' once all were tried, holds until SIGTERM or
    MAX_SECONDS, then closes everything and prints 'end CONNECTED CLOSED_BY_SERVER FAILED'."""
    # Dies with the phase that started it, whatever happens to that one.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    raise_nofile()
    kind, port, n, host, interval, max_seconds = (args[0], int(args[1]), int(args[2]), args[3],
                                                  float(args[4]), float(args[5]))

    async def main():
        attack = Attack(kind, port, n, host, interval, int(os.environ.get("ATTACK_SOURCES", "1")))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, attack.stop.set)
        gate = asyncio.Semaphore(100)
        started = time.monotonic()
        tasks = [asyncio.ensure_future(attack.one(gate)) for _ in range(n)]
        deadline = started + min(max_seconds, 30)
        while (attack.connected + attack.failed < len(tasks) and time.monotonic() < deadline
               and not attack.stop.is_set()):
            await asyncio.sleep(0.02)
        print("up %d" % attack.connected, flush=True)
        try:
            await asyncio.wait_for(attack.stop.wait(), max(0.0, started + max_seconds - time.monotonic()))
        except asyncio.TimeoutError:
            attack.stop.set()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        print("end %d %d %d" % (attack.connected, attack.closed_by_server, attack.failed),
              flush=True)

    asyncio.run(main())
    os._exit(0)  # tasks cut mid-connect must not keep the process


# --- the server's figures ----------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- legitimate visitors -----------------------------------------------------------------------

def _request(port, host, timeout):
    """One visitor: a new connection from LEGIT_IP, GET / with Connection: close, read to the
    close. Returns (seconds, ok)."""
    start = time.perf_counter()
    deadline = start + timeout
    ok = False
    try:
        with socket.socket() as s:
            s.settimeout(timeout)
            s.bind((LEGIT_IP, 0))
            s.connect(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
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


def _visitors(port, host, interval, stop, out, timeout):
    """One request every `interval` s (or right after the one before, when that took longer)
    until `stop` is set; appends (seconds, ok) to `out`."""
    start = time.monotonic()
    while not stop.is_set():
        due = start + len(out) * interval
        now = time.monotonic()
        if due > now and stop.wait(due - now):
            break
        out.append(_request(port, host, timeout))


def _rss_target(idle_kb):
    """RSS counted as back to idle: within 10% of it, and at least 1 MiB (allocators keep some)."""
    return idle_kb + max(1024, idle_kb // 10)


def _pct(times, p):
    s = sorted(times)
    return s[min(len(s) - 1, len(s) * p // 100)] * 1000 if s else float("nan")


def phase(args):
    """phase KIND PID PORT N HOST INTERVAL DURATION SETTLE HTTP_PORT HTTP_HOST TCP_PORT LEGIT_MS

    Idle figures of server PID; then the attacker (KIND on PORT, N connections) ramps up; then
    for DURATION s legitimate visitors (an http request every LEGIT_MS ms on HTTP_PORT for
    HTTP_HOST, and a tcp-tunnel request every 2 x LEGIT_MS ms on TCP_PORT), with the server's fds
    and RSS sampled; then the attacker stops and the server's fds are polled (every 100 ms, for
    at most SETTLE s) until back to the idle figure, then its RSS (every 100 ms, at most RSS_SETTLE
    s from the environment, default 5). Prints one JSON line."""
    (kind, pid, port, n, host, interval, duration, settle, http_port, http_host, tcp_port,
     legit_ms) = (args[0], int(args[1]), int(args[2]), int(args[3]), args[4], args[5],
                  float(args[6]), float(args[7]), int(args[8]), args[9], int(args[10]),
                  float(args[11]))
    rss_settle = float(os.environ.get("RSS_SETTLE", "5"))
    raise_nofile()
    # Idle: wait (bounded) for the fd count to hold still for half a second.
    idle_fds, stable_since, t0 = fds(pid), time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < 10 and time.monotonic() - stable_since < 0.5:
        time.sleep(0.05)
        now_fds = fds(pid)
        if now_fds != idle_fds:
            idle_fds, stable_since = now_fds, time.monotonic()
    idle_rss = rss_kb(pid)
    cpu0 = cpu_seconds(pid)

    max_seconds = duration + 40  # ramp (at most 30 s) + the measurement + margin
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "attacker", kind, str(port), str(n), host,
         interval, str(max_seconds)],
        stdout=subprocess.PIPE, text=True)
    ramp_start = time.monotonic()
    up_line = proc.stdout.readline().split()  # bounded by the attacker's own 30 s ramp limit
    ramp = time.monotonic() - ramp_start
    up = int(up_line[1]) if len(up_line) == 2 and up_line[0] == "up" else 0

    stop = threading.Event()
    http_results, tcp_results, samples = [], [], []
    legit_timeout = 5.0
    threads = [
        threading.Thread(target=_visitors, daemon=True,
                         args=(http_port, http_host, legit_ms / 1000, stop, http_results,
                               legit_timeout)),
        threading.Thread(target=_visitors, daemon=True,
                         args=(tcp_port, "localhost", 2 * legit_ms / 1000, stop, tcp_results,
                               legit_timeout)),
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + duration
    while time.monotonic() < end:
        samples.append((fds(pid), rss_kb(pid)))
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(legit_timeout + 1)

    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    cpu1 = cpu_seconds(pid)
    end_line = (out.split("\n")[0].split() if out else [])
    held = closed = failed = None
    if len(end_line) == 4 and end_line[0] == "end":
        _, connected_total, closed, failed = end_line
        held = int(connected_total) - int(closed)
        closed, failed = int(closed), int(failed)

    # After: the server's timeouts (or the attacker's closes) clear it; poll, bounded.
    t0 = time.monotonic()
    after_fds = fds(pid)
    while after_fds > idle_fds and time.monotonic() - t0 < settle:
        time.sleep(0.1)
        after_fds = fds(pid)
    cleared = time.monotonic() - t0
    # Memory an allocator gives back does so within a few seconds; poll it too, bounded.
    t1 = time.monotonic()
    after_rss = rss_kb(pid)
    while (after_rss > _rss_target(idle_rss) and time.monotonic() - t1 < rss_settle):
        time.sleep(0.1)
        after_rss = rss_kb(pid)

    http_times = [t for t, _ in http_results]
    tcp_times = [t for t, _ in tcp_results]
    all_times = http_times + tcp_times
    print(json.dumps({
        "kind": kind, "n": n, "sources": int(os.environ.get("ATTACK_SOURCES", "1")), "up": up, "ramp_s": round(ramp, 2), "held_at_end": held,
        "closed_by_server": closed, "connect_failed": failed,
        "http_n": len(http_results), "http_ok": sum(1 for _, ok in http_results if ok),
        "tcp_n": len(tcp_results), "tcp_ok": sum(1 for _, ok in tcp_results if ok),
        "http_p50": _pct(http_times, 50), "http_p99": _pct(http_times, 99),
        "tcp_p50": _pct(tcp_times, 50), "tcp_p99": _pct(tcp_times, 99),
        "p50": _pct(all_times, 50), "p99": _pct(all_times, 99),
        "cpu_s": round(cpu1 - cpu0, 2),
        "idle_fds": idle_fds, "peak_fds": max([f for f, _ in samples] or [0]),
        "after_fds": after_fds, "cleared_s": round(cleared, 1),
        "idle_rss": idle_rss, "peak_rss": max([r for _, r in samples] or [0]),
        "after_rss": after_rss,
    }), flush=True)


# --- the table ---------------------------------------------------------------------------------

TITLES = {
    "none": "none (legitimate visitors alone, the baseline)",
    "silent": "silent plain connections",
    "tls": "silent TLS after a ClientHello",
    "slowloris": "slowloris head (a byte a second)",
    "body": "trickled body (a byte a second)",
    "h2": "HTTP/2 preface on the plain port",
    "ssh": "unauthenticated SSH (banner, then stall)",
    "fds": "fd exhaustion (silent plain connections)",
    "hold": "one visitor holding the endpoint (responses never finish)",
}


def table(args):
    """table RESULTS.jsonl: one markdown row per attack."""
    rows = []
    with open(args[0]) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    out = ["| attack | attacker: connected / held at the end | legitimate ok (http, tcp) | "
           "p50 / p99 (ms) | server CPU (s) | fds idle / peak / after | RSS MiB idle / peak / "
           "after | cleared in (s) | targets |",
           "|---|---|---|---|---:|---|---|---:|---|"]
    for r in rows:
        ok = r["http_ok"] + r["tcp_ok"]
        total = r["http_n"] + r["tcp_n"]
        met = []
        if ok < total or total == 0:
            met.append("success NO")
        if not r["p99"] < 100:
            met.append("p99 NO")
        if r["after_fds"] > r["idle_fds"]:
            met.append("fds NO")
        if r["after_rss"] > _rss_target(r["idle_rss"]):
            met.append("RSS NO")
        label = TITLES.get(r["kind"], r["kind"])
        if r["kind"] == "fds" and r.get("fd_limit"):
            label += ", ulimit -n %s" % r["fd_limit"]
        if r.get("sources", 1) > 1 and r["n"] > 0:
            label += ", from %d addresses" % r["sources"]
        mib = lambda kb: "%.1f" % (kb / 1024)
        rows_txt = "| %s | %s / %s of %d | %d/%d, %d/%d | %.1f / %.1f | %.2f | %d / %d / %d | %s / %s / %s | %.1f | %s |" % (
            label, r["up"], "n/a" if r["held_at_end"] is None else r["held_at_end"], r["n"],
            r["http_ok"], r["http_n"], r["tcp_ok"], r["tcp_n"], r["p50"], r["p99"], r["cpu_s"],
            r["idle_fds"], r["peak_fds"], r["after_fds"], mib(r["idle_rss"]),
            mib(r["peak_rss"]), mib(r["after_rss"]), r["cleared_s"],
            "all met" if not met else ", ".join(met))
        out.append(rows_txt)
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        die("usage: hostile.py serve|attacker|phase|table ARGS...")
    fn = {"serve": serve, "attacker": attacker, "phase": phase, "table": table}.get(sys.argv[1])
    if fn is None:
        die("unknown command %s" % sys.argv[1])
    fn(sys.argv[2:])


if __name__ == "__main__":
    main()
