"""``make run`` on a Redis where another stack lives under the same key prefix says so."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.rpc.contract import ROUTE_V1
from turnout.devstack.__main__ import live_scorers

pytestmark = pytest.mark.integration


async def test_live_scorers_are_those_with_a_heartbeat_under_this_prefix(redis: Redis, redis_url: str, keys: Keys):
    alive = keys.rpc_alive(ROUTE_V1.name, ROUTE_V1.version)
    assert await live_scorers(redis_url, keys.prefix) == []
    # as a scorer's heartbeat writes them: its id in the set, and its own key with a TTL
    await redis.sadd(alive, "vm-1", "vm-gone")  # type: ignore[misc]
    await redis.set(keys.rpc_alive_replica(ROUTE_V1.name, ROUTE_V1.version, "vm-1"), "vm-1", ex=30)
    assert await live_scorers(redis_url, keys.prefix) == ["vm-1"]  # vm-gone's heartbeat expired
    assert await live_scorers(redis_url, keys.prefix + "-other") == []
