"""Versioned router prior artefacts in Redis: publish, activate, roll back, read.

* ``keys.router_priors`` — hash ``version → artefact JSON`` (a few KB each; at most
  :data:`KEEP` versions, the oldest inactive ones dropped first);
* ``keys.router_prior_active`` — the version every scorer replica uses; unset means the one
  shipped with the scorer (``turnout.scorer.learned_prior.SHIPPED``);
* ``keys.router_prior_history`` — versions active before, newest first: :func:`rollback` goes
  back one.

Every change publishes ``{"action": "reload_prior"}`` on ``keys.scorer_control``; scorers also
re-read the active version on their learned-index refresh, so a missed message heals. The
artefact itself is opaque here (JSON with ``version`` and ``created``): the scorer validates it
when it loads it and keeps its previous prior when it cannot.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from turnout.common.keys import Keys

KEEP = 20


class PriorStoreError(ValueError):
    """An unknown version or a malformed artefact."""


def _meta(data: bytes | str) -> dict[str, object]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PriorStoreError("a router prior artefact must be JSON") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("version"), str) or not obj["version"]:
        raise PriorStoreError("a router prior artefact needs a version")
    return obj


async def publish(redis: Redis, keys: Keys, artefact: bytes, *, activate: bool = True) -> str:
    """Store an artefact under its version (and make it the active one)."""
    version = str(_meta(artefact)["version"])
    await redis.hset(keys.router_priors, version, artefact)  # type: ignore[misc,arg-type]
    await _trim(redis, keys)
    if activate:
        await set_active(redis, keys, version)
    return version


async def versions(redis: Redis, keys: Keys) -> list[dict[str, object]]:
    """Every stored version with its provenance, newest first."""
    raw = await redis.hgetall(keys.router_priors)  # type: ignore[misc]
    active = await active_version(redis, keys)
    out = []
    for v, data in raw.items():
        try:
            meta = _meta(data)
        except PriorStoreError:
            continue
        version = v.decode() if isinstance(v, bytes) else str(v)
        out.append(
            {
                "version": version,
                "created": meta.get("created", 0.0),
                "trained_on": meta.get("trained_on", []),
                "notes": meta.get("notes", {}),
                "active": version == active,
            }
        )
    return sorted(out, key=lambda d: float(d["created"]), reverse=True)  # type: ignore[arg-type]


async def active_version(redis: Redis, keys: Keys) -> str | None:
    v = await redis.get(keys.router_prior_active)
    return v.decode() if isinstance(v, bytes) else v


async def load_active(redis: Redis, keys: Keys) -> bytes | None:
    """The active artefact; ``None`` when none is set (use the shipped one)."""
    v = await active_version(redis, keys)
    if not v:
        return None
    data = await redis.hget(keys.router_priors, v)  # type: ignore[misc]
    if data is None:
        raise PriorStoreError(f"the active router prior {v!r} is not stored")
    return data if isinstance(data, bytes) else str(data).encode()


async def set_active(redis: Redis, keys: Keys, version: str | None) -> None:
    """Activate ``version`` (``None``: the shipped prior); the previous one goes on the history."""
    if version is not None and not await redis.hexists(keys.router_priors, version):  # type: ignore[misc]
        raise PriorStoreError(f"no router prior version {version!r}")
    previous = await active_version(redis, keys)
    if previous == version:
        return
    async with redis.pipeline(transaction=True) as pipe:
        if previous:
            pipe.lpush(keys.router_prior_history, previous)
            pipe.ltrim(keys.router_prior_history, 0, KEEP - 1)
        if version is None:
            pipe.delete(keys.router_prior_active)
        else:
            pipe.set(keys.router_prior_active, version)
        pipe.publish(keys.scorer_control, orjson.dumps({"action": "reload_prior"}))
        await pipe.execute()


async def rollback(redis: Redis, keys: Keys) -> str | None:
    """Back to the version active before the current one (the shipped prior when none)."""
    while True:
        prev = await redis.lpop(keys.router_prior_history)  # type: ignore[misc]
        version = prev.decode() if isinstance(prev, bytes) else prev
        if version is None or await redis.hexists(keys.router_priors, version):  # type: ignore[misc]
            break
    async with redis.pipeline(transaction=True) as pipe:
        if version is None:
            pipe.delete(keys.router_prior_active)
        else:
            pipe.set(keys.router_prior_active, version)
        pipe.publish(keys.scorer_control, orjson.dumps({"action": "reload_prior"}))
        await pipe.execute()
    return version


async def _trim(redis: Redis, keys: Keys) -> None:
    raw = await redis.hgetall(keys.router_priors)  # type: ignore[misc]
    if len(raw) <= KEEP:
        return
    active = await active_version(redis, keys)
    dated = []
    for v, data in raw.items():
        name = v.decode() if isinstance(v, bytes) else str(v)
        try:
            created = float(_meta(data).get("created", 0.0))  # type: ignore[arg-type]
        except (PriorStoreError, TypeError, ValueError):
            created = 0.0
        if name != active:
            dated.append((created, name))
    dated.sort()
    drop = [name for _, name in dated[: len(raw) - KEEP]]
    if drop:
        await redis.hdel(keys.router_priors, *drop)  # type: ignore[misc]
