"""qbus: Python bindings for libqbus, the client library of the qbus message broker.

    import qbus
    with qbus.Client() as c:
        c.send("jobs", "hello")
        m = c.receive("jobs", timeout=1.0)
        print(m.text, "from pid", m.sender.pid)

The bindings load libqbus.so.0 through ctypes ($QBUS_LIBRARY names another path) and
follow its C API, <qbus/qbus.h>: timeouts are seconds (None waits without limit), every
failure raises a subclass of qbus.Error, and `qbus.aio` drives a Client from asyncio.
A Client is not thread-safe in C; here each call holds the Client's lock, so a Client
shared by threads is serialised rather than broken (see qbus.client).
"""
from . import errors as _errors
from .client import Client, SendFailures, Session
from .errors import Error
from .message import Message, Sender
from .regions import Region, SharedRegion
from .subscription import Subscription

# One exception class per code: qbus.QueueFull, qbus.Timeout, qbus.ConnectionClosed, ...
globals().update({name: getattr(_errors, name) for name in _errors.__all__})

FOREVER = None  # a timeout that waits without limit
__version__ = "0.1.0"
__all__ = ["Client", "Message", "Sender", "Session", "SendFailures", "Subscription",
           "Region", "SharedRegion", "FOREVER"] + list(_errors.__all__)
