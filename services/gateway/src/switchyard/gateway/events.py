"""Request events, published off the response path to ``keys.request_events``.

Each finished request (success or failure) becomes one :class:`RequestEventV1`, appended with
``XADD … MAXLEN ~ events_maxlen`` under the field ``data`` (its JSON); the sync worker stores
them in Postgres. :meth:`EventPublisher.publish` only appends to an in-memory queue and wakes a
background task that sends what accumulated in one pipeline, so a request never waits on Redis
and a burst costs one round trip. If Redis is unreachable the batch is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchyard.common.keys import Keys
from switchyard.common.schemas.events import EVENT_FIELD, RequestEventV1
from switchyard.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        metrics: GatewayMetrics,
        *,
        maxlen: int = 100_000,
        batch_window_s: float = 0.01,
        max_queue: int = 10_000,
    ) -> None:
        self._redis = redis
        self._stream = keys.request_events
        self._metrics = metrics
        self._maxlen = maxlen
        self._window = batch_window_s
        self._max_queue = max_queue
        self._queue: list[RequestEventV1] = []
        self._wake = asyncio.Event()
        self.sent = 0

    def publish(self, event: RequestEventV1) -> None:
        """Queue an event; never blocks, never raises."""
        if len(self._queue) >= self._max_queue:
            self._metrics.events_dropped.inc()
            return
        self._queue.append(event)
        self._wake.set()

    async def flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ev in batch:
                    pipe.xadd(self._stream, {EVENT_FIELD: ev.model_dump_json()}, maxlen=self._maxlen, approximate=True)
                await pipe.execute()
            self.sent += len(batch)
        except (RedisError, OSError) as exc:
            self._metrics.events_dropped.inc(len(batch))
            log.warning("dropped %d request events: %s", len(batch), exc)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._window)  # let a burst accumulate into one pipeline
            await self.flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
