"""Links that heal, against a real Redis behind a loopback proxy that black-holes traffic (a
half-open link: the kernel acknowledges, nothing comes back, nothing is closed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnout.common.errors import RpcTimeout, RpcUnavailable
from turnout.common.keys import Keys
from turnout.common.links import Backoff, LinkOptions, first_to_answer, make_redis
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import ROUTE_V1
from turnout.common.rpc.resp import RespLink
from turnout.common.rpc.server import RpcContext, RpcServer
from turnout.common.rpc.transport import BatchPop
from turnout.common.schemas.route import PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.devstack.blackhole import BlackHoleProxy

FAST = LinkOptions(connect_timeout_s=0.5, command_timeout_s=0.4, backoff_base_s=0.02, backoff_max_s=0.1)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[BlackHoleProxy]:
    port = urlparse(redis_url).port
    assert port is not None
    p = BlackHoleProxy("127.0.0.1", port)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def via(proxy: BlackHoleProxy) -> str:
    return f"redis://{proxy.url_host_port}/0"


async def test_an_unanswered_command_drops_the_link_and_the_next_one_gets_a_fresh_connection(
    proxy: BlackHoleProxy,
) -> None:
    link = RespLink(via(proxy), link=FAST)
    try:
        assert await link.execute("PING") == b"PONG"
        proxy.blackhole()
        t0 = time.monotonic()
        with pytest.raises(RedisTimeoutError, match=r"did not answer within 0.4s; link dropped"):
            await link.execute("PING")
        assert 0.35 < time.monotonic() - t0 < 1.0
        assert link.live() is None  # the dead connection is gone, not kept for the next caller
        proxy.heal()
        assert await link.execute("PING") == b"PONG"
        assert proxy.connections == 2
    finally:
        link.close()


async def test_a_blocking_pop_on_a_dead_link_is_bounded_by_its_timeout_plus_the_command_timeout(
    proxy: BlackHoleProxy, keys: Keys
) -> None:
    link = RespLink(via(proxy), link=FAST)
    try:
        conn = await link.connection()
        proxy.blackhole()
        t0 = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await BatchPop(8).pop(conn, [keys.rpc_queue("nothing", 1)], timeout=1)
        assert 1.3 < time.monotonic() - t0 < 2.2  # 1 s of blocking + 0.4 s, checked every 0.1 s
    finally:
        link.close()


async def test_redis_py_clients_drop_a_connection_whose_read_timed_out(proxy: BlackHoleProxy) -> None:
    client = make_redis(via(proxy), FAST)
    try:
        assert await client.ping() is True
        proxy.blackhole()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        proxy.heal()
        assert await client.ping() is True  # on a new connection
        assert proxy.connections == 2
    finally:
        await client.aclose()


async def test_a_connection_opened_into_a_dead_path_does_not_hold_the_clients_other_commands(
    proxy: BlackHoleProxy,
) -> None:
    # redis-py's default pool opens a connection (and reads its CLIENT SETINFO reply) under the
    # pool's lock: one new connection into a dead path held every other command for its timeout
    client = make_redis(via(proxy), LinkOptions(connect_timeout_s=0.5, command_timeout_s=3.0))
    try:
        proxy.blackhole()
        stuck = asyncio.create_task(client.ping())  # a new connection, accepted, never answered
        await asyncio.sleep(0.2)
        proxy.heal()
        t0 = time.monotonic()
        assert await client.ping() is True
        assert time.monotonic() - t0 < 1.0  # not behind the stuck one's 3 s
        await asyncio.gather(stuck, return_exceptions=True)  # timed out (and retried, once)
    finally:
        await client.aclose()


async def test_a_timeout_drops_the_idle_connections_that_went_the_same_way(proxy: BlackHoleProxy) -> None:
    client = make_redis(via(proxy), LinkOptions(connect_timeout_s=0.5, command_timeout_s=1.5))
    try:
        gate = asyncio.Event()

        async def held() -> None:  # three connections at once, then idle in the pool
            await client.ping()
            await gate.wait()

        tasks = [asyncio.create_task(held()) for _ in range(3)]
        await asyncio.sleep(0.2)
        gate.set()
        await asyncio.gather(*tasks)
        assert proxy.connections == 3
        proxy.blackhole()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        proxy.heal()
        await asyncio.sleep(0.05)  # the idle ones are disconnected in the background
        t0 = time.monotonic()
        assert await asyncio.gather(*(client.ping() for _ in range(3))) == [True] * 3
        assert time.monotonic() - t0 < 1.0  # none of them waited out 1.5 s on a dead connection
    finally:
        await client.aclose()


async def test_first_to_answer_hedges_a_silent_attempt_and_closes_the_losers() -> None:
    started: list[float] = []
    discarded: list[int] = []
    t0 = time.monotonic()

    async def attempt() -> int:
        n = len(started)
        started.append(time.monotonic() - t0)
        await asyncio.sleep(10 if n == 0 else 0.01)  # the first went into a black hole
        return n

    assert await first_to_answer(attempt, hedge_s=0.1, timeout_s=2.0, discard=discarded.append) == 1
    assert len(started) == 2 and 0.08 < started[1] < 0.5
    assert time.monotonic() - t0 < 0.6 and discarded == []

    async def refused() -> int:
        started.append(0.0)
        raise ConnectionRefusedError("refused")

    started.clear()
    with pytest.raises(ConnectionRefusedError):  # failing fast starts no other attempt
        await first_to_answer(refused, hedge_s=0.01, timeout_s=1.0)
    assert len(started) == 1

    async def silent() -> int:
        started.append(0.0)
        await asyncio.sleep(10)
        return 0

    started.clear()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await first_to_answer(silent, hedge_s=0.1, timeout_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 0.8 and 2 <= len(started) <= 4  # 0.3 s in all


async def test_first_to_answer_replaces_an_attempt_that_timed_out_at_once() -> None:
    """An attempt that times out inside a black hole is silence, not a refusal: the path may have
    healed meanwhile, so another attempt starts in its place instead of the whole call failing
    (and the caller backing off) once the attempts already pending time out too."""
    started: list[float] = []
    t0 = time.monotonic()

    async def attempt() -> int:
        n = len(started)
        started.append(time.monotonic() - t0)
        if n < 2:  # the first two went into the black hole and time out there
            await asyncio.sleep(0.05)
            raise RedisTimeoutError("unanswered")
        return n

    assert await first_to_answer(attempt, hedge_s=1.0, timeout_s=2.0) == 2
    assert len(started) == 3 and time.monotonic() - t0 < 0.5  # no hedge interval waited

    async def connect_timed_out() -> int:  # RespConnection.open's connect timeout, as it raises it
        started.append(0.0)
        if len(started) == 1:
            try:
                raise TimeoutError
            except TimeoutError as exc:
                raise RedisConnectionError("connecting to Redis timed out") from exc
        return 7

    started.clear()
    assert await first_to_answer(connect_timed_out, hedge_s=1.0, timeout_s=2.0) == 7


def test_back_off_is_jittered_and_capped() -> None:
    b = Backoff(0.1, 1.0)
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        ceiling = min(1.0, 0.1 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    b.reset()
    assert 0.05 <= b.next() <= 0.1


@pytest.fixture
async def half_open_scorer(proxy: BlackHoleProxy, redis_url: str, keys: Keys) -> AsyncIterator[RpcServer]:
    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        return RouteReplyV1(candidates=[], analysis=PromptAnalysisV1(signals=[req.text]))

    server = RpcServer(via(proxy), keys, replica_id="behind-proxy", registry=CollectorRegistry(), link=FAST)
    server.register(ROUTE_V1, handler)
    task = asyncio.create_task(server.serve())
    try:
        yield server
    finally:
        await server.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_scorer_on_a_half_open_link_stops_looking_alive_and_serves_again_once_it_heals(
    proxy: BlackHoleProxy, redis_url: str, keys: Keys, half_open_scorer: RpcServer
) -> None:
    async with RpcClient(redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0.05, registry=CollectorRegistry()) as c:

        async def answers() -> bool:
            try:
                return (await c.call(ROUTE_V1, RouteRequestV1(text="x"), timeout=0.3)).analysis.signals == ["x"]
            except (RpcTimeout, RpcUnavailable):
                return False

        await _eventually(answers, 5.0)
        proxy.blackhole()
        t0 = time.monotonic()
        # its pops stop completing: within the heartbeat TTL (3 s) it is no longer alive, so
        # callers fall back at once instead of waiting out their deadline on a dead consumer
        await _eventually(lambda: _sync(not c.server_alive(ROUTE_V1)), 6.0)
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(RpcUnavailable):
            await c.call(ROUTE_V1, RouteRequestV1(text="y"), timeout=0.3)
        proxy.heal()
        t1 = time.monotonic()
        await _eventually(answers, 5.0)
        assert time.monotonic() - t1 < 2.0  # its dead links were dropped already: it reconnects at once


async def _sync(value: bool) -> bool:
    return value


async def _eventually(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > end:
            raise AssertionError("not within the time allowed")
        await asyncio.sleep(0.05)


async def test_a_reconnect_tried_during_the_black_hole_does_not_hold_the_scorer_back_once_it_heals(
    proxy: BlackHoleProxy, redis_url: str, keys: Keys
) -> None:
    # a long connect timeout: alone, the attempt in flight at the heal would sit out its 3 s
    slow_open = LinkOptions(connect_timeout_s=3.0, command_timeout_s=0.4, backoff_base_s=0.02, backoff_max_s=0.1)

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        return RouteReplyV1(candidates=[], analysis=PromptAnalysisV1(signals=[req.text]))

    server = RpcServer(via(proxy), keys, replica_id="hedged", registry=CollectorRegistry(), link=slow_open)
    server.register(ROUTE_V1, handler)
    task = asyncio.create_task(server.serve())
    try:
        async with RpcClient(
            redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0.05, registry=CollectorRegistry()
        ) as c:

            async def answers() -> bool:
                try:
                    return (await c.call(ROUTE_V1, RouteRequestV1(text="x"), timeout=0.3)).analysis.signals == ["x"]
                except (RpcTimeout, RpcUnavailable):
                    return False

            await _eventually(answers, 5.0)
            proxy.blackhole()
            await _eventually(lambda: _sync(not server.connected), 5.0)
            await asyncio.sleep(1.0)  # reconnect attempts are under way, into the black hole
            proxy.heal()
            t1 = time.monotonic()
            await _eventually(answers, 5.0)
            assert time.monotonic() - t1 < 1.0
    finally:
        await server.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
