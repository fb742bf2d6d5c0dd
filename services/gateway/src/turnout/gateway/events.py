"""Request events, published off the response path to ``keys.request_events``.

Each finished request (success or failure) becomes one :class:`RequestEventV1`, appended with
``XADD … MAXLEN ~ events_maxlen`` under the field ``data`` (its JSON); the sync worker stores
them in Postgres. The response path hands over a plain dict of the model's fields (building a
pydantic model per request costs more than the rest of the bookkeeping); the JSON is made here,
off the path, with orjson (pydantic values inside, such as candidates, through ``model_dump``).

:meth:`EventPublisher.publish` only appends to an in-memory queue and wakes a background task
that sends what accumulated as pipelined ``XADD``s in one write, over a connection of its own
of the kind the RPC uses (:class:`~turnout.common.rpc.resp.RespLink`: redis-py spends more
CPU packing a command than Redis spends running it; and a Lua loop over the batch, tried
before, cost Redis ~2.7 µs per event more than plain ``XADD``s), so a request never waits on
Redis and a burst costs one round trip. If Redis is unreachable the batch is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from pydantic import BaseModel
from redis.exceptions import RedisError

from turnout.common.keys import Keys
from turnout.common.rpc.resp import RespLink
from turnout.common.schemas.events import EVENT_FIELD
from turnout.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RequestEvent = dict[str, Any]
"""The fields of :class:`turnout.common.schemas.events.RequestEventV1`."""


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_event(event: RequestEvent) -> bytes:
    return orjson.dumps(event, default=_json_default)


class EventPublisher:
    def __init__(
        self,
        link: RespLink,
        keys: Keys,
        metrics: GatewayMetrics,
        *,
        maxlen: int = 100_000,
        batch_window_s: float = 0.01,
        max_queue: int = 10_000,
        timeout_s: float = 5.0,
    ) -> None:
        self._link = link
        self._stream = keys.request_events
        self._metrics = metrics
        self._maxlen = maxlen
        self._window = batch_window_s
        self._max_queue = max_queue
        self._timeout_s = timeout_s
        self._queue: list[RequestEvent] = []
        self._wake = asyncio.Event()
        self.sent = 0

    def publish(self, event: RequestEvent) -> None:
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
        xadd = ("XADD", self._stream, "MAXLEN", "~", self._maxlen, "*", EVENT_FIELD)
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await self._link.connection()
                replies = await asyncio.gather(
                    *conn.execute_many([(*xadd, encode_event(ev)) for ev in batch]), return_exceptions=True
                )
        except (RedisError, OSError) as exc:  # TimeoutError included
            self._metrics.events_dropped.inc(len(batch))
            log.warning("dropped %d request events: %s", len(batch), exc)
            return
        failed = [r for r in replies if isinstance(r, BaseException)]
        self.sent += len(batch) - len(failed)
        if failed:
            self._metrics.events_dropped.inc(len(failed))
            log.warning("dropped %d request events: %s", len(failed), failed[0])

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._window)  # let a burst accumulate into one pipeline
            await self.flush()

    async def close(self) -> None:
        """Send what is queued (``flush`` counts and logs what it cannot send)."""
        await self.flush()
