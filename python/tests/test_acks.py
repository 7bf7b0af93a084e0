import pytest

import qbus

T = 10.0


def test_ack_removes_and_nack_redelivers(client, key):
    client.send(key, "job")
    m = client.receive(key, T, ack=True)
    assert m.delivery_tag != 0 and m.delivery_count == 1 and not m.redelivered
    client.nack(m)  # requeue: back at the head of the queue at once
    again = client.receive(key, T, ack=True)
    assert again.text == "job"
    assert again.redelivered and again.delivery_count == 2
    client.ack(again, confirm=True)
    assert client.receive(key, 0.1) is None


def test_closing_an_ack_receiver_gives_the_message_back(qbusd, client, key):
    client.send(key, "held")
    with qbus.Client(qbusd) as other:
        assert other.receive(key, T, ack=True).text == "held"
    m = client.receive(key, T)
    assert m.text == "held" and m.redelivered


def test_nack_dead_letter_and_requeue_after(client, key):
    dead = key + ".dead"
    client.declare(key, dead_letter=dead)
    client.send(key, "bad")
    client.nack(client.receive(key, T, ack=True), action="dead_letter", confirm=True)
    d = client.receive(dead, T)
    assert d.text == "bad" and d.header("qbus-dead-reason") == b"rejected"

    client.send(key, "retry")
    client.nack(client.receive(key, T, ack=True), action="requeue_after", delay=0.05)
    m = client.receive(key, T, ack=True)
    assert m.text == "retry" and m.redelivered
    client.extend(m, 30, confirm=True)
    client.ack(m, confirm=True)
    with pytest.raises(ValueError, match="action"):
        client.nack(m, action="drop")


def test_ack_up_to_and_unknown_delivery(client, key):
    for i in range(3):
        client.send(key, str(i))
    msgs = client.receive_batch(key, 3, T, ack=True)
    assert [m.text for m in msgs] == ["0", "1", "2"]
    client.ack_up_to(msgs[-1].delivery_tag, confirm=True)
    with pytest.raises(qbus.UnknownDelivery):
        client.ack(msgs[0], confirm=True)


def test_queue_subscription_with_prefetch(client, key):
    with client.subscribe(key, prefetch=2) as sub:
        assert sub.active and sub.key == key
        for i in range(5):
            client.send(key, str(i))
        got = []
        for _ in range(5):
            m = sub.next(T)
            got.append(m.text)
            client.ack(m)
        assert got == ["0", "1", "2", "3", "4"]
        assert sub.next(0) is None
        sub.cancel()
        assert not sub.active
        assert list(sub) == []  # cancelled: iteration ends
    with pytest.raises(ValueError, match="closed"):
        sub.next(0)
