"""ctypes prototypes for libqbus's C API (client-lib/include/qbus/qbus.h).

Everything else in the package talks to the C library through `lib` and the structs
below, so this file is the only place that must change with qbus.h. Handles are opaque
pointers (c_void_p); every function returns an int code except the _free functions and
the string getters.

The options structs are extensible on the C side: each one is initialised by its
_init_size function with this file's size of it (what qbus.h's inline _init does with the
header's), which zeroes that much, sets the defaults and records the size in
`struct_size`; a later library reads only that many bytes.
"""
import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

FOREVER = -1  # QBUS_FOREVER
RECEIVE_ACK = 1
OVERFLOW = {None: 0, "reject": 1, "drop_oldest": 2, "block": 3}
FSYNC = {None: 0, "always": 1, "batch": 2, "none": 3}
NACK = {"requeue": 1, "requeue_after": 2, "dead_letter": 3}
SLOW = {None: 0, "drop_oldest": 1, "disconnect": 2, "block": 3}


class Header(Structure):
    _fields_ = [("key", c_char_p), ("value", c_void_p), ("value_len", c_size_t)]


class ClientOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("address", c_char_p),
        ("name", c_char_p),
        ("connect_timeout_ms", c_int64),
        ("token", c_char_p),
        ("tls_ca", c_char_p),
        ("tls_cert", c_char_p),
        ("tls_key", c_char_p),
        ("region_threshold", c_size_t),
        ("region_pool_bytes", c_size_t),
    ]


class SessionInfo(Structure):
    _fields_ = [
        ("pid", c_uint32),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("client_id", c_uint64),
        ("max_payload", c_uint32),
        ("protocol_version", c_uint8),
    ]


class SendOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("headers", POINTER(Header)),
        ("header_count", c_size_t),
        ("confirm", c_int),
        ("ttl_ms", c_int64),
        ("delay_ms", c_int64),
        ("priority", c_uint8),
    ]


class QueueOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("max_messages", c_uint32),
        ("max_bytes", c_uint64),
        ("overflow", c_int),
        ("ack_timeout_ms", c_int64),
        ("max_deliveries", c_uint16),
        ("dead_letter", c_char_p),
        ("dead_letter_overflow", c_int),
        ("ttl_ms", c_int64),
        ("priorities", c_uint8),
        ("dead_letter_expired", c_int),
        ("single_active_consumer", c_int),
        ("durable", c_int),
        ("fsync", c_int),
        ("message_ids", c_int64),
    ]


class DirectOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("wait_ms", c_int64),
        ("confirm", c_int),
        ("headers", POINTER(Header)),
        ("header_count", c_size_t),
    ]


class MessageInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("sender_pid", c_uint32),
        ("sender_uid", c_uint32),
        ("sender_client_id", c_uint64),
        ("request_id", c_uint64),
        ("is_request", c_int),
        ("is_direct", c_int),
        ("in_shared_memory", c_int),
        ("delivery_tag", c_uint64),
        ("delivery_count", c_uint32),
        ("redelivered", c_int),
        ("dropped_before", c_uint64),
        ("retained", c_int),
        ("header_count", c_size_t),
        ("key", c_void_p),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
    ]


class SubscribeOptions(Structure):
    _fields_ = [("struct_size", c_size_t), ("prefetch", c_uint32), ("ack", c_int)]


class SubjectOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("group", c_char_p),
        ("max_messages", c_uint32),
        ("max_bytes", c_uint64),
        ("slow", c_int),
    ]


class PublishOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("headers", POINTER(Header)),
        ("header_count", c_size_t),
        ("retain", c_int),
        ("confirm", c_int),
    ]


_P = c_void_p  # any opaque handle
_PP = POINTER(c_void_p)  # an out parameter for a handle
_I = c_int

