"""The request-event publisher: batches land in the stream in order; failures are counted, never raised."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.links import LinkOptions
from turnout.common.rpc.resp import RespLink
from turnout.common.schemas.events import EVENT_FIELD
from turnout.gateway.events import EventPublisher
from turnout.gateway.metrics import build_metrics

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

    nowhere = RespLink("redis://127.0.0.1:1/0", link=LinkOptions(connect_timeout_s=0.5))
    events, registry = _publisher(nowhere, keys)
    try:
        events.publish({"request_id": "lost"})
        await events.flush()
        assert (events.sent, _dropped(registry)) == (0, 1)
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
