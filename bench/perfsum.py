#!/usr/bin/env python3
"""Summarises `perf script` output (with call chains) of tunnel-server into buckets.

    perf script -i FILE.perf.data -F tid,period,ip,sym,dso | python3 bench/perfsum.py

Prints: self time by symbol; inclusive time of the frames that say where to fix things (russh
packet code, the pipe, hyper, allocation, crypto, syscalls); and a bucketed split of all samples.
"""

import collections
import re
import sys

BUCKETS = [  # the first bucket, in this order, with a matching frame anywhere in the chain wins
    ("page faults (fresh memory touched)", r"exc_page_fault|do_anonymous_page|clear_page"),
    ("crypto: AES-GCM", r"aes_gcm|gcm::|aes::hw|ghash|gcm_"),
    ("crypto: chacha20-poly1305", r"chacha|poly1305"),
    ("crypto: other (kex, sign, hash)", r"ring::|curve25519|x25519|ed25519|sha2|sha256|sha512|bignum|mlkem|sntrup"),
    ("memcpy/memmove (user space)", r"__memmove|__memcpy|memcpy"),
    ("malloc/free", r"malloc|_int_free|cfree|realloc|tcache|malloc_consolidate|unlink_chunk|alloc::raw_vec"),
    ("socket send: syscall, loopback delivery, waking the peer",
     r"__libc_send|__send\b|sendmsg|sendto|writev|__libc_write|sock_write_iter"),
    ("socket recv", r"__libc_recv|recvfrom|recvmsg|__libc_read|sock_read_iter"),
    ("accept/close/epoll_ctl (per connection)", r"accept|__close|close_nocancel|epoll_ctl|add_source|deregister"),
    ("futex (thread to thread wake/wait)", r"futex"),
    ("epoll_wait/park (blocking, woken, context switch)", r"epoll_wait|park_internal|park_timeout"),
    ("kernel: other", r"\[k\]"),
]

INTEREST = re.compile(
    r"^(russh::|<russh::|tunnel_runtime::|<tunnel_runtime|hyper::|<hyper::|hyper_util::|"
    r"tokio::io::util::copy|tokio::sync::|tokio::runtime::scheduler::multi_thread::worker::Context::park|"
    r"tokio::runtime::time|tokio::net::tcp::stream::TcpStream::poll_|tokio::runtime::io::|"
    r"tracing|<tracing|std::sync::mutex|tunnel_core::|<alloc::|alloc::|bytes::|<bytes::|"
    r"__libc_(send|recv|write|read)|__send|__recv|__write|__read|malloc|free|realloc|__memmove|"
    r"epoll_wait|__GI___clone|ring::aead|ring_core)"
)


def parse(stream):
    """Yields (period, [frames innermost first]) per sample."""
    period, frames, header = 0, [], False
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if header:
                yield period, frames
            period, frames, header = 0, [], False
            continue
        if not line.startswith("\t"):  # a sample's header: "TID PERIOD" (TID right-aligned)
            header = True
            parts = line.split()
            period = 1
            for p in parts:
                if p.isdigit() and len(parts) > 1 and p != parts[0]:
                    period = int(p)
            continue
        # "\t  ffffffff81000000 symbol+0x12 (dso)"
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)(\+0x[0-9a-f]+)?\s+\((.*)\)\s*$", line)
        if m:
            sym, dso = m.group(1), m.group(3)
            if "kernel" in dso:
                sym = "[k] " + sym
            frames.append(sym)
    if header:
        yield period, frames


def short(sym, width=110):
    sym = re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>", "<..>", sym) if len(sym) > width else sym
    return sym[:width]


def main():
    total = 0
    self_time = collections.Counter()
    incl = collections.Counter()
    buckets = collections.Counter()
    compiled = [(n, re.compile(r)) for n, r in BUCKETS]
    for period, frames in parse(sys.stdin):
        if not frames:
            continue
        total += period
        self_time[short(frames[0])] += period
        seen = set()
        for f in frames:
            s = short(f)
            if s not in seen and INTEREST.search(f):
                seen.add(s)
                incl[s] += period
        name = next((n for n, r in compiled if any(r.search(f) for f in frames)), "user: other")
        buckets[name] += period
    if not total:
        print("no samples")
        return
    pct = lambda v: 100.0 * v / total
    print(f"samples (weighted): {total}\n")
    print("== buckets (the first bucket, in this order, with a frame in the chain) ==")
    for name, v in buckets.most_common():
        print(f"{pct(v):6.1f}%  {name}")
    print("\n== self time, top 30 ==")
    for name, v in self_time.most_common(30):
        print(f"{pct(v):6.1f}%  {name}")
    print("\n== inclusive time of selected frames, top 60 ==")
    for name, v in incl.most_common(60):
        if pct(v) < 0.5:
            break
        print(f"{pct(v):6.1f}%  {name}")


if __name__ == "__main__":
    main()
