"""Popping RPC lists in batches: one round trip takes every waiting item, up to a count.

``BLMPOP`` (Redis >= 7) blocks like ``BLPOP`` until the first of the keys has items, then
returns up to ``count`` of them at once. Under load a reply reader or a server thus pays one
round trip per batch instead of one per message; with one message waiting it costs the same as
``BLPOP``. Older servers answer "unknown command", and the popper falls back to ``BLPOP``.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError


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
