"""A routing-cache hit, read from a real Redis by ``RoutingEngine.route``, takes each model's
replicas in the order of the fleet now — their host queues included (``queue_aware``) — not in
the order cached: the request and its length reach :meth:`RoutingEngine.replicas_now`."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_engine import _queued_fleet
from turnout.common.schemas.route import CandidateV1, PromptAnalysisV1, RouteReplyV1, RouteRequestV1
from turnout.scorer.caches import RouteCacheConfig, RoutingCache

pytestmark = pytest.mark.integration

REQ = RouteRequestV1(text="Write a haiku about Oslo.", quality=0.5)


def cached_reply() -> RouteReplyV1:
    """m0 on ``a`` first, as it was cached; ``a``'s queue is now held behind a load."""
    return RouteReplyV1(
        candidates=[
            CandidateV1(model="m0", backend="a", upstream_model="m0", score=1.0),
            CandidateV1(model="m0", backend="b", upstream_model="m0", score=0.9),
        ],
        analysis=PromptAnalysisV1(category="general"),
    )


@pytest.mark.parametrize(("queue_aware", "first"), [(True, "b"), (False, "a")])
async def test_a_cache_hit_takes_the_replica_whose_host_queue_is_not_held(redis, keys, queue_aware, first):
    e = _queued_fleet(queue_aware=queue_aware)
    registry = CollectorRegistry()
    e.cache = RoutingCache(redis, keys, RouteCacheConfig(ttl_s=30, sync_s=0.0, semantic=False), registry=registry)
    await e.cache.put(REQ, e.version, cached_reply())
    reply = await e.route(REQ)
    hits = registry.get_sample_value("turnout_scorer_route_cache_lookups_total", {"kind": "exact", "outcome": "hit"})
    assert hits == 1.0  # answered from the cache, not decided anew
    # queue-aware: b, though busier (3 in flight against 1), since a's queue waits for a load;
    # without it the replica terms alone put the less busy a first
    assert [c.backend for c in reply.candidates] == [first, "a" if first == "b" else "b"]
