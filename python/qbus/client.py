"""qbus.Client: one connection to qbusd.

Thread-safety: libqbus's client is not thread-safe, so every call here holds the
Client's lock. A Client shared by several threads is therefore safe but serialised: a
thread blocked in receive(key, timeout=None) holds the Client until a message comes, and
the other threads' calls wait for it. Use one Client per thread for work in parallel.
"""
import ctypes
from collections import namedtuple
from contextlib import contextmanager

from . import _args, _lib
from ._core import Core
from ._lib import lib
from .errors import check
from .message import Message, check_message
from .regions import Region, SharedRegion
from .subscription import Subscription

Session = namedtuple("Session", "pid uid gid client_id max_payload protocol_version")
SendFailures = namedtuple("SendFailures", "count last_code last_text")

# declare() option: (field of qbus_queue_options, converter).
_QUEUE_OPTIONS = {
    "max_messages": ("max_messages", lambda v, n: _args.integer(v, n, 0, 2**32 - 1)),
    "max_bytes": ("max_bytes", _args.integer),
    "overflow": ("overflow", lambda v, n: _args.choice(v, n, _lib.OVERFLOW)),
    "ack_timeout": ("ack_timeout_ms", _args.duration_ms),
    "max_deliveries": ("max_deliveries", lambda v, n: _args.integer(v, n, 0, 2**16 - 1)),
    "dead_letter": ("dead_letter", _args.optional_text),
    "dead_letter_overflow": ("dead_letter_overflow", _args.flag),
    "ttl": ("ttl_ms", _args.duration_ms),
    "priorities": ("priorities", lambda v, n: _args.integer(v, n, 0, 255)),
    "dead_letter_expired": ("dead_letter_expired", _args.flag),
    "single_active_consumer": ("single_active_consumer", _args.flag),
    "durable": ("durable", _args.flag),
    "message_ids": ("message_ids", _args.flag),
    "fsync": ("fsync", lambda v, n: _args.choice(v, n, _lib.FSYNC)),
}


def _send_options(headers, confirm, ttl, delay, priority):
    """A qbus_send_options, or None when every option is the default (the fast path)."""
    array, count = _args.headers(headers)
    confirm = _args.flag(confirm, "confirm")
    ttl_ms = _args.duration_ms(ttl, "ttl")
    delay_ms = _args.duration_ms(delay, "delay")
    priority = _args.integer(priority, "priority", 0, 9)
    if not (count or confirm or ttl_ms or delay_ms or priority):
        return None
    o = _lib.init(_lib.SendOptions)
    if count:
        o.headers, o.header_count, o._keep = array, count, array
    o.confirm, o.ttl_ms, o.delay_ms, o.priority = confirm, ttl_ms, delay_ms, priority
    return o


def _direct_options(wait, confirm, headers):
    array, count = _args.headers(headers)
    o = _lib.init(_lib.DirectOptions)
    o.wait_ms = _args.wait_ms(wait, "wait")
    o.confirm = _args.flag(confirm, "confirm")
    if count:
        o.headers, o.header_count, o._keep = array, count, array
    return o


def _publish_options(headers, retain, confirm):
    array, count = _args.headers(headers)
    o = _lib.init(_lib.PublishOptions)
    o.retain = _args.flag(retain, "retain")
    o.confirm = _args.flag(confirm, "confirm")
    if count:
        o.headers, o.header_count, o._keep = array, count, array
    return o


def _opt_ref(options):
    return ctypes.byref(options) if options is not None else None


