"""The scorer RPC over a real Redis: deadlines, competing replicas, reconnects, heartbeats, errors."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import Field
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from turnout.common.errors import (
    DeadlineExceeded,
    MalformedRequest,
    MethodNotFound,
    RemoteError,
    RpcTimeout,
    RpcUnavailable,
)
from turnout.common.keys import Keys
from turnout.common.links import LinkOptions
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import ROUTE_V1, RpcMethod
from turnout.common.rpc.envelope import encode_request
from turnout.common.rpc.resp import RespConnection, RespLink
from turnout.common.rpc.server import RpcContext, RpcServer
from turnout.common.rpc.transport import Publisher, PushExpire
from turnout.common.schemas import WireModel
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.devstack.infra import Instance, start_redis

pytestmark = pytest.mark.integration

RUN_DIR = Path(__file__).resolve().parents[2] / ".run" / "test"
Handler = Callable[[RouteRequestV1, RpcContext], Awaitable[RouteReplyV1 | bytes]]


def reply_for(req: RouteRequestV1, replica: str = "a") -> RouteReplyV1:
    return RouteReplyV1(
        candidates=[CandidateV1(model="llama3.2:3b", backend=replica, upstream_model="llama3.2:3b", score=1.0)],
        analysis=PromptAnalysisV1(category="general", signals=[req.text]),
    )


async def echo(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
    return reply_for(req)


@asynccontextmanager
async def serving(
    redis_url: str, keys: Keys, handler: Handler = echo, *, replica: str = "a", max_concurrency: int = 64
) -> AsyncIterator[tuple[RpcServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    server = RpcServer(redis_url, keys, replica_id=replica, max_concurrency=max_concurrency, registry=registry)
    server.register(ROUTE_V1, handler)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.connected, what=f"server {replica} connected")
        yield server, registry
    finally:
        await server.stop()
        await asyncio.wait_for(task, timeout=10)


@asynccontextmanager
async def client(redis_url: str, keys: Keys, **kw: object) -> AsyncIterator[tuple[RpcClient, CollectorRegistry]]:
    registry = CollectorRegistry()
    c = RpcClient(redis_url, keys, registry=registry, **kw)  # type: ignore[arg-type]
    await c.start()
    try:
        yield c, registry
    finally:
        await c.close()


async def wait_until(cond: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- basics ------------------------------------------------------------------------------


async def test_call_returns_the_typed_reply_and_carries_the_request_id(redis_url: str, keys: Keys) -> None:
    seen: list[RpcContext] = []

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        seen.append(ctx)
        return reply_for(req)

    async with serving(redis_url, keys, handler) as (server, sreg), client(redis_url, keys) as (c, creg):
        reply = await c.call(ROUTE_V1, RouteRequestV1(text="hello"), timeout=2.0, request_id="req-42")
    assert reply == reply_for(RouteRequestV1(text="hello"))
    assert [ctx.request_id for ctx in seen] == ["req-42"]
    assert 0 < seen[0].remaining < 2.0
    assert creg.get_sample_value("turnout_rpc_calls_total", {"method": "scorer.route.v1", "outcome": "ok"}) == 1
    assert sreg.get_sample_value("turnout_rpc_served_total", {"method": "scorer.route.v1", "outcome": "ok"}) == 1


async def test_a_handler_may_answer_with_its_reply_already_encoded(redis_url: str, keys: Keys) -> None:
    """The scorer sends a hot reply as JSON bytes encoded from plain values: they go out as they
    are, and the client validates them into the typed reply."""

    async def encoded(req: RouteRequestV1, ctx: RpcContext) -> bytes:
        return reply_for(req).model_dump_json().encode()

    async with serving(redis_url, keys, encoded) as (server, sreg), client(redis_url, keys) as (c, creg):
        reply = await c.call(ROUTE_V1, RouteRequestV1(text="hé 🚀"), timeout=2.0)
    assert reply == reply_for(RouteRequestV1(text="hé 🚀"))
    assert sreg.get_sample_value("turnout_rpc_served_total", {"method": "scorer.route.v1", "outcome": "ok"}) == 1


async def test_request_queues_expire_and_replies_leave_no_keys(redis_url: str, keys: Keys, redis: Redis) -> None:
    async with client(redis_url, keys) as (c, _):
        call = asyncio.create_task(c.call(ROUTE_V1, RouteRequestV1(), timeout=0.3))  # nobody serves: queued
        await wait_until_async(lambda: redis.llen(keys.rpc_queue("scorer.route", 1)), 1)
        ttl = await redis.ttl(keys.rpc_queue("scorer.route", 1))
        with pytest.raises(RpcTimeout):
            await call
        # the caller gave up: it took its request back (the last one: the list is gone)
        await wait_until_async(lambda: redis.exists(keys.rpc_queue("scorer.route", 1)), 0)
        async with serving(redis_url, keys):
            assert (await c.call(ROUTE_V1, RouteRequestV1(text="hi"), timeout=2.0)).analysis.signals == ["hi"]
        # the reply came over the client's own channel: nothing is left in Redis
        assert [k async for k in redis.scan_iter(match=f"{keys.prefix}:rpc:reply:*")] == []
        assert await redis.pubsub_numsub(keys.rpc_reply(c.client_id)) == [(keys.rpc_reply(c.client_id).encode(), 1)]
    assert 0 < ttl <= 60


async def test_a_client_that_asks_for_a_list_reply_gets_one(redis_url: str, keys: Keys, redis: Redis) -> None:
    """Clients of before ``reply_via`` (rolling upgrades: scorers first) read replies from a list."""
    reply_key = keys.rpc_reply("older-client")
    raw = encode_request(call_id="c1", method="scorer.route", mv=1, budget_ms=5000, request_id=None,
                         reply_to=reply_key, body=RouteRequestV1(text="old").model_dump_json().encode())  # fmt: skip
    assert b"reply_via" not in raw
    async with serving(redis_url, keys):
        await redis.rpush(keys.rpc_queue("scorer.route", 1), raw)
        item = await redis.blpop([reply_key], timeout=5)
    assert item is not None and RpcClient._decode(ROUTE_V1, item[1]).analysis.signals == ["old"]


async def wait_until_async(read: Callable[[], Awaitable[object]], want: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await read()) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {got!r}, wanted {want!r}")
        await asyncio.sleep(0.01)


# --- deadlines ---------------------------------------------------------------------------


async def test_client_raises_rpc_timeout_when_no_reply_before_the_deadline(redis_url: str, keys: Keys) -> None:
    async def slow(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        await asyncio.sleep(0.5)
        return reply_for(req)

    async with serving(redis_url, keys, slow), client(redis_url, keys) as (c, creg):
        t0 = time.perf_counter()
        with pytest.raises(RpcTimeout, match=r"scorer.route.v1: no reply within 0.050s"):
            await c.call(ROUTE_V1, RouteRequestV1(), timeout=0.05)
        elapsed = time.perf_counter() - t0
    assert 0.04 < elapsed < 0.3
    assert creg.get_sample_value("turnout_rpc_calls_total", {"method": "scorer.route.v1", "outcome": "timeout"}) == 1


async def test_server_drops_requests_whose_deadline_passed_without_replying(
    redis_url: str, keys: Keys, redis: Redis
) -> None:
    handled: list[str] = []

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        handled.append(req.text)
        return reply_for(req)

    reply_key = keys.rpc_reply("probe")
    queue = keys.rpc_queue("scorer.route", 1)
    for text, budget_ms in (("expired", -1), ("fresh", 10_000)):
        body = RouteRequestV1(text=text).model_dump_json().encode()
        await redis.rpush(
            queue,
            encode_request(call_id=text, method="scorer.route", mv=1, budget_ms=budget_ms, request_id=None,
                           reply_to=reply_key, body=body),
        )  # fmt: skip
    async with serving(redis_url, keys, handler) as (_, sreg):
        item = await redis.blpop([reply_key], timeout=5)
        assert item is not None
        assert orjson.loads(item[1])["id"] == "fresh"
        await asyncio.sleep(0.1)
        assert await redis.llen(reply_key) == 0
    assert handled == ["fresh"]
    assert sreg.get_sample_value("turnout_rpc_dropped_total", {"method": "scorer.route.v1"}) == 1


async def test_work_queued_while_no_server_runs_is_withdrawn_once_its_caller_gave_up(
    redis_url: str, keys: Keys, redis: Redis
) -> None:
    handled: list[str] = []

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        handled.append(req.text)
        return reply_for(req)

    async with client(redis_url, keys) as (c, _):
        for i in range(3):
            with pytest.raises(RpcTimeout):
                await c.call(ROUTE_V1, RouteRequestV1(text=f"late-{i}"), timeout=0.02)
        await wait_until_async(lambda: redis.llen(keys.rpc_queue("scorer.route", 1)), 0)
        async with serving(redis_url, keys, handler) as (_, sreg):
            reply = await c.call(ROUTE_V1, RouteRequestV1(text="on-time"), timeout=2.0)
    assert reply.analysis.signals == ["on-time"]
    assert handled == ["on-time"]
    assert sreg.get_sample_value("turnout_rpc_dropped_total", {"method": "scorer.route.v1"}) is None


# --- competing replicas ------------------------------------------------------------------


async def test_two_replicas_share_one_queue_and_each_request_is_handled_once(redis_url: str, keys: Keys) -> None:
    handled: collections.Counter[str] = collections.Counter()
    by_replica: collections.Counter[str] = collections.Counter()
    running: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()

    def make(replica: str) -> Handler:
        async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
            handled[req.text] += 1
            by_replica[replica] += 1
            running[replica] += 1
            peak[replica] = max(peak[replica], running[replica])
            await asyncio.sleep(0.01)
            running[replica] -= 1
            return reply_for(req, replica)

        return handler

    n = 40
    async with (
        serving(redis_url, keys, make("a"), replica="a", max_concurrency=2),
        serving(redis_url, keys, make("b"), replica="b", max_concurrency=2),
        client(redis_url, keys) as (c, _),
    ):
        replies = await asyncio.gather(*(c.call(ROUTE_V1, RouteRequestV1(text=f"r{i}"), timeout=5.0) for i in range(n)))
    assert [r.analysis.signals[0] for r in replies] == [f"r{i}" for i in range(n)]
    assert handled == collections.Counter({f"r{i}": 1 for i in range(n)})
    assert set(by_replica) == {"a", "b"}
    assert sum(by_replica.values()) == n
    # each reply came from the replica that handled that request
    assert collections.Counter(r.candidates[0].backend for r in replies) == by_replica
    assert peak == {"a": 2, "b": 2}  # max_concurrency: never more handlers at once, and used


async def test_stop_lets_the_calls_in_flight_finish_and_their_replies_arrive(redis_url: str, keys: Keys) -> None:
    started: list[str] = []

    async def slow(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        started.append(req.text)
        await asyncio.sleep(0.3)
        return reply_for(req)

    server = RpcServer(redis_url, keys, replica_id="s", registry=CollectorRegistry())
    server.register(ROUTE_V1, slow)
    serve = asyncio.create_task(server.serve())
    async with client(redis_url, keys) as (c, _):
        await wait_until(lambda: server.connected, what="server connected")
        texts = [f"in-flight-{i}" for i in range(3)]
        calls = [asyncio.create_task(c.call(ROUTE_V1, RouteRequestV1(text=t), timeout=5.0)) for t in texts]
        await wait_until(lambda: len(started) == 3, what="the three handlers running")
        await server.stop()  # while all three still run
        replies = await asyncio.gather(*calls)
        await asyncio.wait_for(serve, timeout=10)
        assert [r.analysis.signals[0] for r in replies] == texts
        # a stopped server takes no more work: a new call times out (nothing else serves)
        with pytest.raises(RpcTimeout):
            await c.call(ROUTE_V1, RouteRequestV1(text="after-stop"), timeout=0.3)
    assert started == texts


async def test_two_clients_each_get_their_own_replies(redis_url: str, keys: Keys) -> None:
    async with serving(redis_url, keys), client(redis_url, keys) as (c1, _), client(redis_url, keys) as (c2, _):
        r1, r2 = await asyncio.gather(
            asyncio.gather(*(c1.call(ROUTE_V1, RouteRequestV1(text=f"one-{i}"), timeout=3) for i in range(10))),
            asyncio.gather(*(c2.call(ROUTE_V1, RouteRequestV1(text=f"two-{i}"), timeout=3) for i in range(10))),
        )
    assert [r.analysis.signals[0] for r in r1] == [f"one-{i}" for i in range(10)]
    assert [r.analysis.signals[0] for r in r2] == [f"two-{i}" for i in range(10)]


# --- errors ------------------------------------------------------------------------------


class _NotARouteRequest(WireModel):
    quality: str | None = Field(default=None)


async def test_invalid_body_comes_back_as_malformed_request(redis_url: str, keys: Keys) -> None:
    wrong: RpcMethod[_NotARouteRequest, RouteReplyV1] = RpcMethod("scorer.route", 1, _NotARouteRequest, RouteReplyV1)
    async with serving(redis_url, keys), client(redis_url, keys) as (c, _):
        with pytest.raises(MalformedRequest, match=r"invalid scorer.route.v1 body: 1 error\(s\)"):
            await c.call(wrong, _NotARouteRequest(quality="very high"), timeout=2.0)
        # the server is fine afterwards
        assert (await c.call(ROUTE_V1, RouteRequestV1(text="ok"), timeout=2.0)).analysis.signals == ["ok"]


async def test_unknown_method_comes_back_as_method_not_found(redis_url: str, keys: Keys, redis: Redis) -> None:
    reply_key = keys.rpc_reply("probe")
    raw = encode_request(call_id="x1", method="scorer.explain", mv=1, budget_ms=5000, request_id=None,
                         reply_to=reply_key, body=b"{}")  # fmt: skip
    async with serving(redis_url, keys):
        await redis.rpush(keys.rpc_queue("scorer.route", 1), raw)
        item = await redis.blpop([reply_key], timeout=5)
    assert item is not None
    with pytest.raises(MethodNotFound, match="method 'scorer.explain' v1 is not served"):
        RpcClient._decode(ROUTE_V1, item[1])


async def test_handler_errors_are_rebuilt_on_the_client(redis_url: str, keys: Keys) -> None:
    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        if req.text == "late":
            raise DeadlineExceeded("scoring took too long")
        raise KeyError("catalog")

    async with serving(redis_url, keys, handler), client(redis_url, keys) as (c, _):
        with pytest.raises(DeadlineExceeded, match="scoring took too long"):
            await c.call(ROUTE_V1, RouteRequestV1(text="late"), timeout=2.0)
        with pytest.raises(RemoteError) as exc:
            await c.call(ROUTE_V1, RouteRequestV1(text="boom"), timeout=2.0)
    assert type(exc.value) is RemoteError
    assert (exc.value.type_name, str(exc.value)) == ("KeyError", "'catalog'")


# --- heartbeat ---------------------------------------------------------------------------


async def test_call_fails_at_once_when_no_server_is_alive(redis_url: str, keys: Keys) -> None:
    async with client(redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0.05) as (c, creg):
        assert c.server_alive(ROUTE_V1) is False
        t0 = time.perf_counter()
        with pytest.raises(RpcUnavailable, match="no live server for scorer.route.v1"):
            await c.call(ROUTE_V1, RouteRequestV1(), timeout=5.0)
        assert time.perf_counter() - t0 < 0.05
        assert (
            creg.get_sample_value("turnout_rpc_calls_total", {"method": "scorer.route.v1", "outcome": "unavailable"})
            == 1
        )

        async with serving(redis_url, keys):
            await wait_until(lambda: c.server_alive(ROUTE_V1), what="heartbeat seen")
            assert (await c.call(ROUTE_V1, RouteRequestV1(text="up"), timeout=2.0)).analysis.signals == ["up"]

        # a clean shutdown removes the heartbeat at once: no waiting for its TTL
        t0 = time.perf_counter()
        await wait_until(lambda: not c.server_alive(ROUTE_V1), timeout=1.0, what="heartbeat gone")
        assert time.perf_counter() - t0 < 0.5
        with pytest.raises(RpcUnavailable):
            await c.call(ROUTE_V1, RouteRequestV1(), timeout=5.0)


async def test_each_replica_has_its_own_heartbeat_with_a_ttl(redis_url: str, keys: Keys, redis: Redis) -> None:
    members = keys.rpc_alive("scorer.route", 1)
    async with serving(redis_url, keys, replica="scorer-7"), serving(redis_url, keys, replica="scorer-8"):
        for _ in range(100):
            if await redis.scard(members) == 2:  # type: ignore[misc]
                break
            await asyncio.sleep(0.02)
        assert await redis.smembers(members) == {b"scorer-7", b"scorer-8"}  # type: ignore[misc]
        for replica in ("scorer-7", "scorer-8"):
            key = keys.rpc_alive_replica("scorer.route", 1, replica)
            assert await redis.get(key) == replica.encode()
            assert 0 < await redis.pttl(key) <= 3000
    for replica in ("scorer-7", "scorer-8"):  # each one cleared its own, nobody else's
        assert await redis.get(keys.rpc_alive_replica("scorer.route", 1, replica)) is None
    assert await redis.smembers(members) == set()  # type: ignore[misc]


async def test_one_replica_leaving_keeps_the_method_alive(redis_url: str, keys: Keys) -> None:
    async with (
        client(redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0.05) as (c, _),
        serving(redis_url, keys, replica="a"),
    ):
        async with serving(redis_url, keys, replica="b"):
            await wait_until(lambda: c.server_alive(ROUTE_V1), what="heartbeat seen")
        await asyncio.sleep(0.2)  # several polls after b cleared its own heartbeat
        assert c.server_alive(ROUTE_V1) is True
        assert (await c.call(ROUTE_V1, RouteRequestV1(text="still"), timeout=2.0)).analysis.signals == ["still"]


async def test_a_replica_that_died_silently_is_dropped_from_the_set(redis_url: str, keys: Keys, redis: Redis) -> None:
    members = keys.rpc_alive("scorer.route", 1)
    await redis.sadd(members, "ghost")  # type: ignore[misc]  # in the set, its heartbeat long expired
    async with client(redis_url, keys, watch=(ROUTE_V1,), heartbeat_poll_s=0.05) as (c, _):
        assert c.server_alive(ROUTE_V1) is False
        assert await redis.smembers(members) == set()  # type: ignore[misc]


# --- connection loss ---------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[list[Instance]]:
    """A redis-server of this test's own, so that it can be restarted mid-test (append restarts)."""
    started = [start_redis(RUN_DIR, ephemeral=True)]
    try:
        yield started
    finally:
        for inst in started:
            inst.stop()


