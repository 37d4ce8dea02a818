#!/usr/bin/env python3
"""Helpers for bench/run.sh: timing set-up, reading memory, parsing tool output, the table.

Every loop here is bounded in count and time. Only the standard library is used.
"""

import json
import os
import re
import select
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
          "table": table}.get(cmd)
    if fn is None:
        die(f"unknown command {cmd}")
    fn(args)


if __name__ == "__main__":
    main()
