"""Requests in flight, shared by every gateway through Redis; summed by the scorer.

Each gateway *process* owns one hash, ``keys.inflight(gateway_id)``: field
``backend<TAB>upstream model`` -> the number of requests that process has in flight there.
It writes absolute counts (never deltas), replaces the whole hash in one ``MULTI`` and gives it
a TTL, and lists itself in ``keys.inflight_gateways`` (sorted set id -> expiry). So:

* a crashed gateway's counts vanish when its TTL runs out (never a phantom count pinning a
  model in VRAM while other gateways are busy);
* a Redis restart loses nothing that is not rewritten on the next publish, and no count can go
  negative (there is no decrement);
* a reader sums the live hashes: :func:`read_inflight`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from redis.asyncio import Redis

from turnout.common.keys import Keys

SEP = "\t"
DEFAULT_TTL_S = 10.0


def field(backend: str, model: str) -> str:
    return f"{backend}{SEP}{model}"


async def write_inflight(
    redis: Redis, keys: Keys, gateway: str, counts: Mapping[tuple[str, str], int], *, ttl_s: float = DEFAULT_TTL_S
) -> None:
    """Replace ``gateway``'s counts (positive ones only); an empty map removes them."""
    key = keys.inflight(gateway)
    now = time.time()
    mapping = {field(b, m): n for (b, m), n in counts.items() if n > 0}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if mapping:
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(keys.inflight_gateways, {gateway: now + ttl_s})
        else:
            pipe.zrem(keys.inflight_gateways, gateway)
        pipe.zremrangebyscore(keys.inflight_gateways, "-inf", now)
        await pipe.execute()


async def read_inflight(redis: Redis, keys: Keys) -> dict[tuple[str, str], int]:
    """(backend, upstream model) -> requests in flight, summed over every live gateway."""
    ids = await redis.zrangebyscore(keys.inflight_gateways, time.time(), "+inf")
    if not ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for gid in ids:
            pipe.hgetall(keys.inflight(gid.decode() if isinstance(gid, bytes) else str(gid)))
        hashes = await pipe.execute()
    out: dict[tuple[str, str], int] = {}
    for h in hashes:
        for raw_field, raw_n in (h or {}).items():
            name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            backend, sep, model = name.partition(SEP)
            try:
                n = int(raw_n)
            except ValueError:
                continue
            if sep and n > 0:
                out[(backend, model)] = out.get((backend, model), 0) + n
    return out
