"""qbus.aio: a Client for asyncio, driven by the connection's file descriptor.

    async with qbus.aio.Client() as c:
        await c.send("jobs", "hello")
        m = await c.receive("jobs", timeout=1.0)
        async for m in c.subscribe_subject("sensors.>"):
            ...

Nothing here blocks the event loop waiting for a message. A receive does not call the
blocking qbus_receive: the Client keeps one queue subscription per key (acknowledgement
mode, a small prefetch), the loop watches the socket, calls qbus_client_process() when it
is readable and hands each delivery to the oldest waiting receive, which acks it. Calls
that only wait for the broker's answer (send, publish, declare, ...) call the C library
directly: on a local socket that is microseconds. request() waits for another process,
so it runs on a second connection in the default executor, one request at a time (for
many requests in flight, use several Clients, or the C++ AsyncClient).

Two limits of this design: a send writes through the blocking client, so while the
broker does not read this connection (its backpressure on a flood of sends) the send
holds the loop until the socket drains; and close() cancels the subscriptions with one
round trip to the broker on the loop.

A message prefetched for a key stays this Client's (unsettled, invisible to other
consumers) until a receive takes it or the Client closes; `prefetch` bounds how many.
"""
import asyncio
import functools
from collections import deque

from . import client as _sync
from .errors import ConnectionClosed, Error

__all__ = ["Client", "Subscription"]


class _Feed:
    """One subscription and the futures waiting for its messages, oldest first."""

    __slots__ = ("sub", "waiters", "ended", "settle")

    def __init__(self, sub, settle):
        self.sub = sub
        self.waiters = deque()
        self.ended = False
        self.settle = settle  # its messages are acked (queue subscriptions)


