"""Moving RPC messages through Redis lists cheaply.

* :class:`BatchPop` — ``BLMPOP`` (Redis >= 7) blocks like ``BLPOP`` until the first of the keys
  has items, then returns up to ``count`` of them at once. Under load a reply reader or a server
  pays one round trip per batch instead of one per message; with one message waiting it costs the
  same as ``BLPOP``. Older servers answer "unknown command", and the popper falls back to ``BLPOP``.
* :class:`PushExpire` — ``RPUSH`` + ``EXPIRE`` atomically in one small Lua script (``EVALSHA``):
  the same effect as the two in a ``MULTI``, but one command and one reply instead of four, which
  in redis-py is most of an RPC call's client-side CPU. redis-py reloads the script by itself
  when the server lost it (``NOSCRIPT``), e.g. after a restart. Pushes to one key made in the
  same event-loop iteration (concurrent requests arriving together, a batch of replies) go out
  as **one** ``EVALSHA`` with all their payloads: redis-py spends ~100 µs of CPU packing and
  parsing a command, Redis a few µs running it, so under load the per-call cost is shared. A
  lone push waits one loop iteration for company and costs the same as before.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ResponseError

# ARGV[1] is the TTL, the rest are payloads, pushed in order
_PUSH_EXPIRE_LUA = "redis.call('RPUSH', KEYS[1], unpack(ARGV, 2)) return redis.call('EXPIRE', KEYS[1], ARGV[1])"
MAX_PUSH_BATCH = 256
"""Payloads per ``EVALSHA`` at most (Lua's ``unpack`` is bounded by its C stack, ~8k)."""


class PushExpire:
    """``await push(key, payload, ttl_s)``: returns once the payload is in the list (or raises
    what Redis raised); concurrent pushes to one key share a command (see the module docstring)."""

    def __init__(self, redis: Redis, *, max_batch: int = MAX_PUSH_BATCH) -> None:
        self._script = redis.register_script(_PUSH_EXPIRE_LUA)
        self._max_batch = max_batch
        self._waiting: dict[tuple[str, int], list[tuple[bytes, asyncio.Future[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, key: str, payload: bytes, ttl_s: int) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.setdefault((key, ttl_s), []).append((payload, fut))
        await fut

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for (key, ttl_s), items in waiting.items():
            for start in range(0, len(items), self._max_batch):
                task = asyncio.create_task(self._send(key, ttl_s, items[start : start + self._max_batch]))
                self._tasks.add(task)  # a reference until it ends: the loop keeps only weak ones
                task.add_done_callback(self._tasks.discard)

    async def _send(self, key: str, ttl_s: int, items: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        try:
            await self._script(keys=[key], args=[ttl_s, *(payload for payload, _ in items)])
        except asyncio.CancelledError:  # the process is shutting down: the callers learn it
            self._fail(items, ConnectionError("push cancelled"))
            raise
        except Exception as exc:  # every caller waiting on this command gets what Redis raised
            self._fail(items, exc)
        else:
            for _, fut in items:
                if not fut.done():
                    fut.set_result(None)

    @staticmethod
    def _fail(items: list[tuple[bytes, asyncio.Future[None]]], exc: Exception) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_exception(exc)


class BatchPop:
    def __init__(self, count: int) -> None:
        self.count = count
        self.blmpop = True

    async def pop(self, conn: Redis, keys: list[str], *, timeout: int = 1) -> tuple[bytes | None, list[bytes]]:
        """``(key, items)`` from the first key that has items, or ``(None, [])`` after ``timeout`` s."""
        if self.blmpop:
            try:
                got = await conn.blmpop(timeout, len(keys), *keys, direction="LEFT", count=self.count)  # type: ignore[misc,arg-type]
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self.blmpop = False
            else:
                return (None, []) if got is None else (got[0], list(got[1]))
        item = await conn.blpop(keys, timeout=timeout)  # type: ignore[misc]
        return (None, []) if item is None else (item[0], [item[1]])
