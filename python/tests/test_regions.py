import ctypes
import gc
import os

import pytest

import qbus
from qbus._lib import lib

T = 10.0


def c_payload_address(message):
    """Where libqbus says the message's payload is."""
    data, size = ctypes.c_void_p(), ctypes.c_size_t()
    assert lib.qbus_message_payload(message._handle.ptr, ctypes.byref(data),
                                    ctypes.byref(size)) == 0
    return data.value, size.value


def test_region_message_is_a_view_of_the_mapping(qbusd, client, key):
    size = 1 << 20
    content = os.urandom(size)
    r = client.allocate_region(size)
    assert len(r.data) == size and not r.data.readonly and not r.sealed and r.id != 0
    r.data[:] = content
    client.send_region(key, r, headers={"kind": "blob"})
    assert r.id == 0 and r.sealed  # given up, and sealed by the send
    with pytest.raises(ValueError, match="sent"):
        r.data
    r.close()

    with qbus.Client(qbusd) as receiver:
        m = receiver.receive(key, T)
    assert m.in_shared_memory and m.header("kind") == b"blob"
    assert isinstance(m.payload, memoryview) and m.payload.readonly
    assert m.payload == content  # identical bytes
    address, length = c_payload_address(m)
    assert ctypes.addressof(m.payload.obj) == address and length == size  # no copy

    # The view keeps the message, and so the mapping, alive after the Message goes.
    view = m.payload[10:20]
    del m
    gc.collect()
    assert bytes(view) == content[10:20]


def test_a_pooled_client_sends_fresh_regions(qbusd, key):
    size = 1 << 20
    with qbus.Client(qbusd, region_pool_bytes=4 * size) as c:
        for i in range(4):
            r = c.allocate_region(size)
            assert bytes(r.data[:64]) == bytes(64) and bytes(r.data[-64:]) == bytes(64)
            r.data[:4] = b"pool"
            r.data[-1:] = bytes([i])
            c.send_region(key, r)
            r.close()
        for i in range(4):
            m = c.receive(key, T)
            assert m.in_shared_memory and m.payload[:4] == b"pool" and m.payload[-1] == i
            m.close()
    with pytest.raises(TypeError, match="region_pool_bytes"):
        qbus.Client(qbusd, region_pool_bytes="1M")


def test_large_send_goes_through_a_region(client, key):
    payload = b"z" * 200_000  # over the 64 KiB region threshold
    client.send(key, payload)
    m = client.receive(key, T)
    assert m.in_shared_memory and m.payload == payload and m.text == payload.decode()
    m.close()


def test_a_live_view_blocks_the_send(client, key):
    r = client.allocate_region(4096)
    part = r.data[:16]
    part[:] = b"0123456789abcdef"
    with pytest.raises(BufferError, match="still alive"):
        client.send_region(key, r)
    assert bytes(r.data[:4]) == b"0123"  # refused before anything happened
    del part
    client.send_region(key, r)
    assert bytes(client.receive(key, T).payload[:16]) == b"0123456789abcdef"


def test_slices_and_publish_of_regions(client, key):
    r = client.allocate_region(8192)
    r.data[:8] = b"aaaabbbb"
    client.send_region_slice(key, r, 0, 4)
    assert r.sealed and r.id != 0  # kept for more slices
    client.send_region_slice(key, r, 4, 4)
    assert [bytes(m.payload) for m in client.receive_batch(key, 2, T)] == [b"aaaa", b"bbbb"]
    r.close()

    with client.subscribe_subject(f"{key}.frames") as sub:
        r = client.allocate_region(4096)
        r.data[:5] = b"frame"
        client.publish_region(f"{key}.frames", r)
        m = sub.next(T)
        assert m.in_shared_memory and bytes(m.payload[:5]) == b"frame"


def test_shared_regions(qbusd, client, key):
    region = client.create_shared_region(key, 4096, mode=0o600)
    assert region.writable and len(region.data) == 4096
    region.data[:5] = b"hello"
    with qbus.Client(qbusd) as other:
        reader = other.attach_shared_region(key, writable=False)
        assert reader.data.readonly and bytes(reader.data[:5]) == b"hello"
        region.data[:5] = b"HELLO"  # the same pages
        assert bytes(reader.data[:5]) == b"HELLO"
        reader.close()
    with pytest.raises(qbus.QueueConflict):
        client.create_shared_region(key, 4096)
    client.remove_shared_region(key)
    with pytest.raises(qbus.NoSuchRegion):
        client.attach_shared_region(key)
    assert bytes(region.data[:5]) == b"HELLO"  # still mapped here
    region.close()
