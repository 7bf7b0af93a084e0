"""_Core: a connection's C handle, its lock, and the frees that wait for the lock.

A qbus_client is not thread-safe, and neither are the subscriptions and regions it made:
freeing a subscription cancels it through the client. Every call takes the lock. The
garbage collector, though, may free a subscription or a region on any thread at any
moment, even while another thread holds the lock in a long receive; a finaliser that
waited for the lock could stall that thread for as long. So a finaliser that cannot take
the lock at once leaves the free in `pending`, and the next call (or close) does it.
"""
import threading
from collections import deque

from ._lib import lib


class Core:
    __slots__ = ("lock", "ptr", "pending", "__weakref__")

    def __init__(self, ptr):
        self.lock = threading.Lock()
        self.ptr = ptr
        self.pending = deque()

    def __enter__(self):
        """`with core as ptr:` holds the lock and gives the client handle (ValueError
        once closed). A plain method pair, not @contextmanager: it is on every call."""
        self.lock.acquire()
        if not self.ptr:
            self.lock.release()
            raise ValueError("operation on a closed qbus.Client")
        if self.pending:
            try:
                self._drain()
            except BaseException:
                self.lock.release()
                raise
        return self.ptr

    def __exit__(self, *exc):
        self.lock.release()

    def free_later(self, free, ptr):
        """Frees a handle of this client now if the lock is free, else at the next call."""
        self.pending.append((free, ptr))
        if not self.ptr:
            self._drain()  # closed: the frees only release memory, no lock needed
        elif self.lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self.lock.release()

    def deferred(self, free):
        """A free function for _Owned that goes through free_later."""
        return lambda ptr: self.free_later(free, ptr)

    def _drain(self):
        while True:
            try:
                free, ptr = self.pending.popleft()
            except IndexError:
                return
            free(ptr)

    def close(self):
        with self.lock:
            if not self.ptr:
                return
            self._drain()  # subscriptions cancel and regions release while connected
            ptr, self.ptr = self.ptr, None
            lib.qbus_client_free(ptr)
        self._drain()

    def __del__(self):
        try:
            self._drain()
            ptr, self.ptr = self.ptr, None
            if ptr:
                lib.qbus_client_free(ptr)
        except Exception:  # interpreter shutdown
            pass
