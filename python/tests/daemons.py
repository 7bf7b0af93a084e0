"""Starting a daemon that reports readiness with sd_notify (qbusd; redis-server with
--supervised systemd), for the tests and the benchmark.

The caller's process binds a datagram socket, names it in the daemon's NOTIFY_SOCKET,
and waits in select() for READY=1 on it or for the daemon's exit on a pidfd, whichever
comes first: no sleeping, no polling of the daemon's socket.
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# Default: the source tree's own build (build/ at the top, as the README's commands make it).
QBUSD = os.environ.get("QBUS_DAEMON",
                       str(Path(__file__).resolve().parents[2] / "build" / "daemon" / "qbusd"))
READY_TIMEOUT = 10.0


class Daemon:
    def __init__(self, args, directory, name):
        self.args = args
        self.directory = Path(directory)
        self.name = name
        self.proc = None

    def start(self):
        notify_path = self.directory / f"{self.name}.notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        env.pop("QBUS_ADDRESS", None)
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.DEVNULL)
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            self._wait_ready(notify, pidfd)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(pidfd)
            notify.close()
        return self

    def _wait_ready(self, notify, pidfd):
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name} sent no READY=1 within {READY_TIMEOUT} s")
            ready, _, _ = select.select([notify, pidfd], [], [], left)
            if notify in ready and "READY=1" in notify.recv(4096).decode().split("\n"):
                return
            if pidfd in ready:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}) before READY=1")

    def stop(self):
        """SIGTERM, then wait (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        self.proc.kill()
        self.proc.wait()


@contextmanager
def _running(make_args, name):
    # A short directory of its own: a Unix socket path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix=f"{name}-py-")
    daemon = Daemon(make_args(directory), directory, name)
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def running_qbusd():
    """A qbusd on TMP/qbus.sock; the Daemon's `address` is "unix:TMP/qbus.sock"."""
    def args(d):
        return [QBUSD, "--socket", f"{d}/qbus.sock", "--bus", "user",
                "--state-dir", f"{d}/state", "--log-level", "warn"]
    with _running(args, "qbusd") as daemon:
        daemon.address = f"unix:{daemon.directory}/qbus.sock"
        yield daemon


@contextmanager
def running_redis(server="redis-server"):
    """A redis-server on TMP/redis.sock only, without persistence."""
    def args(d):
        return [server, "--port", "0", "--unixsocket", f"{d}/redis.sock", "--save", "",
                "--appendonly", "no", "--supervised", "systemd", "--loglevel", "warning"]
    with _running(args, "redis") as daemon:
        daemon.socket_path = f"{daemon.directory}/redis.sock"
        yield daemon
