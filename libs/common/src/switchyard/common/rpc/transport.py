"""Moving RPC messages through Redis lists cheaply (over :mod:`switchyard.common.rpc.resp`).

* :class:`BatchPop` — ``BLMPOP`` (Redis >= 7) blocks like ``BLPOP`` until the first of the keys
  has items, then returns up to ``count`` of them at once. Under load a reply reader or a server
  pays one round trip per batch instead of one per message; with one message waiting it costs the
  same as ``BLPOP``. Older servers answer "unknown command", and the popper falls back to ``BLPOP``.
* :class:`Publisher` — ``PUBLISH`` for replies to clients that subscribe to their own channel
  (envelope ``reply_via: "channel"``): the client's reader gets each reply pushed to it, with no
  blocking pop to write again after every batch; the replies published in one loop iteration go
  out in one write.
* :class:`PushExpire` — ``RPUSH`` + ``EXPIRE`` atomically in one small Lua script (``EVALSHA``):
  the same effect as the two in a ``MULTI``, but one command and one reply instead of four, which
  is most of an RPC call's client-side CPU. The script is reloaded by ``EVAL`` when the server
  lost it (``NOSCRIPT``), e.g. after a restart. Pushes to one key made in the same event-loop
  iteration (concurrent requests arriving together, a batch of replies) go out as **one**
  ``EVALSHA`` with all their payloads: the client spends far more CPU on a command than Redis
  spends running it, so under load the per-call cost is shared. A lone push waits one loop
  iteration for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import partial
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from switchyard.common.rpc.resp import RespConnection, RespLink, Script

# ARGV[1] is the TTL, the rest are payloads, pushed in order
_PUSH_EXPIRE = Script("redis.call('RPUSH', KEYS[1], unpack(ARGV, 2)) return redis.call('EXPIRE', KEYS[1], ARGV[1])")
_Pending = tuple[bytes, "asyncio.Future[None]"]
_Publish = tuple[str, bytes, "asyncio.Future[int]"]
MAX_PUSH_BATCH = 256
"""Payloads per ``EVALSHA`` at most (Lua's ``unpack`` is bounded by its C stack, ~8k)."""


class PushExpire:
    """``await push(key, payload, ttl_s)``: returns once the payload is in the list (or raises
    what Redis raised); concurrent pushes to one key share a command (see the module docstring)."""

    def __init__(self, link: RespLink, *, max_batch: int = MAX_PUSH_BATCH, timeout_s: float = 5.0) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._waiting: dict[tuple[str, int], list[_Pending]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, key: str, payload: bytes, ttl_s: int) -> None:
        await self.submit(key, payload, ttl_s)

    def submit(self, key: str, payload: bytes, ttl_s: int) -> asyncio.Future[None]:
        """Queue the push; the future resolves once it is in the list (or fails with what Redis
        raised). For callers that have other things to wait for meanwhile."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.setdefault((key, ttl_s), []).append((payload, fut))
        return fut

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        conn = self._link.live()
        for (key, ttl_s), items in waiting.items():
            for start in range(0, len(items), self._max_batch):
                chunk = items[start : start + self._max_batch]
                if conn is None:  # (re)connect first: in a task
                    self._spawn(self._send(key, ttl_s, chunk))
                    continue
                # connected: write now, settle the callers from the reply (no task, no coroutine)
                sent = conn.execute("EVALSHA", _PUSH_EXPIRE.sha, 1, key, ttl_s, *(payload for payload, _ in chunk))
                sent.add_done_callback(partial(self._sent, key, ttl_s, chunk))

    def _sent(self, key: str, ttl_s: int, items: list[_Pending], done: asyncio.Future[Any]) -> None:
        exc = ConnectionError("push cancelled") if done.cancelled() else done.exception()
        if isinstance(exc, NoScriptError):  # Redis lost the script (a restart): EVAL loads it
            self._spawn(self._send(key, ttl_s, items))
        elif exc is not None:
            self._fail(items, exc)
        else:
            self._done(items)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        _spawn(self._tasks, coro)

    async def _send(self, key: str, ttl_s: int, items: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await _PUSH_EXPIRE(self._link, [key], [ttl_s, *(payload for payload, _ in items)])
        except asyncio.CancelledError:  # the process is shutting down: the callers learn it
            self._fail(items, ConnectionError("push cancelled"))
            raise
        except Exception as exc:  # every caller waiting on this command gets what Redis raised
            self._fail(items, exc)
        else:
            self._done(items)

    @staticmethod
    def _done(items: list[_Pending]) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    def _fail(items: list[_Pending], exc: BaseException) -> None:
        for _, fut in items:
            if not fut.done():
                fut.set_exception(exc)


class Publisher:
    """``await publish.submit(channel, payload)``: the number of subscribers that got it."""

    def __init__(self, link: RespLink, *, timeout_s: float = 5.0) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._waiting: list[_Publish] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, channel: str, payload: bytes) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((channel, payload, fut))
        return fut

    def _flush(self) -> None:
        items, self._waiting = self._waiting, []
        conn = self._link.live()
        if conn is None:  # (re)connect first: in a task
            _spawn(self._tasks, self._send(items))
        else:
            self._write(conn, items)

    async def _send(self, items: list[_Publish]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await self._link.connection()
        except asyncio.CancelledError:  # the process is shutting down: the callers learn it
            _fail_publishes(items, ConnectionError("publish cancelled"))
            raise
        except Exception as exc:
            _fail_publishes(items, exc)
        else:
            self._write(conn, items)

    @staticmethod
    def _write(conn: RespConnection, items: list[_Publish]) -> None:
        """Write every PUBLISH now, in one write; each caller is settled from its reply."""
        sent = conn.execute_many([("PUBLISH", channel, payload) for channel, payload, _ in items])
        for (_, _, fut), one in zip(items, sent, strict=True):
            one.add_done_callback(partial(_settle, fut))


def _fail_publishes(items: list[_Publish], exc: BaseException) -> None:
    for _, _, fut in items:
        if not fut.done():
            fut.set_exception(exc)


def _spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    tasks.add(task)  # a reference until it ends: the loop keeps only weak ones
    task.add_done_callback(tasks.discard)


def _settle(fut: asyncio.Future[int], done: asyncio.Future[Any]) -> None:
    if fut.done():
        if not done.cancelled():
            done.exception()  # read, so that it is not reported as never retrieved
        return
    if done.cancelled():
        fut.set_exception(ConnectionError("publish cancelled"))
    elif (exc := done.exception()) is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(int(done.result()))


class BatchPop:
    def __init__(self, count: int) -> None:
        self.count = count
        self.blmpop = True

    async def pop(self, conn: RespConnection, keys: list[str], *, timeout: int = 1) -> tuple[bytes | None, list[bytes]]:
        """``(key, items)`` from the first key that has items, or ``(None, [])`` after ``timeout`` s."""
        if self.blmpop:
            try:
                got = await conn.execute("BLMPOP", timeout, len(keys), *keys, "LEFT", "COUNT", self.count)
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self.blmpop = False
            else:
                return (None, []) if got is None else (got[0], list(got[1]))
        item = await conn.execute("BLPOP", *keys, timeout)
        return (None, []) if item is None else (item[0], [item[1]])
