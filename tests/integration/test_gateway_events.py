"""The request-event publisher: batches land in the stream in order; failures are counted, never raised."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.links import LinkOptions
from turnout.common.rpc.resp import RespLink
from turnout.common.schemas.events import EVENT_FIELD
from turnout.devstack.infra import Instance, start_redis
from turnout.gateway.events import EventPublisher
from turnout.gateway.metrics import build_metrics

RUN_DIR = Path(__file__).resolve().parents[2] / ".run" / "test"


@pytest.fixture
def own_redis() -> Iterator[list[Instance]]:
    started = [start_redis(RUN_DIR, ephemeral=True)]
    try:
        yield started
    finally:
        for inst in started:
            inst.stop()


async def _until(ok: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


pytestmark = pytest.mark.integration


def _publisher(link: RespLink, keys: Keys, **kw: int) -> tuple[EventPublisher, CollectorRegistry]:
    registry = CollectorRegistry()
    return EventPublisher(link, keys, build_metrics(registry), **kw), registry


def _dropped(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("turnout_gateway_events_dropped_total") or 0.0


async def test_a_batch_lands_in_the_stream_in_order_as_one_write(redis: Redis, redis_url: str, keys: Keys) -> None:
    link = RespLink(redis_url)
    events, registry = _publisher(link, keys, maxlen=1000)
    try:
        for i in range(25):
            events.publish({"v": 1, "request_id": f"r{i}", "status": 200})
        await events.flush()
        entries = await redis.xrange(keys.request_events)
        assert [fields[EVENT_FIELD.encode()] for _, fields in entries] == [
            f'{{"v":1,"request_id":"r{i}","status":200}}'.encode() for i in range(25)
        ]
        assert events.sent == 25 and _dropped(registry) == 0
        await events.flush()  # nothing queued: nothing sent
        assert await redis.xlen(keys.request_events) == 25
    finally:
        link.close()


async def test_events_redis_refuses_or_cannot_take_are_dropped_and_counted(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    await redis.set(keys.request_events, "not a stream")
    link = RespLink(redis_url)
    events, registry = _publisher(link, keys)
    try:
        for i in range(3):
            events.publish({"request_id": f"r{i}"})
        await events.flush()  # WRONGTYPE for each: counted, not raised
        assert (events.sent, _dropped(registry)) == (0, 3)
    finally:
        link.close()
        await redis.delete(keys.request_events)


async def test_events_wait_in_memory_while_redis_is_away_and_flow_in_order_when_it_is_back(
    keys: Keys, own_redis: list[Instance]
) -> None:
    first = own_redis[0]
    link = RespLink(first.url, link=LinkOptions(connect_timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05))
    events, registry = _publisher(link, keys, max_queue=5)
    runner = asyncio.create_task(events.run())
    try:
        events.publish({"request_id": "r0"})
        await _until(lambda: events.sent == 1)
        first.stop()
        for i in range(1, 8):  # 7 more while Redis is away: 5 fit (bounded by count), 2 dropped
            events.publish({"request_id": f"r{i}"})
        await asyncio.sleep(0.5)  # several failed flushes: nothing lost, nothing sent
        assert (events.sent, events.waiting, _dropped(registry)) == (1, 5, 2)
        own_redis.append(start_redis(RUN_DIR, port=first.port, ephemeral=True))  # an empty Redis
        await _until(lambda: events.sent == 6, timeout=10)
        check = Redis.from_url(first.url)
        try:
            entries = await check.xrange(keys.request_events)
        finally:
            await check.aclose()
        assert [orjson.loads(f[EVENT_FIELD.encode()])["request_id"] for _, f in entries] == [
            "r1", "r2", "r3", "r4", "r5"
        ]  # fmt: skip
        assert (events.waiting, _dropped(registry)) == (0, 2)
    finally:
        runner.cancel()
        link.close()


async def test_an_event_that_cannot_be_encoded_is_skipped_and_counted(redis: Redis, redis_url: str, keys: Keys) -> None:
    link = RespLink(redis_url)
    events, registry = _publisher(link, keys)
    try:
        events.publish({"request_id": "a"})
        events.publish({"request_id": "bad", "x": object()})  # orjson cannot encode it
        events.publish({"request_id": "b", "n": 2**70})  # nor an integer past 64 bits
        events.publish({"request_id": "c"})
        assert await events.flush() is True
        entries = await redis.xrange(keys.request_events)
        assert [orjson.loads(f[EVENT_FIELD.encode()])["request_id"] for _, f in entries] == ["a", "c"]
        assert (events.sent, _dropped(registry)) == (2, 2)
    finally:
        link.close()


async def test_the_memory_bound_in_bytes_drops_and_counts(keys: Keys) -> None:
    nowhere = RespLink("redis://127.0.0.1:1/0", link=LinkOptions(connect_timeout_s=0.5))
    events, registry = _publisher(nowhere, keys, max_bytes=100)
    try:
        for i in range(4):
            events.publish({"request_id": f"r{i}", "pad": "x" * 20})  # 48 bytes each: 2 fit in 100
        assert await events.flush() is False
        assert (events.sent, events.waiting, _dropped(registry)) == (0, 2, 2)
    finally:
        nowhere.close()


async def test_a_full_queue_drops_and_counts_instead_of_growing(redis_url: str, keys: Keys) -> None:
    link = RespLink(redis_url)
    events, registry = _publisher(link, keys, max_queue=2)
    try:
        for i in range(5):
            events.publish({"request_id": f"r{i}"})
        assert _dropped(registry) == 3
        await events.flush()
        assert events.sent == 2
    finally:
        link.close()
