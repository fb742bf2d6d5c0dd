"""Requests in flight per backend and upstream model, shared through Redis (``keys.inflight(backend)``).

Counted in-process and published as deltas (``HINCRBY``) every ``inflight_publish_s``, instead
of two Redis round trips per request: the request path only touches a dict, a burst of
requests costs one pipeline, and a Redis outage never slows a request. The scorer reads the
sum over all gateways with at most one publish interval of lag. Keys that still count
something get a TTL refreshed on every publish, so a crashed gateway's counts expire; on a
clean shutdown every delta this process added is taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.keys import Keys

log = logging.getLogger(__name__)

KEY_TTL_S = 60


class InflightTracker:
    def __init__(self, redis: Redis, keys: Keys, *, publish_s: float = 0.25) -> None:
        self._redis = redis
        self._keys = keys
        self._publish_s = publish_s
        self._live: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._published: defaultdict[tuple[str, str], int] = defaultdict(int)

    def inc(self, backend: str, model: str) -> None:
        self._live[(backend, model)] += 1

    def dec(self, backend: str, model: str) -> None:
        self._live[(backend, model)] -= 1

    def live(self, backend: str, model: str) -> int:
        return self._live.get((backend, model), 0)

    async def publish(self) -> None:
        deltas = {k: n - self._published[k] for k, n in self._live.items() if n != self._published[k]}
        holding = {k[0] for k, n in self._live.items() if n > 0}
        if not deltas and not holding:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for (backend, model), delta in deltas.items():
                pipe.hincrby(self._keys.inflight(backend), model, delta)
            for backend in holding:
                pipe.expire(self._keys.inflight(backend), KEY_TTL_S)
            await pipe.execute()
        for k, delta in deltas.items():
            self._published[k] += delta
        for k in [k for k, n in self._live.items() if n == 0 and self._published[k] == 0]:
            del self._live[k]
            del self._published[k]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._publish_s)
            try:
                await self.publish()
            except (RedisError, OSError) as exc:
                log.debug("in-flight publish failed: %s", exc)

    async def close(self) -> None:
        """Take back everything this process published."""
        for k in list(self._live):
            self._live[k] = 0
        with contextlib.suppress(RedisError, OSError):
            await self.publish()
