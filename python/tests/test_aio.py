import asyncio
import threading

import pytest

import qbus
import qbus.aio

T = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_send_and_receive(qbusd, key):
    async def main():
        async with qbus.aio.Client(qbusd) as c:
            assert await c.receive(key, timeout=0.1) is None
            await c.send(key, "hello", headers={"h": "1"})
            m = await c.receive(key, timeout=T)
            assert (m.text, m.header("h")) == ("hello", b"1")
            assert m.delivery_tag != 0  # taken in ack mode, and acked on the way out
            assert c.session.client_id > 0
    run(main())
    with qbus.Client(qbusd) as c:  # nothing left behind, nothing unsettled
        assert c.receive(key, 0.1) is None


def test_receive_waits_on_the_loop(qbusd, key):
    """A pending receive leaves the loop free: another task runs and feeds it."""
    async def main():
        async with qbus.aio.Client(qbusd) as c:
            waiting = asyncio.ensure_future(c.receive(key, timeout=T))
            await asyncio.sleep(0)  # let it register
            with qbus.Client(qbusd) as feeder:
                feeder.send(key, "from another client")
            assert (await waiting).text == "from another client"
    run(main())


def test_many_concurrent_receives(qbusd, key):
    n = 200

    async def main():
        async with qbus.aio.Client(qbusd, prefetch=4) as c:
            receives = asyncio.gather(*(c.receive(key, timeout=T) for _ in range(n)))
            others = asyncio.gather(*(c.receive(key + ".other", timeout=T) for _ in range(3)))
            for i in range(n):
                await c.send(key, str(i))
            for i in range(3):
                await c.send(key + ".other", f"o{i}")
            got = await receives
            assert sorted(int(m.text) for m in got) == list(range(n))
            assert [m.text for m in await others] == ["o0", "o1", "o2"]
    run(main())


def test_subscribe_subject(qbusd, key):
    async def main():
        async with qbus.aio.Client(qbusd) as c:
            async with c.subscribe_subject(f"{key}.*") as sub:
                await c.publish(f"{key}.retained", "kept", retain=True, confirm=True)
                with qbus.Client(qbusd) as pub:
                    for i in range(5):
                        pub.publish(f"{key}.s{i}", str(i))
                got = []
                async for m in sub:
                    got.append((m.key, m.text))
                    if len(got) == 6:
                        break
                assert got[0] == (f"{key}.retained", "kept")
                assert got[1:] == [(f"{key}.s{i}", str(i)) for i in range(5)]
                assert await sub.next(timeout=0.05) is None
                await sub.cancel()
                assert [m async for m in sub] == []
    run(main())


def test_request_does_not_block_the_loop(qbusd, key):
    """The responder answers only after a task on the loop ran while the request was in
    flight: a request that blocked the loop would time out instead."""
    subscribed, loop_ran = threading.Event(), threading.Event()

    def serve(loop, got_request):
        with qbus.Client(qbusd) as server, server.subscribe(key, ack=False) as sub:
            subscribed.set()
            m = sub.next(T)
            loop.call_soon_threadsafe(got_request.set_result, m.text)
            assert loop_ran.wait(T)
            server.reply(m, m.text.upper())
            server.sync()

    async def main():
        loop = asyncio.get_running_loop()
        got_request = loop.create_future()
        t = threading.Thread(target=serve, args=(loop, got_request))
        t.start()
        assert await loop.run_in_executor(None, subscribed.wait, T)
        async with qbus.aio.Client(qbusd) as c:
            request = asyncio.ensure_future(c.request(key, "ping", timeout=T))
            assert await got_request == "ping"
            loop_ran.set()
            assert (await request).text == "PING"
        t.join(T)
    run(main())


def test_dropped_connection_fails_waiting_receives(own_qbusd, key):
    async def main():
        async with qbus.aio.Client(own_qbusd.address) as c:
            waiting = asyncio.ensure_future(c.receive(key, timeout=T))
            await asyncio.sleep(0)
            own_qbusd.kill()
            with pytest.raises((qbus.ConnectionClosed, qbus.IoError)):
                await waiting
            with pytest.raises((qbus.ConnectionClosed, qbus.IoError)):
                await c.send(key, "x")
    run(main())


def test_cancelled_receive_loses_nothing(qbusd, key):
    async def main():
        async with qbus.aio.Client(qbusd) as c:
            first = asyncio.ensure_future(c.receive(key, timeout=T))
            await asyncio.sleep(0)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await c.send(key, "kept")
            assert (await c.receive(key, timeout=T)).text == "kept"
    run(main())
