"""Moving RPC messages through Redis lists cheaply.

* :class:`BatchPop` — ``BLMPOP`` (Redis >= 7) blocks like ``BLPOP`` until the first of the keys
  has items, then returns up to ``count`` of them at once. Under load a reply reader or a server
  pays one round trip per batch instead of one per message; with one message waiting it costs the
  same as ``BLPOP``. Older servers answer "unknown command", and the popper falls back to ``BLPOP``.
* :class:`PushExpire` — ``RPUSH`` + ``EXPIRE`` atomically in one small Lua script (``EVALSHA``):
  the same effect as the two in a ``MULTI``, but one command and one reply instead of four, which
  in redis-py is most of an RPC call's client-side CPU. redis-py reloads the script by itself
  when the server lost it (``NOSCRIPT``), e.g. after a restart.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

_PUSH_EXPIRE_LUA = "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('EXPIRE', KEYS[1], ARGV[2])"


class PushExpire:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_PUSH_EXPIRE_LUA)

    async def __call__(self, key: str, payload: bytes, ttl_s: int) -> None:
        await self._script(keys=[key], args=[payload, ttl_s])


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
