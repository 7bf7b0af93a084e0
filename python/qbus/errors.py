"""qbus.Error and one subclass per QBUS_E_ code.

The classes are generated from one table so that a code added to qbus.h is one line
here; callers catch the class (`except qbus.QueueFull`) or compare `.name`. A few also
derive from the built-in exception that means the same thing, so that code which knows
nothing of qbus (`except TimeoutError`, `except ConnectionError`) still does the right
thing.
"""
from ._lib import lib

# (name, value) for every QBUS_E_ code of qbus.h; the name is qbus_strerror()'s.
CODES = [
    ("bad_magic", 1),
    ("unsupported_version", 2),
    ("frame_too_large", 3),
    ("malformed_header", 4),
    ("malformed_frame", 10),
    ("unknown_frame_type", 11),
    ("handshake_required", 12),
    ("handshake_timeout", 13),
    ("unexpected_frame", 14),
    ("invalid_key", 20),
    ("payload_too_large", 21),
    ("queue_full", 22),
    ("timeout", 23),
    ("quota_exceeded", 24),
    ("too_many_receives", 25),
    ("queue_conflict", 26),
    ("too_many_queues", 27),
    ("too_many_connections", 28),
    ("queue_deleted", 29),
    ("no_such_peer", 30),
    ("peer_busy", 31),
    ("reply_expired", 32),
    ("not_inbox_owner", 33),
    ("auth_failed", 34),
    ("too_many_requests", 35),
    ("no_such_region", 36),
    ("permission_denied", 37),
    ("disconnected_by_operator", 38),
    ("no_such_queue", 39),
    ("unknown_delivery", 40),
    ("delivery_timed_out", 41),
    ("too_many_unacked", 42),
    ("no_such_subscription", 43),
    ("single_active_consumer", 44),
    ("storage_failed", 45),
    ("invalid_subject", 46),
    ("too_many_subscriptions", 47),
    ("slow_subscriber", 48),
    ("internal_error", 50),
    ("shutting_down", 51),
    ("connect_failed", 200),
    ("connection_closed", 201),
    ("protocol_violation", 202),
    ("invalid_argument", 203),
    ("io_error", 204),
    ("bad_address", 205),
    ("out_of_memory", 206),
]

# Built-in exceptions a code's class also derives from.
_ALSO = {
    "timeout": TimeoutError,
    "permission_denied": PermissionError,
    "connect_failed": ConnectionError,
    "connection_closed": ConnectionError,
    "disconnected_by_operator": ConnectionError,
}


class Error(Exception):
    """A failure libqbus reported: `code` is the QBUS_E_ value, `name` its snake_case
    name, and the message the library's text (which names the argument or gives the
    broker's reason)."""

    code = 0
    name = "unknown"

    def __init__(self, message="", code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
            self.name = lib.qbus_strerror(code).decode()


_BY_CODE = {}
__all__ = ["Error"]


def _class_name(name):
    return "".join(part.capitalize() for part in name.split("_"))


for _name, _value in CODES:
    _bases = (Error, _ALSO[_name]) if _name in _ALSO else (Error,)
    _cls = type(_class_name(_name), _bases, {
        "code": _value,
        "name": _name,
        "__module__": "qbus",
        "__doc__": f"QBUS_E_{_name.upper()} ({_value}).",
    })
    _BY_CODE[_value] = _cls
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
Error.__module__ = "qbus"


def error_for(code, text):
    """The exception for a code a C call returned (Error itself for a code not in CODES)."""
    cls = _BY_CODE.get(code)
    return cls(text) if cls else Error(text, code)


def check(code, client=None):
    """Raises the exception for a non-zero code, with the text of the failure: the
    client's latest when the call had a client, else the calling thread's."""
    if code == 0:
        return
    text = lib.qbus_client_last_error(client) if client else None
    if not text:
        text = lib.qbus_last_error()
    raise error_for(code, (text or b"").decode("utf-8", "replace"))