async def test_redis_restart_fails_calls_in_flight_fast_and_later_calls_succeed(own_redis: list[Instance]) -> None:
    first = own_redis[0]
    keys = Keys(f"sytest-{uuid.uuid4().hex[:8]}")
    release = asyncio.Event()

    async def handler(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        if req.text == "stuck":
            await release.wait()
        return reply_for(req)

    async with serving(first.url, keys, handler) as (server, _), client(first.url, keys) as (c, creg):
        assert (await c.call(ROUTE_V1, RouteRequestV1(text="before"), timeout=2.0)).analysis.signals == ["before"]

        in_flight = asyncio.create_task(c.call(ROUTE_V1, RouteRequestV1(text="stuck"), timeout=10.0))
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        first.stop()  # Redis goes away under both the client and the server
        with pytest.raises(RpcUnavailable, match="lost connection to Redis"):
            await in_flight
        assert time.perf_counter() - t0 < 1.5, "in-flight call must fail fast, not wait out its 10 s deadline"
        release.set()

        # while Redis is down, calls fail fast too
        t0 = time.perf_counter()
        with pytest.raises(RpcUnavailable):
            await c.call(ROUTE_V1, RouteRequestV1(text="during"), timeout=5.0)
        assert time.perf_counter() - t0 < 1.0

        own_redis.append(start_redis(RUN_DIR, port=first.port, ephemeral=True))
        await wait_until(lambda: server.connected, timeout=10, what="server reconnected")
        deadline = time.monotonic() + 10
        while True:
            try:
                reply = await c.call(ROUTE_V1, RouteRequestV1(text="after"), timeout=1.0)
                break
            except RpcUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert reply.analysis.signals == ["after"]
        # and keeps working
        for i in range(5):
            assert (await c.call(ROUTE_V1, RouteRequestV1(text=str(i)), timeout=2.0)).analysis.signals == [str(i)]
    assert (creg.get_sample_value("turnout_rpc_calls_total", {"method": "scorer.route.v1", "outcome": "unavailable"})
            or 0) >= 2  # fmt: skip


async def _calls(r: Redis, command: str) -> int:
    stats = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_concurrent_pushes_to_one_key_share_one_command_and_keep_their_order(redis, redis_url, keys):
    link = RespLink(redis_url)
    push = PushExpire(link)
    key = f"{keys.prefix}:push-test"
    await push(key, b"warm", 30)  # connects outside the count
    before = await _calls(redis, "rpush"), await _calls(redis, "exec")
    await asyncio.gather(*(push(key, f"p{i}".encode(), 30) for i in range(50)))
    assert (await _calls(redis, "rpush") - before[0], await _calls(redis, "exec") - before[1]) == (1, 1)
    assert await redis.lrange(key, 1, -1) == [f"p{i}".encode() for i in range(50)]
    assert 0 < await redis.ttl(key) <= 30
    # two keys in one tick: one command each; batches above max_batch are split
    small = PushExpire(link, max_batch=8)
    other = f"{keys.prefix}:push-test-2"
    before = await _calls(redis, "rpush"), await _calls(redis, "exec")
    await asyncio.gather(*(small(key if i % 2 else other, b"x", 30) for i in range(20)))
    assert (await _calls(redis, "rpush") - before[0], await _calls(redis, "exec") - before[1]) == (4, 4)  # 8 a command
    assert 0 < await redis.ttl(other) <= 30
    await redis.delete(key, other)
    link.close()


async def test_a_sent_call_is_answered_after_the_caller_did_other_work(redis_url, keys):
    async with serving(redis_url, keys), client(redis_url, keys) as (c, _):
        pending = c.send(ROUTE_V1, RouteRequestV1(text="hello"), timeout=2.0)
        await asyncio.sleep(0.05)  # the caller's own work while the server answers
        reply = await pending.reply()
        assert reply.analysis.signals == ["hello"]
        assert c._pending == {}


async def test_a_call_that_cannot_be_sent_fails_where_it_is_awaited(redis_url, keys):
    never_started = RpcClient(redis_url, keys, registry=CollectorRegistry())
    pending = never_started.send(ROUTE_V1, RouteRequestV1(text="hello"), timeout=1.0)
    with pytest.raises(RpcUnavailable):
        await pending.reply()


async def test_a_sent_call_given_up_leaves_nothing_pending(redis_url, keys):
    async def slow(req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:
        await asyncio.sleep(0.2)
        return reply_for(req)

    async with serving(redis_url, keys, slow), client(redis_url, keys) as (c, _):
        pending = c.send(ROUTE_V1, RouteRequestV1(text="hello"), timeout=0.05)
        assert len(c._pending) == 1
        pending.cancel()
        assert c._pending == {}
        await asyncio.sleep(0.1)  # its deadline passes: nothing fires on the given-up call


async def test_a_push_redis_refuses_fails_its_callers_and_the_next_push_works(redis, redis_url, keys):
    link = RespLink(redis_url)
    push = PushExpire(link)
    wrong = f"{keys.prefix}:not-a-list"
    await redis.set(wrong, "x")
    results = await asyncio.gather(*(push(wrong, b"p", 5) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(e, ResponseError) and "WRONGTYPE" in str(e) for e in results), results
    await push(f"{keys.prefix}:a-list", b"p", 5)
    assert await redis.lrange(f"{keys.prefix}:a-list", 0, -1) == [b"p"]
    await redis.delete(wrong, f"{keys.prefix}:a-list")
    link.close()


async def test_a_failed_shared_push_fails_every_caller(keys):
    broken = RespLink("redis://127.0.0.1:1/0", link=LinkOptions(connect_timeout_s=0.5))
    push = PushExpire(broken)
    results = await asyncio.gather(*(push(f"{keys.prefix}:x", b"p", 5) for _ in range(5)), return_exceptions=True)
    assert len(results) == 5 and all(isinstance(e, OSError | RedisError) for e in results), results
    broken.close()


async def test_replies_ride_ahead_of_the_next_pop_and_are_resent_if_that_connection_broke(redis, redis_url, keys):
    channel = f"{keys.prefix}:ahead"
    sub = redis.pubsub()
    await sub.subscribe(channel)
    await sub.get_message(timeout=1)  # the subscribe confirmation
    link = RespLink(redis_url)
    publish = Publisher(link)
    popper = await RespConnection.open(redis_url)
    try:
        # one write: the waiting publish, then the command; the publish's own flush finds nothing
        first = publish.submit(channel, b"one")
        assert await publish.write_ahead_of(popper, ("PING",)) == b"PONG"
        assert await first == 1
        assert link.live() is None  # nothing went over the publisher's own connection
        # the popping connection broke: the publish goes again over the publisher's own
        popper.close()
        second = publish.submit(channel, b"two")
        with pytest.raises(RedisError):
            await publish.write_ahead_of(popper, ("PING",))
        assert await asyncio.wait_for(second, 2) == 1
        got = [await sub.get_message(timeout=1) for _ in range(2)]
        assert [m["data"] for m in got if m] == [b"one", b"two"]
    finally:
        popper.close()
        link.close()
        await sub.aclose()


async def test_a_reply_link_that_goes_silent_is_dropped_and_reopened(own_redis: list[Instance]) -> None:
    url = own_redis[0].url
    keys = Keys(f"sytest-{uuid.uuid4().hex[:8]}")
    admin = Redis.from_url(url)
    async with serving(url, keys), client(url, keys, reader_ping_s=0.2) as (c, _):
        assert (await c.call(ROUTE_V1, RouteRequestV1(text="before"), timeout=2.0)).analysis.signals == ["before"]
        await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # Redis answers nobody for 1.5 s
        await asyncio.sleep(0.7)  # past the reader's quiet time and its unanswered PING
        t0 = time.perf_counter()
        with pytest.raises(RpcUnavailable, match="reply reader is disconnected"):
            await c.call(ROUTE_V1, RouteRequestV1(text="during"), timeout=5.0)
        assert time.perf_counter() - t0 < 0.5  # failed fast: the reader knows its link is gone
        deadline = time.monotonic() + 10
        while True:  # once Redis answers again, the reader resubscribes and calls go through
            try:
                reply = await c.call(ROUTE_V1, RouteRequestV1(text="after"), timeout=1.0)
                break
            except (RpcUnavailable, RpcTimeout):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert reply.analysis.signals == ["after"]
    await admin.aclose()
