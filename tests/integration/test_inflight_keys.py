"""In-flight counts shared through Redis: one hash per gateway with its own TTL, summed by readers,
never negative, gone with a crashed gateway (real Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest

from turnout.common.inflight import AT_FIELD, read_inflight, read_inflight_at, write_inflight
from turnout.gateway.inflight import InflightTracker

pytestmark = pytest.mark.integration


async def test_counts_are_summed_over_gateways_and_a_crashed_one_expires(redis, keys):
    await write_inflight(redis, keys, "gw-a", {("b1", "m"): 2, ("b2", "m"): 1})
    await write_inflight(redis, keys, "gw-b", {("b1", "m"): 3, ("b1", "x"): 0}, ttl_s=0.3)
    assert await read_inflight(redis, keys) == {("b1", "m"): 5, ("b2", "m"): 1}
    await asyncio.sleep(0.4)  # gw-b crashed: it never refreshed
    assert await read_inflight(redis, keys) == {("b1", "m"): 2, ("b2", "m"): 1}
    await write_inflight(redis, keys, "gw-a", {})  # clean shutdown
    assert await read_inflight(redis, keys) == {}
    assert await redis.exists(keys.inflight("gw-a"), keys.inflight_gateways) == 0


async def test_a_redis_restart_loses_nothing_the_next_publish_does_not_rewrite(redis, keys):
    tracker = InflightTracker(redis, keys, "gw-1", publish_s=0.01, ttl_s=0.6)
    tracker.inc("b", "m")
    tracker.inc("b", "m")
    tracker.dec("b", "m")
    tracker.dec("b", "m")
    tracker.dec("b", "m")  # one too many: the count stays at 0, never -1
    tracker.inc("b", "n")
    await tracker.publish()
    assert await read_inflight(redis, keys) == {("b", "n"): 1}
    await redis.delete(keys.inflight("gw-1"), keys.inflight_gateways)  # as after a Redis restart
    assert await read_inflight(redis, keys) == {}
    tracker._published = None  # what a failed publish leaves
    await tracker.publish()
    assert await read_inflight(redis, keys) == {("b", "n"): 1}
    await tracker.close()
    assert await read_inflight(redis, keys) == {}


async def test_each_write_says_when_its_counts_were_taken_and_a_request_that_came_and_went_writes_again(redis, keys):
    tracker = InflightTracker(redis, keys, "gw-t", publish_s=0.01, ttl_s=5.0)
    before = time.time()
    tracker.inc("b", "m")
    await tracker.publish()
    first = await read_inflight_at(redis, keys)
    assert first.counts == {("b", "m"): 1}
    assert before <= first.taken_at["gw-t"] <= time.time()
    await tracker.publish()  # nothing changed, nothing began: no write
    assert (await read_inflight_at(redis, keys)).taken_at == first.taken_at
    tracker.dec("b", "m")
    tracker.inc("b", "m")  # one ended as another began: the same counts, but a request began
    await tracker.publish()
    again = await read_inflight_at(redis, keys)
    assert again.counts == {("b", "m"): 1} and again.taken_at["gw-t"] > first.taken_at["gw-t"]
    tracker.dec("b", "m")
    await tracker.publish()  # idle: no counts, but still the time they were taken
    idle = await read_inflight_at(redis, keys)
    assert idle.counts == {} and idle.taken_at["gw-t"] > again.taken_at["gw-t"]
    assert await read_inflight(redis, keys) == {}
    assert await redis.hgetall(keys.inflight("gw-t")) == {AT_FIELD.encode(): repr(idle.taken_at["gw-t"]).encode()}
    await write_inflight(redis, keys, "gw-old", {("b", "m"): 2})  # a gateway that writes no time
    both = await read_inflight_at(redis, keys)
    assert both.counts == {("b", "m"): 2} and set(both.taken_at) == {"gw-t"}
    await tracker.close()  # a clean shutdown removes the hash, time and all
    assert await redis.exists(keys.inflight("gw-t")) == 0
    assert set((await read_inflight_at(redis, keys)).taken_at) == set()
