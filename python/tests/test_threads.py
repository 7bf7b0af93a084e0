import gc
import threading

T = 10.0
ROUNDS = 500


def test_a_client_shared_by_two_threads_is_serialised(client, key):
    """Each thread sends and receives on its own key through the same Client; the lock
    inside each call keeps the connection's frames and answers whole."""
    errors = []
    start = threading.Barrier(2)

    def work(name):
        try:
            start.wait(T)
            k = f"{key}.{name}"
            for i in range(ROUNDS):
                client.send(k, f"{name}{i}", headers={"i": str(i)})
                m = client.receive(k, T)
                assert m is not None and m.text == f"{name}{i}" and m.header("i") == str(i).encode()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert client.send_failures.count == 0



def test_collected_subscription_waits_for_the_lock_not_the_collector(client, key):
    """A subscription collected while its Client is busy (here: the lock held, as by a
    thread in a long receive) is freed by the Client's next call, not by blocking the
    collecting thread."""
    sub = client.subscribe(key, prefetch=1)
    core = client._core
    with core.lock:
        del sub
        gc.collect()  # returns at once
        assert len(core.pending) == 1
    client.send(key, "after")  # this call frees it: cancelled, it takes nothing more
    assert not core.pending
    assert client.receive(key, T).text == "after"
