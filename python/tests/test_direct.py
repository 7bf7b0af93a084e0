import os
import threading

import pytest

import qbus

T = 10.0


def test_request_reply_with_a_responder_thread(qbusd, client, key):
    ready = threading.Event()
    errors = []

    def serve():
        try:
            with qbus.Client(qbusd, name="responder") as server:
                with server.subscribe(key, ack=False) as sub:
                    ready.set()  # subscribed: requests from now on reach it
                    for _ in range(3):
                        m = sub.next(T)
                        assert m.is_request
                        server.reply(m, "re: " + m.text)
                    server.sync()
        except BaseException as e:  # reported by the test thread
            errors.append(e)
            ready.set()

    t = threading.Thread(target=serve)
    t.start()
    assert ready.wait(T)
    for i in range(3):
        r = client.request(key, f"q{i}", timeout=T, headers={"trace": "1"})
        assert r is not None and r.text == f"re: q{i}"
        assert r.key == "" and not r.is_request
    t.join(T)
    assert not errors, errors


def test_request_without_responder_times_out(client, key):
    assert client.request(key, "anyone?", timeout=0.2) is None


def test_reply_needs_a_message(client):
    with pytest.raises(TypeError, match="request_message must be qbus.Message, not str"):
        client.reply("not a message", b"x")


def test_direct_messages_by_pid_and_client_id(qbusd, client):
    with qbus.Client(qbusd) as receiver:
        assert receiver.receive_direct(0) is None  # claims this process's inbox
        client.send_to_pid(os.getpid(), "by pid", headers={"h": "v"})
        m = receiver.receive_direct(T)
        assert m.text == "by pid" and m.is_direct and m.header("h") == b"v"
        assert m.sender.client_id == client.session.client_id
        client.send_to_client(receiver.session.client_id, b"by id", confirm=True)
        assert receiver.receive_direct(T).payload == b"by id"
        for text in ("d1", "d2", "d3"):
            client.send_to_pid(os.getpid(), text)
        assert [m.text for m in receiver.receive_direct_batch(4, T)] == ["d1", "d2", "d3"]
        assert receiver.receive_direct_batch(4, 0.05) == []


def test_direct_to_a_missing_peer(client):
    with pytest.raises(qbus.NoSuchPeer):
        client.send_to_client(2**62, "nobody", confirm=True)
