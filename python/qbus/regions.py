"""Region and SharedRegion: shared memory handed out by the broker.

`data` is a memoryview of the mapping itself. Each view keeps its region's handle alive,
so closing or collecting the Python object never unmaps memory a view still shows.
Sending a Region is the exception: libqbus unmaps the writable mapping before it seals
the region, and no Python object can stop that. So a send first releases the Region's own
view and refuses (BufferError) while anything else still holds the mapping, a slice of
`data` say, since writing through it afterwards would crash the process.
"""
import ctypes
import sys

from ._lib import lib
from .errors import check
from .message import _Owned, _view


class Region:
    """A writable region of `size` bytes: fill `data`, then send it with
    `Client.send_region()` or `publish_region()`, which gives it up."""

    def __init__(self, client, ptr):
        self._client = client
        self._handle = _Owned(ptr, client._core.deferred(lib.qbus_region_free))
        self._array = self._view = None
        self.size = 0
        self._refresh()

    def _refresh(self):
        """Maps `data` onto what libqbus says the region's bytes are now (none once sent)."""
        data, size = ctypes.c_void_p(), ctypes.c_size_t()
        if self._handle.ptr:
            check(lib.qbus_region_data(self._handle.ptr, ctypes.byref(data), ctypes.byref(size)))
        if not data.value:
            self._array = self._view = None
            return
        self.size = size.value
        self._array = (ctypes.c_ubyte * size.value).from_address(data.value)
        self._array._owner = self._handle
        self._base_refs = self._array_refs()  # before any view holds the array
        self._view = memoryview(self._array).cast("B")

    def _array_refs(self):
        return sys.getrefcount(self._array)

    def _give_up_view(self):
        """Before a send: nothing may use the writable mapping once libqbus unmaps it."""
        if self._view is None:
            return
        view, self._view = self._view, None
        try:
            view.release()
        except BufferError:
            self._view = view
            raise BufferError("region.data is exported (to numpy, say): release that "
                              "before sending the region") from None
        if self._array_refs() > self._base_refs:
            self._view = memoryview(self._array).cast("B")
            raise BufferError("a view of region.data (a slice, say) is still alive: "
                              "release it before sending the region")

    def _ptr(self):
        if not self._handle.ptr:
            raise ValueError("operation on a closed qbus.Region")
        return self._handle.ptr

    @property
    def data(self):
        """The writable bytes; ValueError once the region was sent."""
        if self._view is None:
            raise ValueError("the region was sent or closed: its memory is gone")
        return self._view

    @property
    def id(self):
        """The broker's id for the region (0 once given up)."""
        rid = ctypes.c_uint64()
        with self._client._core.lock:  # a send on another thread changes the handle
            check(lib.qbus_region_info(self._ptr(), ctypes.byref(rid), None))
        return rid.value

    @property
    def sealed(self):
        """True once sent: immutable from then on."""
        flag = ctypes.c_int()
        with self._client._core.lock:
            check(lib.qbus_region_info(self._ptr(), None, ctypes.byref(flag)))
        return bool(flag.value)

    def close(self):
        """Frees the region (once no view of `data` is left)."""
        self._view = self._array = None
        self._handle = _Owned(None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.size

    def __repr__(self):
        state = "unsent" if self._view is not None else "sent or closed"
        return f"<qbus.Region {self.size} bytes {state}>"


class SharedRegion:
    """A named region several processes map at once (Client.create_shared_region,
    attach_shared_region). `data` is writable when attached writable, else read-only."""

    def __init__(self, client, ptr, key):
        self._handle = _Owned(ptr, client._core.deferred(lib.qbus_shared_region_free))
        self.key = key
        data, size = ctypes.c_void_p(), ctypes.c_size_t()
        check(lib.qbus_shared_region_data(ptr, ctypes.byref(data), ctypes.byref(size)))
        self.writable = bool(data.value)
        if not self.writable:
            check(lib.qbus_shared_region_bytes(ptr, ctypes.byref(data), ctypes.byref(size)))
        self.size = size.value
        self._view = _view(data.value, size.value, self._handle, self.writable)

    @property
    def data(self):
        if self._view is None:
            raise ValueError("operation on a closed qbus.SharedRegion")
        return self._view

    def close(self):
        """Detaches (once no view of `data` is left); the region lives on for others."""
        self._view = None
        self._handle = _Owned(None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        return self.size

    def __repr__(self):
        mode = "writable" if self.writable else "read-only"
        return f"<qbus.SharedRegion {self.key!r} {self.size} bytes {mode}>"
