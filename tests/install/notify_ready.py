#!/usr/bin/env python3
"""A NOTIFY_SOCKET receiver for tests: waits for a daemon's sd_notify READY=1.

Usage: notify_ready.py SOCKET_PATH CONTROL_FIFO TIMEOUT_S

Binds a datagram socket at SOCKET_PATH, then opens CONTROL_FIFO for reading: a caller that
opens the FIFO for writing is released only once the socket can receive, so it may start
the daemon then. It writes the daemon's pid into the FIFO. Exits 0 when READY=1 arrives,
2 when the daemon exits (or turns zombie) first, 3 on timeout or error. Messages go to stderr.
"""
import socket
import sys
import time


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def main() -> int:
    path, control, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bind_error = None
    try:
        sock.bind(path)
    except OSError as e:
        bind_error = e
    # Opened even when bind failed: the caller blocks until someone opens the FIFO.
    with open(control) as f:
        line = f.readline().strip()
    if bind_error:
        print(f"notify: cannot bind {path}: {bind_error}", file=sys.stderr)
        return 3
    if not line.isdigit():
        print(f"notify: no daemon pid on {control}", file=sys.stderr)
        return 3
    pid = int(line)
    deadline = time.monotonic() + timeout
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode(errors="replace")
        except socket.timeout:
            if not alive(pid):
                print(f"notify: daemon {pid} exited before READY=1", file=sys.stderr)
                return 2
            continue
        print("notify: " + data.replace("\n", " | "), file=sys.stderr)
        if "READY=1" in data.split("\n"):
            return 0
    print(f"notify: no READY=1 from daemon {pid} within {timeout:.0f} s", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
