import array
import time

import pytest

import qbus

T = 10.0  # generous: a message that should come comes at once


def test_session(client):
    s = client.session
    assert s.pid > 0 and s.client_id > 0 and s.max_payload > 0
    assert s.protocol_version >= 2


def test_send_receive_bytes_str_and_buffers(client, key):
    client.send(key, b"bytes")
    client.send(key, "str \u00e9")
    client.send(key, bytearray(b"bytearray"))
    client.send(key, memoryview(b"xxread-onlyxx")[2:-2])
    client.send(key, memoryview(bytearray(b"writable")))
    client.send(key, array.array("H", [1, 2]))
    client.send(key, b"")
    got = [client.receive(key, T) for _ in range(7)]
    assert [m.payload for m in got] == [
        b"bytes", "str \u00e9".encode(), b"bytearray", b"read-only", b"writable",
        array.array("H", [1, 2]).tobytes(), b""]
    assert got[1].text == "str \u00e9"
    assert all(m.key == key and not m.in_shared_memory for m in got)
    assert got[0].sender.pid == client.session.pid
    assert got[0].sender.client_id == client.session.client_id


def test_headers(client, key):
    client.send(key, "a", headers={"content-type": "text/plain", "n": b"\x00\x01"})
    client.send(key, "b", headers=[("x", "1"), ("x", "2")])
    m = client.receive(key, T)
    assert m.headers == [("content-type", b"text/plain"), ("n", b"\x00\x01")]
    assert m.header("content-type") == b"text/plain"
    assert m.header("missing") is None
    m = client.receive(key, T)
    assert m.header("x") == b"1"
    assert m.headers == [("x", b"1"), ("x", b"2")]


def test_receive_timeout_returns_none(client, key):
    start = time.monotonic()
    assert client.receive(key, 0.2) is None
    assert time.monotonic() - start >= 0.15
    assert client.receive(key, 0) is None
    assert client.receive_batch(key, 10, 0.05) == []


def test_messages_iteration_and_batch(client, key):
    for i in range(5):
        client.send(key, str(i))
    assert [m.text for m in client.messages(key, timeout=0.2)] == ["0", "1", "2", "3", "4"]
    with client.batch():
        for i in range(100):
            client.send(key, str(i))
    got = []
    while len(got) < 100:
        batch = client.receive_batch(key, 64, T)
        assert batch
        got += [int(m.text) for m in batch]
    assert got == list(range(100))


def test_priority_ttl_delay(client, key):
    client.declare(key, priorities=10)
    client.send(key, "low", priority=1)
    client.send(key, "high", priority=9)
    client.send(key, "ttl", ttl=60)
    client.sync()
    assert [m.text for m in client.messages(key, 0.2)] == ["high", "low", "ttl"]
    client.send(key, "later", delay=0.2)
    start = time.monotonic()
    assert client.receive(key, T).text == "later"
    assert time.monotonic() - start >= 0.1


def test_declare_options_purge_delete(client, key):
    options = dict(max_messages=100, max_bytes=1 << 20, overflow="drop_oldest",
                   ack_timeout=30, max_deliveries=5, dead_letter=key + ".dead", ttl=60.0)
    client.declare(key, **options)
    client.declare(key, **options)  # the same options: a check, no conflict
    with pytest.raises(qbus.QueueConflict):
        client.declare(key, max_messages=7)
    for i in range(7):
        client.send(key, str(i))
    assert client.purge(key) == 7
    for i in range(3):
        client.send(key, str(i))
    assert client.delete_queue(key) == 3
    with pytest.raises(qbus.NoSuchQueue):
        client.purge(key)


def test_declare_durable_and_single_active_consumer(client, key):
    client.declare(key, durable=True, fsync="always")
    client.send(key, "kept", confirm=True)
    assert client.receive(key, T).text == "kept"
    client.declare(key + ".sac", single_active_consumer=True)
    with pytest.raises(qbus.SingleActiveConsumer):
        client.receive(key + ".sac", 0)


def test_declare_message_ids(client, key):
    client.declare(key, message_ids=True)
    client.send(key, "a", confirm=True)
    client.send(key, "b", confirm=True)
    ids = [client.receive(key, T).header("qbus-id") for _ in range(2)]
    assert all(i and len(i) > 17 for i in ids)
    assert ids[0] != ids[1]
    with pytest.raises(qbus.QueueConflict):
        client.declare(key)


def test_declare_rejects_unknown_and_bad_options(client, key):
    with pytest.raises(TypeError, match="'max_mesages'"):
        client.declare(key, max_mesages=1)
    with pytest.raises(ValueError, match="overflow"):
        client.declare(key, overflow="explode")
    with pytest.raises(TypeError, match="max_messages must be int, not str"):
        client.declare(key, max_messages="1")


def test_queue_full_confirmed_and_pipelined(client, key):
    client.declare(key, max_messages=1, overflow="reject")
    client.send(key, "1", confirm=True)
    with pytest.raises(qbus.QueueFull) as e:
        client.send(key, "2", confirm=True)
    assert e.value.code == 22 and e.value.name == "queue_full"
    before = client.send_failures.count
    client.send(key, "3")  # pipelined: counted, not raised
    client.sync()
    failures = client.send_failures
    assert failures.count == before + 1
    assert failures.last_code == qbus.QueueFull.code
    assert "full" in failures.last_text
