"""The routing cache against a real Redis: exact and semantic hits, versioning, invalidation, metrics."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.scorer.caches import RouteCacheConfig, RoutingCache

pytestmark = pytest.mark.integration


def reply(model: str) -> RouteReplyV1:
    return RouteReplyV1(
        candidates=[CandidateV1(model=model, backend="b", upstream_model=model, score=1.0, terms={"speed": 1.0})],
        analysis=PromptAnalysisV1(category="general"),
        catalog_version="v1",
    )


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def lookups(registry: CollectorRegistry, kind: str, outcome: str) -> float:
    v = registry.get_sample_value("turnout_scorer_route_cache_lookups_total", {"kind": kind, "outcome": outcome})
    return v or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def cache(redis, keys, registry) -> RoutingCache:
    cfg = RouteCacheConfig(ttl_s=30, threshold=0.95, sync_s=0.0, lookup_timeout_s=2.0)
    return RoutingCache(redis, keys, cfg, registry=registry)


async def test_exact_hit_ignores_whitespace_and_misses_on_other_features(cache, registry):
    req = RouteRequestV1(text="Tell me  about\nLisbon", quality=0.5)
    assert await cache.get(req, "v1") is None
    await cache.put(req, "v1", reply("m1"))
    hit = await cache.get(RouteRequestV1(text="Tell me about Lisbon ", quality=0.5), "v1")
    assert hit is not None and hit[1] == "exact" and hit[0].candidates[0].model == "m1"
    assert await cache.get(RouteRequestV1(text="Tell me about Lisbon", quality=0.9), "v1") is None
    assert await cache.get(RouteRequestV1(text="Tell me about Lisbon", quality=0.5, has_tools=True), "v1") is None
    assert (lookups(registry, "exact", "hit"), lookups(registry, "exact", "miss")) == (1.0, 3.0)


async def test_catalog_version_change_invalidates(cache):
    req = RouteRequestV1(text="hello")
    await cache.put(req, "v1", reply("m1"))
    assert await cache.get(req, "v1") is not None
    assert await cache.get(req, "v2") is None


async def test_semantic_hit_for_a_close_prompt_with_the_same_features(cache, registry, redis, keys):
    a = RouteRequestV1(text="What's the capital of France?")
    b = RouteRequestV1(text="what is the capital of france")
    await cache.put(a, "v1", reply("small"), unit(1, 0.01, 0))
    hit = await cache.get(b, "v1", unit(1, 0.02, 0))
    assert hit is not None and hit[1] == "semantic" and hit[0].candidates[0].model == "small"
    # far in embedding space: miss
    assert await cache.get(RouteRequestV1(text="prove Fermat"), "v1", unit(0, 0, 1)) is None
    # close but different non-text features: miss
    assert await cache.get(b.model_copy(update={"has_images": True}), "v1", unit(1, 0.02, 0)) is None
    assert lookups(registry, "semantic", "hit") == 1.0
    assert lookups(registry, "semantic", "miss") == 2.0
    # a second replica (its own mirror) sees the same entry through Redis
    other = RoutingCache(redis, keys, RouteCacheConfig(threshold=0.95, sync_s=0.0), registry=CollectorRegistry())
    hit = await other.get(b, "v1", unit(1, 0.03, 0))
    assert hit is not None and hit[1] == "semantic"


async def test_invalidate_drops_everything(cache, redis, key_prefix):
    await cache.put(RouteRequestV1(text="a"), "v1", reply("m"), unit(1, 0))
    await cache.put(RouteRequestV1(text="b"), "v2", reply("m"), unit(0, 1))
    assert await cache.invalidate() >= 3
    assert [k async for k in redis.scan_iter(match=f"{key_prefix}:routecache:*")] == []
    assert await cache.get(RouteRequestV1(text="a"), "v1", unit(1, 0)) is None


async def test_entries_expire(redis, keys):
    cache = RoutingCache(redis, keys, RouteCacheConfig(ttl_s=0.05, semantic=False), registry=CollectorRegistry())
    req = RouteRequestV1(text="soon gone")
    await cache.put(req, "v1", reply("m"))
    ttl = await redis.pttl(cache.exact_key("v1", req))
    assert 0 < ttl <= 50


async def test_redis_errors_are_misses_not_failures(keys):
    from redis.asyncio import Redis

    dead = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    cache = RoutingCache(dead, keys, registry=CollectorRegistry())
    try:
        req = RouteRequestV1(text="x")
        await cache.put(req, "v1", reply("m"), unit(1, 0))
        assert await cache.get(req, "v1", unit(1, 0)) is None
    finally:
        await dead.aclose()


async def test_stores_run_after_the_reply_through_a_bounded_writer(redis, keys, registry):
    cache = RoutingCache(redis, keys, RouteCacheConfig(max_pending_writes=2, sync_s=0.0), registry=registry)
    reqs = [RouteRequestV1(text=f"q{i}") for i in range(3)]
    assert [cache.store_later(r, "v1", reply(f"m{i}")) for i, r in enumerate(reqs)] == [True, True, False]
    assert await redis.exists(cache.exact_key("v1", reqs[0])) == 0  # nothing awaited Redis yet
    await cache.flush()
    got = [await cache.get(r, "v1") for r in reqs]
    assert [g[0].candidates[0].model if g else None for g in got] == ["m0", "m1", None]
    stores = {
        o: registry.get_sample_value("turnout_scorer_route_cache_stores_total", {"outcome": o})
        for o in ("ok", "dropped")
    }
    assert stores == {"ok": 2.0, "dropped": 1.0}


async def test_a_lookup_is_bounded_by_its_timeout_and_the_request_budget(redis, redis_url, keys, registry):
    from redis.asyncio import Redis

    cfg = RouteCacheConfig(lookup_timeout_s=0.05, semantic=False)
    cache = RoutingCache(redis, keys, cfg, registry=registry)
    req = RouteRequestV1(text="slow redis")
    await cache.put(req, "v1", reply("m"))
    assert await cache.get(req, "v1") is not None
    # no budget left: no lookup at all, though the entry is there
    assert await cache.get(req, "v1", budget_s=0.0) is None
    assert lookups(registry, "exact", "timeout") == 1.0
    # Redis stalls (CLIENT PAUSE, 300 ms): the lookup gives up at half the budget, not at the end
    client = Redis.from_url(redis_url)
    stalled = RoutingCache(client, keys, cfg, registry=CollectorRegistry())
    try:
        assert await stalled.get(req, "v1") is not None  # connected
        await redis.execute_command("CLIENT", "PAUSE", "300", "ALL")
        t0 = time.monotonic()
        assert await stalled.get(req, "v1", budget_s=0.02) is None
        assert time.monotonic() - t0 < 0.15
        assert lookups(registry, "exact", "timeout") == 1.0  # the other cache's metrics
        await asyncio.sleep(0.35)
        # the connection the timeout cut is not reused half-read: the next lookup answers right
        hit = await stalled.get(req, "v1")
        assert hit is not None and hit[0].candidates[0].model == "m"
    finally:
        await client.aclose()