class Client:
    def __init__(self, address=None, name=None, timeout=5.0, token=None, prefetch=8):
        self._options = dict(address=address, name=name, timeout=timeout, token=token)
        self._prefetch = prefetch
        self._c = None
        self._blocking = None  # a second connection for request(), made on first use
        self._blocking_lock = None
        self._queues = {}  # key -> _Feed
        self._feeds = set()  # every _Feed, subject ones too
        self._writing = False
        self._error = None

    # ---- lifetime ----
    async def connect(self):
        self._loop = asyncio.get_running_loop()
        self._c = await self._loop.run_in_executor(
            None, functools.partial(_sync.Client, **self._options))
        self._fd = self._c.fileno()
        self._loop.add_reader(self._fd, self._on_ready)
        return self

    @property
    def session(self):
        return self._client().session

    async def close(self):
        if self._c is None:
            return
        self._unwatch()
        closed = ConnectionClosed("the qbus.aio.Client was closed")
        for feed in list(self._feeds):
            self._end(feed, closed)
            feed.sub.close()
        self._feeds.clear()
        self._queues.clear()
        self._c.close()
        self._c = None
        if self._blocking is not None:
            self._blocking.close()
            self._blocking = None

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    # ---- the loop's side ----
    def _client(self):
        if self._error is not None:
            raise self._error
        if self._c is None:
            raise ValueError("the qbus.aio.Client is not connected (use `async with`)")
        return self._c

    def _call(self, fn, *args, **kwargs):
        """Runs a call of the blocking client (a method name, or a callable), then hands
        out what it happened to read: deliveries read during any call do not make the
        fd readable again."""
        c = self._client()
        if isinstance(fn, str):
            fn = getattr(c, fn)
        try:
            return fn(*args, **kwargs)
        except Error as e:
            if isinstance(e, ConnectionError) or e.name in ("io_error", "protocol_violation"):
                self._fail(e)
            raise
        finally:
            if self._c is not None and self._error is None:
                self._pump()

    def _on_ready(self):
        try:
            self._c.process()
        except Error as e:
            self._fail(e)
            return
        self._pump()

    def _pump(self):
        for feed in list(self._feeds):
            self._hand_out(feed)
        wants = self._c.wants_write
        if wants != self._writing:
            self._writing = wants
            if wants:
                self._loop.add_writer(self._fd, self._on_ready)
            else:
                self._loop.remove_writer(self._fd)

    def _hand_out(self, feed):
        while feed.waiters:
            if feed.waiters[0].done():  # timed out or cancelled
                feed.waiters.popleft()
                continue
            try:
                m = feed.sub.next(0)
            except Error as e:
                self._end(feed, e)
                return
            if m is None:
                if not feed.sub.active:
                    self._end(feed, None)
                return
            feed.waiters.popleft().set_result(m)

    def _end(self, feed, error):
        """A subscription ended (cancelled, or an error from the broker)."""
        feed.ended = True
        self._feeds.discard(feed)
        if self._queues.get(feed.sub.key) is feed:
            del self._queues[feed.sub.key]
        while feed.waiters:
            w = feed.waiters.popleft()
            if not w.done():
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(error)

    def _fail(self, error):
        """The connection is gone: every waiter gets the error, later calls too."""
        if self._error is None:
            self._error = error
        self._unwatch()
        for feed in list(self._feeds):
            self._end(feed, error)

    def _unwatch(self):
        if self._c is not None and getattr(self, "_fd", None) is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
            self._writing = False

    async def _wait(self, feed, timeout):
        """The next message of `feed`, or None after `timeout` seconds."""
        if feed.ended:
            return None
        fut = self._loop.create_future()
        feed.waiters.append(fut)
        self._hand_out(feed)
        timer = None
        if timeout is not None and not fut.done():
            timer = self._loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled after a message was handed over but before the caller saw it:
            # give it back rather than hold it unsettled.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                m = fut.result()
                if m is not None and feed.settle and self._error is None and self._c:
                    self._call("nack", m)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    # ---- queues ----
    async def send(self, key, payload, **options):
        """As qbus.Client.send(); the C send does not wait for a receiver."""
        self._call("send", key, payload, **options)

    async def receive(self, key, timeout=None):
        """The next message of queue `key` (acked as it is handed over), or None after
        `timeout` seconds."""
        feed = self._queues.get(key)
        if feed is None:
            sub = self._call("subscribe", key, prefetch=self._prefetch, ack=True)
            feed = self._queues[key] = _Feed(sub, settle=True)
            self._feeds.add(feed)
        m = await self._wait(feed, timeout)
        if m is not None:
            self._call("ack", m)
        return m

    async def declare(self, key, **options):
        self._call("declare", key, **options)

    async def purge(self, key):
        return self._call("purge", key)

    async def delete_queue(self, key):
        return self._call("delete_queue", key)

    async def sync(self):
        self._call("sync")

    async def publish(self, subject, payload, **options):
        self._call("publish", subject, payload, **options)

    def subscribe_subject(self, pattern, **options):
        """An async iterable of the messages of every subject `pattern` matches; live
        once this returns. Close it (or use `async with`) when done."""
        sub = self._call("subscribe_subject", pattern, **options)
        feed = _Feed(sub, settle=False)
        self._feeds.add(feed)
        return Subscription(self, feed)

    async def request(self, key, payload, timeout=5.0, headers=None):
        """As qbus.Client.request(), on a second connection in the default executor, so
        the loop goes on while the responder works."""
        self._client()
        if self._blocking is None:
            self._blocking_lock = self._blocking_lock or asyncio.Lock()
            async with self._blocking_lock:
                if self._blocking is None:
                    self._blocking = await self._loop.run_in_executor(
                        None, functools.partial(_sync.Client, **self._options))
        call = functools.partial(self._blocking.request, key, payload, timeout, headers)
        return await self._loop.run_in_executor(None, call)


class Subscription:
    """`async for m in sub` yields messages until the subscription is cancelled."""

    def __init__(self, client, feed):
        self._client = client
        self._feed = feed
        self.key = feed.sub.key

    async def next(self, timeout=None):
        """The next message, or None after `timeout` seconds or once ended."""
        self._client._client()
        return await self._client._wait(self._feed, timeout)

    def __aiter__(self):
        return self

    async def __anext__(self):
        m = await self.next()
        if m is None:
            raise StopAsyncIteration
        return m

    async def cancel(self):
        """Stops the subscription; iteration ends once what came before is handed out."""
        self._client._call(self._feed.sub.cancel)

    async def close(self):
        if not self._feed.ended:
            self._client._end(self._feed, None)
        self._feed.sub.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _expire(fut):
    if not fut.done():
        fut.set_result(None)
