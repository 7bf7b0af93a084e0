"""Message: a received message, and the handle that frees it.

A message's fields are read once, when it arrives, so that reading them never touches
the C library again. The C handle itself stays alive as long as something needs it: the
Message (ack, nack and reply name it) or a payload memoryview over a shared-memory
mapping, which must not outlive the mapping. Both hold the same `_Owned` handle, which
frees the message when the last of them goes; a C message may be freed on any thread.
"""
import ctypes
from collections import namedtuple

from . import _lib
from ._lib import lib
from .errors import check

Sender = namedtuple("Sender", "pid uid client_id")
Sender.__doc__ = "Who sent a message, as the kernel reported it to the broker."


_INFO = _lib.init(_lib.MessageInfo)


class _Owned:
    """One C handle and its free function, called once: by release() or by the garbage
    collector."""

    __slots__ = ("ptr", "_free", "__weakref__")

    def __init__(self, ptr, free):
        self.ptr = ptr
        self._free = free

    def release(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def _view(address, size, owner, writable):
    """A memoryview of `size` bytes at `address` that keeps `owner` alive."""
    array = (ctypes.c_ubyte * size).from_address(address)
    array._owner = owner
    view = memoryview(array).cast("B")
    return view if writable else view.toreadonly()


class Message:
    """A message taken from a queue, an inbox, a reply or a subscription.

    `payload` is bytes for an inline message. For a message that came through shared
    memory (`in_shared_memory`) it is a read-only memoryview of the mapping itself, no
    copy: the mapping stays until that view and this Message are both gone.
    """

    __slots__ = ("_handle", "_info", "key", "payload", "headers")

    def __init__(self, ptr):
        self._handle = _Owned(ptr, lib.qbus_message_free)
        # A copy of an _init-ed struct: the same bytes as calling the _init function,
        # without a call per message. One call gives the key and the payload too.
        info = self._info = _lib.MessageInfo.from_buffer_copy(_INFO)
        check(lib.qbus_message_info_get(ptr, ctypes.byref(info)))
        if info.key is None:  # a libqbus from before the info carried the key
            raise RuntimeError("qbus: the loaded libqbus.so.0 is older than this package; "
                               "install the libqbus that came with it")
        self.key = ctypes.string_at(info.key).decode("utf-8", "replace")
        count = info.header_count
        self.headers = self._read_headers(ptr, count) if count else []
        n = info.payload_len
        if not n:
            self.payload = b""
        elif info.in_shared_memory:
            self.payload = _view(info.payload, n, self._handle, writable=False)
        else:
            self.payload = ctypes.string_at(info.payload, n)

    # Read from the info struct when asked: most receivers look at few of them.
    sender = property(lambda self: Sender(self._info.sender_pid, self._info.sender_uid,
                                          self._info.sender_client_id))
    is_request = property(lambda self: bool(self._info.is_request))
    is_direct = property(lambda self: bool(self._info.is_direct))
    in_shared_memory = property(lambda self: bool(self._info.in_shared_memory))
    request_id = property(lambda self: self._info.request_id)
    delivery_tag = property(lambda self: self._info.delivery_tag)
    delivery_count = property(lambda self: self._info.delivery_count)
    redelivered = property(lambda self: bool(self._info.redelivered))
    retained = property(lambda self: bool(self._info.retained))
    dropped_before = property(lambda self: self._info.dropped_before)

    @staticmethod
    def _read_headers(ptr, count):
        out = []
        header = _lib.Header()  # only for messages with headers
        for i in range(count):
            check(lib.qbus_message_header_at(ptr, i, ctypes.byref(header)))
            value = ctypes.string_at(header.value, header.value_len) if header.value_len else b""
            out.append((header.key.decode("utf-8", "replace"), value))
        return out

    @property
    def text(self):
        """The payload decoded as UTF-8 (undecodable bytes replaced)."""
        return bytes(self.payload).decode("utf-8", "replace")

    def header(self, name, default=None):
        """The value of the first header called `name`, or `default`."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def close(self):
        """Drops this Message's hold on the C message: it is freed now, unless a payload
        memoryview still uses its mapping (then it goes with that view)."""
        handle, self._handle = self._handle, None
        self.payload = b""
        del handle

    def _ptr(self, name="message"):
        handle = getattr(self, "_handle", None)
        if handle is None or not handle.ptr:
            raise ValueError(f"{name} was closed")
        return handle.ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return len(self.payload)

    def __repr__(self):
        where = "shared memory" if self.in_shared_memory else "inline"
        return (f"<qbus.Message key={self.key!r} {len(self.payload)} bytes {where} "
                f"from pid {self.sender.pid}>")


def check_message(value, name="message"):
    """The C handle of a Message argument."""
    if not isinstance(value, Message):
        raise TypeError(f"{name} must be qbus.Message, not {type(value).__name__}")
    return value._ptr(name)
