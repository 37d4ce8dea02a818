#!/usr/bin/env python3
"""Holds a server's listening sockets the way systemd does for a socket-activated service, and
runs the server on them: SIGHUP restarts it (SIGTERM to the running one, then a new one on the
same sockets), SIGTERM stops it and exits. The sockets stay open throughout, so a connection
made while no server runs waits in the backlog instead of being refused.

    socket_holder.py PROGRAM ARGS...

Binds 127.0.0.1:0 three times, passed as descriptors 3, 4, 5 named ssh, http and https
(LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID as sd_listen_fds(3) reads them). The server's output is
this process's. Each child dies with this process (PR_SET_PDEATHSIG)."""

import ctypes
import fcntl
import os
import signal
import socket
import sys

NAMES = ["ssh", "http", "https"]
PR_SET_PDEATHSIG = 1


def bind():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


def spawn(sockets, argv):
    pid = os.fork()
    if pid:
        return pid
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Out of the way first: a socket may already sit on 3, 4 or 5.
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
            os.set_inheritable(3 + i, True)
        env = dict(os.environ)
        env.update(
            LISTEN_FDS=str(len(sockets)),
            LISTEN_FDNAMES=":".join(NAMES),
            LISTEN_PID=str(os.getpid()),
        )
        os.execvpe(argv[0], argv, env)
    finally:
        os._exit(127)


def main():
    argv = sys.argv[1:]
    sockets = [bind() for _ in NAMES]
    state = {"child": spawn(sockets, argv), "stopping": False, "restart": False}

    def on_hup(_signum, _frame):
        state["restart"] = True
        os.kill(state["child"], signal.SIGTERM)

    def on_term(_signum, _frame):
        state["stopping"] = True
        os.kill(state["child"], signal.SIGTERM)

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    while True:
        _, status = os.waitpid(state["child"], 0)
        if state["restart"] and not state["stopping"]:
            state["restart"] = False
            print("socket_holder: server exited, starting it again", file=sys.stderr, flush=True)
            state["child"] = spawn(sockets, argv)
            continue
        sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
