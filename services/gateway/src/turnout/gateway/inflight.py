"""Requests in flight per backend and upstream model, published for the scorer.

Counted in-process (the request path only touches a dict) and written to this process's own
hash every ``publish_s`` when something changed or a request began since the last write, and at
least every ``ttl_s / 3`` while it holds anything, so the TTL never runs out on a live gateway
(:mod:`turnout.common.inflight`: absolute counts per gateway, summed by the scorer, never
negative, gone with a crashed gateway). Each write carries the wall time its counts were taken:
a decision the scorer made for this gateway before then is in them (the route request names the
gateway: ``gateway_id``). A Redis outage never slows a request: the next successful publish
rewrites everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.aio import raise_if_cancelling
from turnout.common.inflight import DEFAULT_TTL_S, write_inflight
from turnout.common.keys import Keys

log = logging.getLogger(__name__)


class InflightTracker:
    """This gateway's in-flight requests per (backend, model), published to Redis for the scorer."""

    def __init__(
        self, redis: Redis, keys: Keys, gateway_id: str, *, publish_s: float = 0.25, ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.gateway_id = gateway_id
        self._publish_s = publish_s
        self._ttl_s = ttl_s
        self._live: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._published: dict[tuple[str, str], int] | None = {}
        """What Redis holds; ``None`` when unknown (a publish failed: rewrite on the next round)."""
        self._published_at = 0.0
        self._began = False
        """A request began since the last write (its counts may equal the last ones all the same)."""

    def inc(self, backend: str, model: str) -> None:
        """One more request in flight on (backend, model)."""
        self._live[(backend, model)] += 1
        self._began = True

    def dec(self, backend: str, model: str) -> None:
        """One request fewer in flight on (backend, model)."""
        key = (backend, model)
        n = self._live.get(key, 0) - 1
        if n > 0:
            self._live[key] = n
        else:
            self._live.pop(key, None)

    def live(self, backend: str, model: str) -> int:
        """Requests in flight on (backend, model) now."""
        return self._live.get((backend, model), 0)

    def total(self) -> int:
        """Requests in flight on every backend."""
        return sum(self._live.values())

    async def publish(self, *, force: bool = False, closing: bool = False) -> None:
        """Write the counts to Redis, with when they were taken, when they changed, a request
        began since the last write or they are about to expire (``force``: always; ``closing``:
        without a time, so that no counts remove the hash)."""
        counts = dict(self._live)
        taken_at = None if closing else time.time()
        began, self._began = self._began, False
        now = time.monotonic()
        stale = bool(counts) and now - self._published_at > self._ttl_s / 3
        if not force and not began and counts == self._published and not stale:
            return
        try:
            await write_inflight(self._redis, self._keys, self.gateway_id, counts, ttl_s=self._ttl_s, taken_at=taken_at)
        except BaseException:
            self._began = self._began or began  # written on the next round
            raise
        self._published = counts
        self._published_at = now

    async def run(self) -> None:
        """Publish every ``publish_s``; a failed write is retried on the next tick."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self._publish_s)
            try:
                await self.publish()
            except (RedisError, OSError) as exc:
                log.debug("in-flight publish failed: %s", exc)
                self._published = None

    async def close(self) -> None:
        """Remove this process's counts."""
        self._live.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.publish(force=True, closing=True)