class Client:
    """A connection to qbusd; `with qbus.Client() as c:` closes it at the end.

    address: "unix:/path", "tcp:HOST:PORT" or "tls:HOST:PORT"; None uses $QBUS_ADDRESS,
    else the per-user socket, else /run/qbus/qbus.sock. timeout: seconds to connect
    (None: libqbus's default). name: shown in `qbusctl clients`. region_pool_bytes:
    regions kept granted and populated ahead of need (docs/client.md, "Large regions").
    Timeouts of waits are seconds too, None waiting without limit.
    """

    def __init__(self, address=None, name=None, timeout=5.0, token=None, region_pool_bytes=0):
        o = _lib.init(_lib.ClientOptions)
        o.region_pool_bytes = _args.integer(region_pool_bytes, "region_pool_bytes")
        o.address = _args.optional_text(address, "address")
        o.name = _args.optional_text(name, "name")
        o.token = _args.optional_text(token, "token")
        if timeout is not None:  # None: the library's default
            o.connect_timeout_ms = _args.duration_ms(timeout, "timeout")
        ptr = ctypes.c_void_p()
        check(lib.qbus_client_connect(ctypes.byref(o), ctypes.byref(ptr)))
        self._core = Core(ptr.value)
        info = _lib.SessionInfo()
        with self._core as c:
            check(lib.qbus_client_session(c, ctypes.byref(info)), c)
        self.session = Session(info.pid, info.uid, info.gid, info.client_id,
                               info.max_payload, info.protocol_version)

    # ---- lifetime ----
    def close(self):
        """Writes what a batch left buffered (best effort) and closes the connection.
        Messages received stay valid."""
        self._core.close()

    @property
    def closed(self):
        return not self._core.ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"client_id={self.session.client_id}"
        return f"<qbus.Client {state}>"

    # ---- queues ----
    def send(self, key, payload, *, headers=None, confirm=False, ttl=None, delay=None,
             priority=0):
        """Queues `payload` under `key`. Pipelined unless `confirm`: a refusal the
        broker reports later is counted in `send_failures` (see sync())."""
        k = _args.text(key, "key")
        if type(payload) is bytes:  # the common case, without a Payload object
            ptr, size = payload, len(payload)
        else:
            p = _args.Payload(payload)
            ptr, size = p.ptr, p.size
        if (headers is None and confirm is False and ttl is None and delay is None
                and priority == 0):
            o = None  # the defaults: no options struct at all
        else:
            o = _opt_ref(_send_options(headers, confirm, ttl, delay, priority))
        with self._core as c:
            rc = lib.qbus_send(c, k, ptr, size, o)
            if rc:
                check(rc, c)

    def receive(self, key, timeout=None, ack=False):
        """The oldest message of `key`, or None when `timeout` passed. With `ack`, the
        message stays the broker's until ack()ed."""
        k = _args.text(key, "key")
        ms = _args.wait_ms(timeout)
        flags = _lib.RECEIVE_ACK if _args.flag(ack, "ack") else 0
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_receive(c, k, ms, flags, ctypes.byref(out)), c)
        return Message(out.value) if out.value else None

    def receive_batch(self, key, max, timeout=None, ack=False):
        """Up to `max` messages in one round trip; [] when `timeout` passed."""
        k = _args.text(key, "key")
        n = _args.integer(max, "max", 0, 2**31)
        ms = _args.wait_ms(timeout)
        flags = _lib.RECEIVE_ACK if _args.flag(ack, "ack") else 0
        out = (ctypes.c_void_p * n)()
        count = ctypes.c_size_t()
        with self._core as c:
            check(lib.qbus_receive_batch(c, k, n, ms, flags, out, ctypes.byref(count)), c)
        return [Message(out[i]) for i in range(count.value)]

    def messages(self, key, timeout=1.0, ack=False):
        """Yields the messages of `key` until a receive waits `timeout` in vain."""
        while True:
            m = self.receive(key, timeout, ack)
            if m is None:
                return
            yield m

    def declare(self, key, **options):
        """Creates queue `key` with `options`, or checks that it has them (QueueConflict
        otherwise). Options: max_messages, max_bytes, overflow ("reject", "drop_oldest",
        "block"), ack_timeout (s), max_deliveries, dead_letter (a key),
        dead_letter_overflow, ttl (s), priorities, dead_letter_expired,
        single_active_consumer, durable, fsync ("always", "batch", "none"), message_ids
        (every message gets a broker-unique "qbus-id" header)."""
        k = _args.text(key, "key")
        o = _lib.init(_lib.QueueOptions)
        for name, value in options.items():
            if name not in _QUEUE_OPTIONS:
                raise TypeError(f"declare() got an unknown option {name!r}")
            field, convert = _QUEUE_OPTIONS[name]
            setattr(o, field, convert(value, name))
        with self._core as c:
            check(lib.qbus_declare(c, k, ctypes.byref(o)), c)

    def purge(self, key):
        """Drops every queued message of `key`; returns how many."""
        return self._count_call(lib.qbus_purge, key)

    def delete_queue(self, key):
        """Drops the queue and its messages; returns how many messages went."""
        return self._count_call(lib.qbus_delete_queue, key)

    def _count_call(self, fn, key):
        k = _args.text(key, "key")
        dropped = ctypes.c_uint64()
        with self._core as c:
            check(fn(c, k, ctypes.byref(dropped)), c)
        return dropped.value

    def sync(self):
        """Waits until the broker processed everything sent before: `send_failures` is
        then complete for those sends."""
        with self._core as c:
            check(lib.qbus_sync(c), c)

    @property
    def send_failures(self):
        """Failures of pipelined sends so far: (count, last_code, last_text)."""
        count, code, text = ctypes.c_uint64(), ctypes.c_int(), ctypes.c_char_p()
        with self._core as c:
            check(lib.qbus_send_failures(c, ctypes.byref(count), ctypes.byref(code),
                                         ctypes.byref(text)), c)
            last_text = (text.value or b"").decode("utf-8", "replace")
        return SendFailures(count.value, code.value, last_text)

    @contextmanager
    def batch(self):
        """Sends inside are buffered and written in large chunks at the end."""
        with self._core as c:
            check(lib.qbus_batch_begin(c), c)
        try:
            yield self
        finally:
            with self._core.lock:
                if self._core.ptr:
                    check(lib.qbus_batch_end(self._core.ptr), self._core.ptr)

    # ---- acknowledgements ----
    def ack(self, message, confirm=False):
        self._settle(lib.qbus_ack, message, confirm)

    def ack_up_to(self, delivery_tag, confirm=False):
        """Acks every message this connection holds up to and including the tag."""
        tag = _args.integer(delivery_tag, "delivery_tag")
        confirm = _args.flag(confirm, "confirm")
        with self._core as c:
            check(lib.qbus_ack_up_to(c, tag, confirm), c)

    def nack(self, message, action="requeue", delay=0, confirm=False):
        """Gives a message back: action "requeue", "requeue_after" (with `delay`
        seconds) or "dead_letter"."""
        m = check_message(message)
        a = _args.choice(action, "action", _lib.NACK)
        delay_ms = _args.duration_ms(delay, "delay")
        confirm = _args.flag(confirm, "confirm")
        with self._core as c:
            check(lib.qbus_nack(c, m, a, delay_ms, confirm), c)

    def extend(self, message, by, confirm=False):
        """Pushes the message's ack deadline to now + `by` seconds (0: the queue's
        ack_timeout)."""
        m = check_message(message)
        by_ms = _args.duration_ms(by, "by")
        confirm = _args.flag(confirm, "confirm")
        with self._core as c:
            check(lib.qbus_extend(c, m, by_ms, confirm), c)

    def _settle(self, fn, message, confirm):
        m = check_message(message)
        confirm = _args.flag(confirm, "confirm")
        with self._core as c:
            check(fn(c, m, confirm), c)

    # ---- direct messages, requests ----
    def send_to_pid(self, pid, payload, *, wait=0.0, confirm=True, headers=None):
        """Sends to the inbox of process `pid`, waiting up to `wait` seconds for it to
        connect (None: without limit)."""
        target = _args.integer(pid, "pid", 1, 2**32 - 1)
        self._direct(lib.qbus_send_to_pid, target, payload, wait, confirm, headers)

    def send_to_client(self, client_id, payload, *, wait=0.0, confirm=True, headers=None):
        """Sends to the inbox of a connection by client id (TCP peers have no pid)."""
        target = _args.integer(client_id, "client_id", 1)
        self._direct(lib.qbus_send_to_client, target, payload, wait, confirm, headers)

    def _direct(self, fn, target, payload, wait, confirm, headers):
        p = _args.Payload(payload)
        o = _direct_options(wait, confirm, headers)
        with self._core as c:
            check(fn(c, target, p.ptr, p.size, ctypes.byref(o)), c)

    def receive_direct(self, timeout=None):
        """A direct message sent to this process, or None when `timeout` passed."""
        ms = _args.wait_ms(timeout)
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_receive_direct(c, ms, ctypes.byref(out)), c)
        return Message(out.value) if out.value else None

    def receive_direct_batch(self, max, timeout=None):
        """Up to `max` direct messages in one round trip; [] when `timeout` passed."""
        n = _args.integer(max, "max", 0, 2**31)
        ms = _args.wait_ms(timeout)
        out = (ctypes.c_void_p * n)()
        count = ctypes.c_size_t()
        with self._core as c:
            check(lib.qbus_receive_direct_batch(c, n, ms, out, ctypes.byref(count)), c)
        return [Message(out[i]) for i in range(count.value)]

    def request(self, key, payload, timeout=5.0, headers=None):
        """Sends a request to queue `key` and returns the reply, or None when none came
        within `timeout` seconds."""
        k = _args.text(key, "key")
        p = _args.Payload(payload)
        ms = _args.wait_ms(timeout)
        array, count = _args.headers(headers)
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_request(c, k, p.ptr, p.size, ms, array, count,
                                   ctypes.byref(out)), c)
        return Message(out.value) if out.value else None

    def reply(self, request_message, payload):
        """Answers a message whose `is_request` is true. Pipelined."""
        m = check_message(request_message, "request_message")
        p = _args.Payload(payload)
        with self._core as c:
            check(lib.qbus_reply(c, m, p.ptr, p.size), c)

    # ---- subscriptions, publish ----
    def subscribe(self, key, prefetch=0, ack=True):
        """The broker pushes the messages of queue `key`; in ack mode (the default) at
        most `prefetch` unsettled at once (0: the broker's default)."""
        k = _args.text(key, "key")
        o = _lib.init(_lib.SubscribeOptions)
        o.prefetch = _args.integer(prefetch, "prefetch", 0, 2**32 - 1)
        o.ack = _args.flag(ack, "ack")
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_subscribe(c, k, ctypes.byref(o), ctypes.byref(out)), c)
        return Subscription(self, out.value, key)

    def subscribe_subject(self, pattern, group=None, max_messages=0, max_bytes=0, slow=None):
        """Every subject `pattern` matches ("a.*.c", "a.>"); live once this returns.
        slow: what the broker does when this subscriber lags: "drop_oldest" (the
        default), "disconnect" or "block"."""
        p = _args.text(pattern, "pattern")
        o = _lib.init(_lib.SubjectOptions)
        o.group = _args.optional_text(group, "group")
        o.max_messages = _args.integer(max_messages, "max_messages", 0, 2**32 - 1)
        o.max_bytes = _args.integer(max_bytes, "max_bytes")
        o.slow = _args.choice(slow, "slow", _lib.SLOW)
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_subscribe_subject(c, p, ctypes.byref(o), ctypes.byref(out)), c)
        return Subscription(self, out.value, pattern)

    def publish(self, subject, payload, *, headers=None, retain=False, confirm=False):
        """Publishes to every subscription matching `subject`. Pipelined unless
        `confirm`; `retain` keeps it as the subject's retained message."""
        s = _args.text(subject, "subject")
        p = _args.Payload(payload)
        o = _publish_options(headers, retain, confirm)
        with self._core as c:
            check(lib.qbus_publish(c, s, p.ptr, p.size, ctypes.byref(o)), c)

    # ---- shared memory ----
    def allocate_region(self, size):
        """A writable shared-memory Region of `size` bytes (Unix sockets only)."""
        n = _args.integer(size, "size", 1)
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_region_allocate(c, n, ctypes.byref(out)), c)
            return Region(self, out.value)

    def send_region(self, key, region, *, headers=None, confirm=False, ttl=None, delay=None,
                    priority=0):
        """Sends the whole region to queue `key` and gives it up: no copy."""
        k = _args.text(key, "key")
        o = _send_options(headers, confirm, ttl, delay, priority)
        self._region_call(region, lambda c, r: lib.qbus_send_region(c, k, r, _opt_ref(o)))

    def send_region_slice(self, key, region, offset, length):
        """Sends bytes [offset, offset + length) of the region; it can send more slices
        (its memory is no longer writable)."""
        k = _args.text(key, "key")
        off = _args.integer(offset, "offset")
        n = _args.integer(length, "length")
        self._region_call(region, lambda c, r: lib.qbus_send_region_slice(c, k, r, off, n))

    def send_region_to_pid(self, pid, region, *, wait=0.0, confirm=True, headers=None):
        target = _args.integer(pid, "pid", 1, 2**32 - 1)
        o = _direct_options(wait, confirm, headers)
        self._region_call(
            region, lambda c, r: lib.qbus_send_region_to_pid(c, target, r, ctypes.byref(o)))

    def publish_region(self, subject, region, *, headers=None, confirm=False):
        """Publishes the whole region: every subscriber maps the same pages."""
        s = _args.text(subject, "subject")
        o = _publish_options(headers, False, confirm)
        self._region_call(
            region, lambda c, r: lib.qbus_publish_region(c, s, r, ctypes.byref(o)))

    def _region_call(self, region, call):
        if not isinstance(region, Region):
            raise TypeError(f"region must be qbus.Region, not {type(region).__name__}")
        with self._core as c:
            r = region._ptr()
            region._give_up_view()
            try:
                check(call(c, r), c)
            finally:
                region._refresh()

    def create_shared_region(self, key, size, mode=0o600):
        """A named region of `size` bytes others may attach (checked against `mode`)."""
        k = _args.text(key, "key")
        n = _args.integer(size, "size", 1)
        m = _args.integer(mode, "mode", 0, 0o666)
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_shared_region_create(c, k, n, m, ctypes.byref(out)), c)
            return SharedRegion(self, out.value, key)

    def attach_shared_region(self, key, writable=True):
        k = _args.text(key, "key")
        w = _args.flag(writable, "writable")
        out = ctypes.c_void_p()
        with self._core as c:
            check(lib.qbus_shared_region_attach(c, k, w, ctypes.byref(out)), c)
            return SharedRegion(self, out.value, key)

    def remove_shared_region(self, key):
        """Forgets the name; the memory lives on while any process holds it."""
        k = _args.text(key, "key")
        with self._core as c:
            check(lib.qbus_shared_region_remove(c, k), c)

    # ---- event loops (see qbus.aio) ----
    def fileno(self):
        """The connection's socket, to poll for readability; owned by the Client."""
        fd = ctypes.c_int()
        with self._core as c:
            check(lib.qbus_client_fd(c, ctypes.byref(fd)), c)
        return fd.value

    @property
    def wants_write(self):
        flag = ctypes.c_int()
        with self._core as c:
            check(lib.qbus_client_wants_write(c, ctypes.byref(flag)), c)
        return bool(flag.value)

    def process(self):
        """Never blocks: writes what the socket takes and files what arrived with its
        subscription."""
        with self._core as c:
            check(lib.qbus_client_process(c), c)
