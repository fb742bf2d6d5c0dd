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

Each hash also holds, under ``@at``, the wall time at which its counts were taken
(:data:`AT_FIELD`; a field without a tab, which readers that only sum counts skip). A gateway
that has handed out a request since its last write writes again even when its counts did not
change (one ended as one began), and an idle one keeps a hash with ``@at`` alone until its TTL
runs out. The scorer reads the times with the counts (:func:`read_inflight_at`): a routing
decision it made for that gateway well before that time is in those counts (``scorer/notes.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as field_

from redis.asyncio import Redis

from turnout.common.keys import Keys

SEP = "\t"
DEFAULT_TTL_S = 10.0
AT_FIELD = "@at"
"""The field of a gateway's hash that holds when its counts were taken (wall time, seconds)."""


def field(backend: str, model: str) -> str:
    return f"{backend}{SEP}{model}"


@dataclass(frozen=True, slots=True)
class InflightRead:
    """What :func:`read_inflight_at` read: the summed counts, and per live gateway when its counts
    were taken (wall time; a gateway that writes no time is not in it)."""

    counts: dict[tuple[str, str], int] = field_(default_factory=dict)
    taken_at: dict[str, float] = field_(default_factory=dict)


async def write_inflight(
    redis: Redis,
    keys: Keys,
    gateway: str,
    counts: Mapping[tuple[str, str], int],
    *,
    ttl_s: float = DEFAULT_TTL_S,
    taken_at: float | None = None,
) -> None:
    """Replace ``gateway``'s counts (positive ones only), with the time they were taken when
    ``taken_at`` is given; an empty map without a time removes them."""
    key = keys.inflight(gateway)
    now = time.time()
    mapping: dict[str, int | str] = {field(b, m): n for (b, m), n in counts.items() if n > 0}
    if taken_at is not None:
        mapping[AT_FIELD] = repr(taken_at)
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
    return (await read_inflight_at(redis, keys)).counts


async def read_inflight_at(redis: Redis, keys: Keys) -> InflightRead:
    """:func:`read_inflight`'s counts, and when each live gateway took its counts."""
    ids = [
        gid.decode() if isinstance(gid, bytes) else str(gid)
        for gid in await redis.zrangebyscore(keys.inflight_gateways, time.time(), "+inf")
    ]
    if not ids:
        return InflightRead()
    async with redis.pipeline(transaction=False) as pipe:
        for gid in ids:
            pipe.hgetall(keys.inflight(gid))
        hashes = await pipe.execute()
    out = InflightRead()
    for gid, h in zip(ids, hashes, strict=True):
        for raw_field, raw_n in (h or {}).items():
            name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            backend, sep, model = name.partition(SEP)
            if not sep:
                if name == AT_FIELD:
                    with contextlib.suppress(ValueError):
                        out.taken_at[gid] = float(raw_n)
                continue
            try:
                n = int(raw_n)
            except ValueError:
                continue
            if n > 0:
                out.counts[(backend, model)] = out.counts.get((backend, model), 0) + n
    return out
