"""Who may change what a GPU host holds, and what is about to land there — shared by the scorer's
VRAM planner (``turnout.scorer.vram_actions``) and the profiler (which loads models to profile).

* :class:`HostLock` — redis-py's :class:`redis.asyncio.lock.Lock` on ``<prefix>:vram:lock:<host>``
  (``SET NX PX`` with a random token; released and extended only by a holder whose token still
  owns the key, so a holder never frees a lock another one took after its own expired), with
  ``blocking_timeout`` for "wait until a deadline". What this module adds: ``release``/``extend``
  answer True/False instead of raising ``LockNotOwnedError`` (a stale holder is an expected case
  here, not an error), and :meth:`HostLock.held` keeps the lock alive while a long sequence runs.
* Pending loads — ``<prefix>:vram:pending:<host>``, a hash upstream model -> ``"bytes:until"``:
  a load somebody made room for (or started) that the host's gpu-agent has not reported yet, so
  that plans made meanwhile count it (:func:`pending_loads`); entries expire by ``until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from turnout.common.aio import raise_if_cancelling
from turnout.common.keys import Keys

log = logging.getLogger(__name__)

PENDING_TTL_S = 60.0


class HostLock:
    """A Redis lock with expiry for one host, released only by its holder (redis-py's ``Lock``)."""

    def __init__(self, redis: Redis, key: str, *, ttl_s: float, token: str | None = None) -> None:
        self.key = key
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.token = token or uuid.uuid4().hex
        # thread_local=False: the token belongs to this object, whichever task uses it
        self._lock = Lock(redis, key, timeout=self.ttl_ms / 1000, thread_local=False)

    async def acquire(self, wait_s: float = 0.0, *, poll_s: float = 0.02) -> bool:
        """Take the lock, polling every ``poll_s`` for up to ``wait_s``; True when taken."""
        self._lock.sleep = poll_s
        if wait_s <= 0:
            return bool(await self._lock.acquire(blocking=False, token=self.token))
        return bool(await self._lock.acquire(blocking=True, blocking_timeout=wait_s, token=self.token))

    async def release(self) -> bool:
        """Release the lock if this holder's token still owns it; True when it did."""
        try:
            await self._lock.release()
        except LockError:  # never taken here, or expired and taken by another (LockNotOwnedError)
            return False
        return True

    async def extend(self) -> bool:
        """Renew the lock's TTL if this holder still owns it; True when it did."""
        try:
            return await self._lock.extend(self.ttl_ms / 1000, replace_ttl=True)
        except LockError:
            return False

    @asynccontextmanager
    async def held(self, wait_s: float = 0.0) -> AsyncIterator[bool]:
        """Yields whether the lock was taken; keeps it alive while held; releases it after."""
        got = await self.acquire(wait_s)
        keeper: asyncio.Task[None] | None = None
        if got:
            keeper = asyncio.create_task(self._keep(), name=f"lock-keeper:{self.key}")
        try:
            yield got
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if got:
                with contextlib.suppress(RedisError, OSError):
                    await self.release()

    async def _keep(self) -> None:
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.ttl_ms / 3000)
            with contextlib.suppress(RedisError, OSError):
                if not await self.extend():
                    log.warning("lost VRAM lock %s (expired and taken by another replica)", self.key)
                    return


async def reserve_pending(
    redis: Redis,
    keys: Keys,
    host: str,
    model: str,
    nbytes: int,
    *,
    ttl_s: float = PENDING_TTL_S,
    now: float | None = None,
) -> None:
    """Count ``model`` as loading on ``host`` until the agent reports it (or ``ttl_s`` passes)."""
    until = (time.time() if now is None else now) + ttl_s
    await redis.hset(keys.vram_pending(host), model, f"{nbytes}:{until:.3f}")  # type: ignore[misc]
    await redis.expire(keys.vram_pending(host), int(ttl_s) + 1)


async def clear_pending(redis: Redis, keys: Keys, host: str, model: str) -> None:
    """Forget the pending load of ``model`` on ``host`` (best effort: Redis errors are ignored)."""
    with contextlib.suppress(RedisError, OSError):
        await redis.hdel(keys.vram_pending(host), model)  # type: ignore[misc]


async def pending_loads(redis: Redis, keys: Keys, host: str, *, now: float | None = None) -> dict[str, int]:
    """Loads made room for on ``host`` that have not expired: model -> bytes."""
    now = time.time() if now is None else now
    out: dict[str, int] = {}
    for model, raw in (await redis.hgetall(keys.vram_pending(host))).items():  # type: ignore[misc]
        nbytes, _, until = raw.decode().partition(":")
        with contextlib.suppress(ValueError):
            if float(until) > now:
                out[model.decode()] = int(nbytes)
    return out
