#!/usr/bin/env python3
"""Throughput of send + receive of small messages from Python: qbus against Redis.

qbus: N sends of a 64-byte payload inside one Client.batch(), then receive_batch() of up
to 1,000 until all N are back. Redis (redis-py): pipelined RPUSH of one message each, in
chunks of 1,000, then LPOP with count 1,000 until all N are back. One process, one
connection each, a Unix socket each; the figure is N / (time to send and receive all).
Prints each run and the median of --runs for both, and their ratio.

The daemons: qbusd at --address, else one started here as the tests start it ($QBUS_DAEMON,
default the source tree's build/daemon/qbusd); redis-server always started here on a Unix socket
in a temporary directory, without persistence, and stopped at the end.
"""
import argparse
import os
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # qbus from the source tree when it is not installed
sys.path.insert(0, str(HERE / "tests"))

import qbus  # noqa: E402
from daemons import running_qbusd, running_redis  # noqa: E402

CHUNK = 1000


def qbus_run(client, key, payload, n):
    start = time.perf_counter()
    with client.batch():
        for _ in range(n):
            client.send(key, payload)
    got = 0
    while got < n:
        batch = client.receive_batch(key, CHUNK, timeout=10.0)
        if not batch:
            raise RuntimeError(f"qbus: {got} of {n} messages came back")
        got += len(batch)
    elapsed = time.perf_counter() - start
    failures = client.send_failures.count
    if failures:
        raise RuntimeError(f"qbus: {failures} sends failed")
    return n / elapsed


def redis_run(r, key, payload, n):
    start = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for sent in range(0, n, CHUNK):
        for _ in range(min(CHUNK, n - sent)):
            pipe.rpush(key, payload)
        pipe.execute()
    got = 0
    while got < n:
        batch = r.lpop(key, CHUNK)
        if not batch:
            raise RuntimeError(f"redis: {got} of {n} messages came back")
        got += len(batch)
    elapsed = time.perf_counter() - start
    return n / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", help="qbusd address (default: start one)")
    p.add_argument("-n", "--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--redis-server", default="redis-server")
    args = p.parse_args()
    # SIGTERM unwinds like Ctrl-C, so that the daemons started here are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import redis  # python3-redis; imported here so that --help works without it

    payload = os.urandom(args.size)
    with ExitStack() as stack:
        address = args.address or stack.enter_context(running_qbusd()).address
        redis_daemon = stack.enter_context(running_redis(args.redis_server))
        client = stack.enter_context(qbus.Client(address, name="bench"))
        r = redis.Redis(unix_socket_path=redis_daemon.socket_path)
        stack.callback(r.close)
        key = f"bench.py.{os.getpid()}"
        # A queue holds 100,000 messages by default and then blocks its producer, which
        # here is also its consumer: make room for all N, and fail rather than block.
        client.declare(key, max_messages=max(args.messages, 100_000),
                       max_bytes=max(args.messages * args.size * 2, 64 << 20),
                       overflow="reject")
        print(f"{args.messages} messages of {args.size} B, {args.runs} runs; "
              f"qbus at {address}, redis-server {r.info()['redis_version']}")
        results = {"qbus": [], "redis": []}
        for run in range(1, args.runs + 1):
            q = qbus_run(client, key, payload, args.messages)
            rd = redis_run(r, key, payload, args.messages)
            results["qbus"].append(q)
            results["redis"].append(rd)
            print(f"run {run}: qbus {q:,.0f} msg/s, redis {rd:,.0f} msg/s")
        q, rd = (statistics.median(results[k]) for k in ("qbus", "redis"))
        print(f"median: qbus {q:,.0f} msg/s, redis {rd:,.0f} msg/s, qbus/redis {q / rd:.2f}x")


if __name__ == "__main__":
    main()
