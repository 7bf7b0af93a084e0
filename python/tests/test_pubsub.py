import pytest

import qbus

T = 10.0


def test_wildcards(qbusd, client, key):
    one = client.subscribe_subject(f"{key}.*.temp")
    many = client.subscribe_subject(f"{key}.>")
    with qbus.Client(qbusd) as pub:
        pub.publish(f"{key}.kitchen.temp", "21.5", headers={"unit": "C"})
        pub.publish(f"{key}.temp", "no match for *")
        pub.publish(f"{key}.a.b.temp", "no match for *", confirm=True)
    m = one.next(T)
    assert (m.key, m.text, m.header("unit")) == (f"{key}.kitchen.temp", "21.5", b"C")
    assert one.next(0) is None
    assert [many.next(T).key for _ in range(3)] == [
        f"{key}.kitchen.temp", f"{key}.temp", f"{key}.a.b.temp"]
    assert many.pending == 0
    one.close()
    many.close()


def test_retained_reaches_later_subscribers(client, key):
    client.publish(f"{key}.colour", "blue", retain=True, confirm=True)
    with client.subscribe_subject(f"{key}.>") as sub:
        m = sub.next(T)
        assert m.text == "blue" and m.retained and m.dropped_before == 0
        client.publish(f"{key}.colour", "red")
        live = sub.next(T)
        assert live.text == "red" and not live.retained
    client.publish(f"{key}.colour", "", retain=True, confirm=True)  # clears it


def test_iteration_ends_when_cancelled(client, key):
    sub = client.subscribe_subject(f"{key}.x")
    client.publish(f"{key}.x", "1", confirm=True)
    client.publish(f"{key}.x", "2", confirm=True)
    sub.cancel()
    assert [m.text for m in sub] == ["1", "2"]
    assert not sub.active
    sub.close()


def test_invalid_subject(client):
    with pytest.raises(qbus.InvalidSubject, match="empty token"):
        client.subscribe_subject("a..b")
    with pytest.raises(ValueError, match="slow"):
        client.subscribe_subject("a.b", slow="sometimes")