# name: (restype, argtypes), in the order of qbus.h.
_PROTOTYPES = {
    "qbus_strerror": (c_char_p, [c_int]),
    "qbus_last_error": (c_char_p, []),
    "qbus_client_options_init_size": (_I, [POINTER(ClientOptions), c_size_t]),
    "qbus_client_connect": (_I, [POINTER(ClientOptions), _PP]),
    "qbus_client_free": (None, [_P]),
    "qbus_client_last_error": (c_char_p, [_P]),
    "qbus_client_session": (_I, [_P, POINTER(SessionInfo)]),
    "qbus_client_fd": (_I, [_P, POINTER(c_int)]),
    "qbus_client_wants_write": (_I, [_P, POINTER(c_int)]),
    "qbus_client_process": (_I, [_P]),
    "qbus_send_options_init_size": (_I, [POINTER(SendOptions), c_size_t]),
    "qbus_send": (_I, [_P, c_char_p, c_void_p, c_size_t, POINTER(SendOptions)]),
    "qbus_receive": (_I, [_P, c_char_p, c_int64, c_int, _PP]),
    "qbus_receive_batch": (
        _I, [_P, c_char_p, c_size_t, c_int64, c_int, _PP, POINTER(c_size_t)]),
    "qbus_queue_options_init_size": (_I, [POINTER(QueueOptions), c_size_t]),
    "qbus_declare": (_I, [_P, c_char_p, POINTER(QueueOptions)]),
    "qbus_purge": (_I, [_P, c_char_p, POINTER(c_uint64)]),
    "qbus_delete_queue": (_I, [_P, c_char_p, POINTER(c_uint64)]),
    "qbus_sync": (_I, [_P]),
    "qbus_send_failures": (
        _I, [_P, POINTER(c_uint64), POINTER(c_int), POINTER(c_char_p)]),
    "qbus_batch_begin": (_I, [_P]),
    "qbus_batch_end": (_I, [_P]),
    "qbus_ack": (_I, [_P, _P, c_int]),
    "qbus_ack_up_to": (_I, [_P, c_uint64, c_int]),
    "qbus_nack": (_I, [_P, _P, c_int, c_int64, c_int]),
    "qbus_extend": (_I, [_P, _P, c_int64, c_int]),
    "qbus_direct_options_init_size": (_I, [POINTER(DirectOptions), c_size_t]),
    "qbus_send_to_pid": (_I, [_P, c_uint32, c_void_p, c_size_t, POINTER(DirectOptions)]),
    "qbus_send_to_client": (_I, [_P, c_uint64, c_void_p, c_size_t, POINTER(DirectOptions)]),
    "qbus_receive_direct": (_I, [_P, c_int64, _PP]),
    "qbus_receive_direct_batch": (_I, [_P, c_size_t, c_int64, _PP, POINTER(c_size_t)]),
    "qbus_request": (
        _I, [_P, c_char_p, c_void_p, c_size_t, c_int64, POINTER(Header), c_size_t, _PP]),
    "qbus_reply": (_I, [_P, _P, c_void_p, c_size_t]),
    "qbus_message_info_init_size": (_I, [POINTER(MessageInfo), c_size_t]),
    "qbus_message_key": (_I, [_P, POINTER(c_char_p)]),
    "qbus_message_payload": (_I, [_P, POINTER(c_void_p), POINTER(c_size_t)]),
    "qbus_message_info_get": (_I, [_P, POINTER(MessageInfo)]),
    "qbus_message_header_at": (_I, [_P, c_size_t, POINTER(Header)]),
    "qbus_message_header": (_I, [_P, c_char_p, POINTER(c_void_p), POINTER(c_size_t)]),
    "qbus_message_free": (None, [_P]),
    "qbus_subscribe_options_init_size": (_I, [POINTER(SubscribeOptions), c_size_t]),
    "qbus_subject_options_init_size": (_I, [POINTER(SubjectOptions), c_size_t]),
    "qbus_subscribe": (_I, [_P, c_char_p, POINTER(SubscribeOptions), _PP]),
    "qbus_subscribe_subject": (_I, [_P, c_char_p, POINTER(SubjectOptions), _PP]),
    "qbus_subscription_next": (_I, [_P, c_int64, _PP]),
    "qbus_subscription_pending": (_I, [_P, POINTER(c_size_t)]),
    "qbus_subscription_active": (_I, [_P, POINTER(c_int)]),
    "qbus_subscription_cancel": (_I, [_P]),
    "qbus_subscription_free": (None, [_P]),
    "qbus_publish_options_init_size": (_I, [POINTER(PublishOptions), c_size_t]),
    "qbus_publish": (_I, [_P, c_char_p, c_void_p, c_size_t, POINTER(PublishOptions)]),
    "qbus_region_allocate": (_I, [_P, c_size_t, _PP]),
    "qbus_region_data": (_I, [_P, POINTER(c_void_p), POINTER(c_size_t)]),
    "qbus_region_info": (_I, [_P, POINTER(c_uint64), POINTER(c_int)]),
    "qbus_send_region": (_I, [_P, c_char_p, _P, POINTER(SendOptions)]),
    "qbus_send_region_slice": (_I, [_P, c_char_p, _P, c_size_t, c_size_t]),
    "qbus_send_region_to_pid": (_I, [_P, c_uint32, _P, POINTER(DirectOptions)]),
    "qbus_publish_region": (_I, [_P, c_char_p, _P, POINTER(PublishOptions)]),
    "qbus_region_free": (None, [_P]),
    "qbus_shared_region_create": (_I, [_P, c_char_p, c_size_t, c_uint, _PP]),
    "qbus_shared_region_attach": (_I, [_P, c_char_p, c_int, _PP]),
    "qbus_shared_region_remove": (_I, [_P, c_char_p]),
    "qbus_shared_region_data": (_I, [_P, POINTER(c_void_p), POINTER(c_size_t)]),
    "qbus_shared_region_bytes": (_I, [_P, POINTER(c_void_p), POINTER(c_size_t)]),
    "qbus_shared_region_free": (None, [_P]),
}

# Each options struct and the function that initialises it.
_INITS = {
    ClientOptions: "qbus_client_options_init_size",
    SendOptions: "qbus_send_options_init_size",
    QueueOptions: "qbus_queue_options_init_size",
    DirectOptions: "qbus_direct_options_init_size",
    MessageInfo: "qbus_message_info_init_size",
    SubscribeOptions: "qbus_subscribe_options_init_size",
    SubjectOptions: "qbus_subject_options_init_size",
    PublishOptions: "qbus_publish_options_init_size",
}


def _load():
    path = os.environ.get("QBUS_LIBRARY") or "libqbus.so.0"
    try:
        library = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"qbus: cannot load {path!r} ({e}); install libqbus or set QBUS_LIBRARY "
            "to the path of libqbus.so.0") from e
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(library, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return library


lib = _load()


def _check_struct_sizes():
    """Refuses, at import, a library whose first version of a struct is larger than this
    binding's (it would refuse every call that takes one)."""
    for struct, init_size in _INITS.items():
        o = struct()
        if getattr(lib, init_size)(ctypes.byref(o), ctypes.sizeof(struct)) != 0:
            raise ImportError(
                f"qbus: {init_size}: {lib.qbus_last_error().decode(errors='replace')}: the "
                "library does not match this qbus package")


_check_struct_sizes()


def init(struct):
    """A new options struct initialised by the library (defaults, struct_size)."""
    o = struct()
    getattr(lib, _INITS[struct])(ctypes.byref(o), ctypes.sizeof(struct))
    return o
