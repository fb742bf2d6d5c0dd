"""Background loops that talk to Redis end when cancelled, whenever the cancel comes.

redis-py writes each command through ``asyncio.wait_for``, which on Python 3.11 drops a
cancellation that arrives as the write completes (:mod:`turnout.common.aio`). A loop that
carried on after that held its service's shutdown for the supervisor's grace (5 s) — or, before
the wait was bounded, forever. Each loop here runs its commands back to back and is cancelled at
every loop-iteration offset across a few of them, so the unlucky moment is always among them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from redis.asyncio import Redis

from turnout.common.aio import cancel_and_wait
from turnout.common.keys import Keys
from turnout.common.links import make_redis
from turnout.gateway.catalog import CatalogView
from turnout.gateway.inflight import InflightTracker

pytestmark = pytest.mark.integration

Loop = Callable[[], Awaitable[None]]


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[Redis]:
    client = make_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _stops_at_every_offset(loop: Loop) -> list[tuple[int, float]]:
    slow: list[tuple[int, float]] = []
    for offset in range(40):
        task = asyncio.create_task(loop())
        for _ in range(offset):
            await asyncio.sleep(0)
        t0 = time.monotonic()
        async with asyncio.timeout(10):
            await cancel_and_wait([task], grace_s=3.0)
        assert task.cancelled()
        if time.monotonic() - t0 > 1.0:
            slow.append((offset, round(time.monotonic() - t0, 1)))
    return slow  # (offset, seconds) of each cancel the loop went on after


async def test_the_gateways_catalog_refresh_stops_when_cancelled(link: Redis, keys: Keys) -> None:
    async with aiohttp.ClientSession() as session:
        view = CatalogView(link, keys, [], session, refresh_s=0)
        assert await _stops_at_every_offset(view.run) == []


async def test_the_gateways_inflight_publisher_stops_when_cancelled(link: Redis, keys: Keys) -> None:
    tracker = InflightTracker(link, keys, "gw-test", publish_s=0, ttl_s=0.003)  # stale at once: writes every round
    tracker.inc("b", "m")
    assert await _stops_at_every_offset(tracker.run) == []
