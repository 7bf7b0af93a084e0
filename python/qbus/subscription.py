"""Subscription: messages the broker pushes for a queue key or a subject pattern.

A subscription shares its Client's connection and lock: deliveries that arrive while
the Client waits for something else are kept for next(), and next() with a timeout holds
the Client like any other blocking call.
"""
import ctypes
from contextlib import contextmanager

from . import _args
from ._lib import lib
from .errors import check
from .message import Message, _Owned


class Subscription:
    """Iterating yields messages until the subscription is cancelled or ended (each
    step waits without limit); `next(timeout)` waits at most `timeout` seconds.

    A queue subscription in acknowledgement mode (the default) hands out messages that
    must be settled with `Client.ack()` or `nack()`; closing it gives the ones it kept
    and never handed out back to the queue.
    """

    def __init__(self, client, ptr, key):
        self._client = client
        self._handle = _Owned(ptr, client._core.deferred(lib.qbus_subscription_free))
        self.key = key

    def next(self, timeout=None):
        """The next message, or None when `timeout` passed (0: only what has arrived)."""
        ms = _args.wait_ms(timeout)
        out = ctypes.c_void_p()
        with self._locked() as (client, sub):
            check(lib.qbus_subscription_next(sub, ms, ctypes.byref(out)), client)
        return Message(out.value) if out.value else None

    @property
    def pending(self):
        """Deliveries already read and kept for next()."""
        count = ctypes.c_size_t()
        with self._locked() as (client, sub):
            check(lib.qbus_subscription_pending(sub, ctypes.byref(count)), client)
        return count.value

    @property
    def active(self):
        """Subscribed, and neither cancelled nor ended by an error."""
        if not self._handle.ptr or not self._client._core.ptr:
            return False
        flag = ctypes.c_int()
        with self._locked() as (client, sub):
            check(lib.qbus_subscription_active(sub, ctypes.byref(flag)), client)
        return bool(flag.value)

    def cancel(self):
        """Asks the broker to stop; what arrived before stays for next()."""
        with self._locked() as (client, sub):
            check(lib.qbus_subscription_cancel(sub), client)

    def close(self):
        """Cancels (best effort) and frees the subscription."""
        core = self._client._core
        with core.lock:
            ptr, self._handle.ptr = self._handle.ptr, None
            if ptr:
                lib.qbus_subscription_free(ptr)

    @contextmanager
    def _locked(self):
        """The client's lock, yielding (client handle, subscription handle)."""
        with self._client._core as client:
            if not self._handle.ptr:
                raise ValueError("operation on a closed qbus.Subscription")
            yield client, self._handle.ptr

    def __iter__(self):
        while True:
            m = self.next()
            if m is None:
                return
            yield m

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<qbus.Subscription {self.key!r}{'' if self._handle.ptr else ' closed'}>"
