"""Checking and converting Python arguments before any C call.

libqbus would reject most bad input itself, but with an error naming a C parameter; a
Python caller should get the usual TypeError naming *its* argument, and nothing should
reach the C side half-converted.
"""
import ctypes
import math

from . import _lib


def type_error(name, expected, value):
    return TypeError(f"{name} must be {expected}, not {type(value).__name__}")


def text(value, name):
    """A str argument as NUL-terminated UTF-8 for a `const char*`."""
    if not isinstance(value, str):
        raise type_error(name, "str", value)
    if "\0" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    return value.encode()


def optional_text(value, name):
    return None if value is None else text(value, name)


def integer(value, name, low=0, high=2**64 - 1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(name, "int", value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def flag(value, name):
    if not isinstance(value, bool):
        raise type_error(name, "bool", value)
    return 1 if value else 0


def _seconds(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(name, "a number of seconds", value)
    if value < 0 or math.isnan(value):
        raise ValueError(f"{name} must not be negative, got {value}")
    # Rounded up: a short positive wait must not become "do not wait at all".
    return min(math.ceil(value * 1000), 2**62)


def wait_ms(value, name="timeout"):
    """A wait in seconds; None waits without limit (QBUS_FOREVER)."""
    return _lib.FOREVER if value is None else _seconds(value, name)


def duration_ms(value, name):
    """A duration in seconds; None is 0, which libqbus reads as "not set"."""
    return 0 if value is None else _seconds(value, name)


def choice(value, name, table):
    if value not in table:
        names = ", ".join(repr(k) for k in table if k is not None)
        raise ValueError(f"{name} must be one of {names}, got {value!r}")
    return table[value]


class Payload:
    """A payload as (pointer argument, length), without copying when it can.

    bytes are passed as they are and writable buffers through ctypes.from_buffer; a
    read-only buffer that is not bytes (a memoryview of bytes, a read-only mmap) is copied
    once, since ctypes cannot point at read-only memory it does not own. The object keeps
    what it points at alive while it lives.
    """

    __slots__ = ("ptr", "size", "_keep")

    def __init__(self, value, name="payload"):
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            self.ptr, self.size, self._keep = value, len(value), value
            return
        try:
            view = memoryview(value)
        except TypeError:
            raise type_error(name, "bytes, str or a buffer", value) from None
        if not view.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous buffer")
        view = view.cast("B")
        self.size = view.nbytes
        if self.size == 0:
            self.ptr, self._keep = None, None
        elif view.readonly:
            self._keep = self.ptr = view.tobytes()
        else:
            self._keep = (ctypes.c_char * self.size).from_buffer(view)
            self.ptr = self._keep


def headers(value, name="headers"):
    """(array of qbus_header, count) from a dict or an iterable of (str, bytes-or-str)
    pairs; the array keeps the encoded keys and values alive."""
    if value is None:
        return None, 0
    if isinstance(value, dict):
        value = value.items()
    elif isinstance(value, (str, bytes)):
        raise type_error(name, "a dict or a list of (name, value) pairs", value)
    shape = f"{name} must be a dict or a list of (name, value) pairs"
    pairs = []
    try:
        items = iter(value)
    except TypeError:
        raise TypeError(f"{shape}, not {type(value).__name__}") from None
    for item in items:
        try:
            key, val = item
        except (TypeError, ValueError):
            raise TypeError(shape) from None
        pairs.append((text(key, f"{name} name"), Payload(val, f"{name} value")))
    if not pairs:
        return None, 0
    array = (_lib.Header * len(pairs))()
    for slot, (key, payload) in zip(array, pairs):
        slot.key = key
        slot.value = ctypes.cast(payload.ptr, ctypes.c_void_p) if payload.size else None
        slot.value_len = payload.size
    array._keep = pairs  # the Header fields point into these
    return array, len(pairs)
