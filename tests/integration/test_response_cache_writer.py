"""The response cache's writes run after the response, through one bounded background writer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from turnout.common.keys import Keys
from turnout.gateway.response_cache import (
    CACHE_HEADER,
    ResponseCache,
    ResponseCacheOptions,
    cache_digest,
    cached_or_handle,
)

pytestmark = pytest.mark.integration


def lookups(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value(
        "turnout_gateway_response_cache_lookups_total", {"kind": "chat", "outcome": outcome}
    )


HEADERS = {"x-turnout-model": "m", "x-turnout-backend": "b", "content-type": "application/json"}


async def test_queued_answers_are_written_in_the_background(redis: Redis, keys: Keys) -> None:
    registry = CollectorRegistry()
    cache = ResponseCache(redis, keys, registry=registry)
    assert [cache.store_later("chat", f"d{i}", b'{"n": %d}' % i, HEADERS) for i in range(3)] == [True] * 3
    assert await redis.exists(cache.key("d0")) == 0  # nothing awaited Redis yet
    await cache.flush()
    got = [await cache.get("chat", f"d{i}") for i in range(3)]
    assert [(c.body, c.headers) for c in got if c is not None] == [
        (b'{"n": %d}' % i, {"x-turnout-model": "m", "x-turnout-backend": "b"}) for i in range(3)
    ]
    assert lookups(registry, "stored") == 3


async def test_past_the_bound_a_write_is_dropped_and_counted(redis: Redis, keys: Keys) -> None:
    opts = ResponseCacheOptions(max_pending_writes=2)
    registry = CollectorRegistry()
    cache = ResponseCache(redis, keys, opts, registry=registry)
    assert [cache.store_later("chat", f"d{i}", b"{}", HEADERS) for i in range(3)] == [True, True, False]
    await cache.flush()
    assert [await redis.exists(cache.key(f"d{i}")) for i in range(3)] == [1, 1, 0]
    assert lookups(registry, "dropped") == 1
    # the writer ended with the queue; the next store starts another
    assert cache.store_later("chat", "d9", b"{}", HEADERS)
    await cache.flush()
    assert await redis.exists(cache.key("d9")) == 1


async def test_an_eligible_miss_is_answered_before_its_answer_is_written(redis: Redis, keys: Keys) -> None:
    written = asyncio.Event()
    release = asyncio.Event()

    class HeldWrites(ResponseCache):
        async def put(self, kind: str, digest: str, body: bytes, headers: Mapping[str, str]) -> bool:
            await release.wait()  # the write cannot finish until the test says so
            stored = await super().put(kind, digest, body, headers)
            written.set()
            return stored

    cache = HeldWrites(redis, keys, registry=CollectorRegistry())
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})

    async def handle() -> Response:
        return Response(b'{"answer": 1}', media_type="application/json", headers={"x-turnout-model": "m"})

    resp = await asyncio.wait_for(
        cached_or_handle(request, cache, "chat", body, quality=None, client=None, handle=handle), timeout=2
    )
    assert resp.headers[CACHE_HEADER] == "miss"
    digest = cache_digest("chat", body, model="m", quality=None)
    assert not written.is_set() and await redis.exists(cache.key(digest)) == 0  # answered, not yet written
    release.set()
    await cache.flush()
    hit = await cache.get("chat", digest)
    assert hit is not None and hit.body == b'{"answer": 1}'
