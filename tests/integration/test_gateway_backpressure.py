"""Bounds on waiting for backends, over a real socket: a hung model fails over within the bound its
profile gives, a full backend sends the request elsewhere (or 503 + Retry-After), a client that
leaves a non-streamed request cancels it upstream, and a non-object reply fails over."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, Fleet, catalog_model, fixed, run_gateway, snapshot
from tests.integration.test_gateway_resilience import wait_events
from turnout.common.schemas.catalog import CatalogModelV1
from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}


def profiled(name: str, backend: str, upstream: str, *, ttft_ms: float, tokens_per_s: float) -> CatalogModelV1:
    m = catalog_model(name, backend, upstream, 8)
    return m.model_copy(update={"ttft_ms": ttft_ms, "tokens_per_s": tokens_per_s})


async def test_a_hung_model_fails_over_within_its_profiled_bound(redis, redis_url, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = "slow"  # answers after 5 s: hung, for a model whose first byte takes ~40 ms
    await redis.set(
        keys.catalog_snapshot,
        snapshot(
            profiled("hung", "alpha", "up", ttft_ms=40, tokens_per_s=100),
            profiled("fine", "beta", "up", ttft_ms=40, tokens_per_s=100),
        ),
    )
    scorer = FakeScorer(redis_url, keys, fixed(("hung", "alpha", "up"), ("fine", "beta", "up")))
    # bound = clamp(10 x 40 ms, 0.3 s, 120 s) for the first byte, clamp(50 / 100 tok/s) between chunks: 0.5 s
    settings = make_settings(read_min_s=0.3, ttfb_factor=10, gap_factor=50)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        t0 = time.monotonic()
        streamed = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        stream_s = time.monotonic() - t0
        t0 = time.monotonic()
        whole = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        whole_s = time.monotonic() - t0
        events = await wait_events(redis, keys, 2)
    assert (streamed.status_code, streamed.headers["x-turnout-backend"]) == (200, "beta")
    assert (whole.status_code, whole.headers["x-turnout-backend"]) == (200, "beta")
    assert 0.45 < stream_s < 1.5  # max(0.4 s first byte, 0.5 s gap), not the backend's 5 s
    assert 1.35 < whole_s < 2.5  # a whole reply: 0.4 s first byte + 50 x 2 tokens / 100 tok/s
    assert [[(a.backend, a.outcome) for a in e.attempts] for e in events] == [
        [("alpha", "timeout"), ("beta", "ok")],
        [("alpha", "timeout"), ("beta", "ok")],
    ]


async def test_a_candidate_that_must_load_first_is_waited_on_for_its_expected_load_capped(
    redis, redis_url, keys, fleet: Fleet, make_settings
):
    """The scorer says alpha's model is not loaded (``load_s``): the gateway waits its profiled
    bound plus that estimate (at most ``load_wait_max_s``) before moving on; without it, a
    1-second "load" passes for a hung backend."""
    fleet.alpha.mode, fleet.alpha.slow_s = "slow", 1.0  # the first byte after a 1 s load
    await redis.set(
        keys.catalog_snapshot,
        snapshot(
            profiled("cold", "alpha", "up", ttft_ms=40, tokens_per_s=100),
            profiled("fine", "beta", "up", ttft_ms=40, tokens_per_s=100),
        ),
    )
    load_s: list[float | None] = [None]

    def decide(_: RouteRequestV1) -> RouteReplyV1:
        return RouteReplyV1(
            candidates=[
                CandidateV1(model="cold", backend="alpha", upstream_model="up", score=1.0, load_s=load_s[0]),
                CandidateV1(model="fine", backend="beta", upstream_model="up", score=0.9),
            ]
        )

    # a stream's bound: max(0.4 s first byte, 0.5 s gap) = 0.5 s; + the load, at most 0.2 s or 5 s
    for cap, expected in ((5.0, ["beta", "alpha"]), (0.2, ["beta", "beta"])):
        settings = make_settings(read_min_s=0.3, ttfb_factor=10, gap_factor=50, load_wait_max_s=cap)
        async with (
            FakeScorer(redis_url, keys, decide).running(),
            run_gateway(settings) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
        ):
            got = []
            for load in (None, 1.5):
                load_s[0] = load
                r = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
                assert r.status_code == 200
                got.append(r.headers["x-turnout-backend"])
        assert got == expected, (cap, got)


async def test_a_hung_model_without_a_profile_fails_over_within_the_unprofiled_bound(
    redis, redis_url, keys, fleet: Fleet, make_settings
):
    """A model just discovered (no profile yet) that hangs is bounded by ``read_unprofiled_s``, not by
    the flat ``read_timeout_s``: its slot is freed and the request fails over."""
    fleet.alpha.mode = "slow"  # answers after 5 s
    await redis.set(
        keys.catalog_snapshot, snapshot(catalog_model("hung", "alpha", "up", 8), catalog_model("fine", "beta", "up", 8))
    )
    scorer = FakeScorer(redis_url, keys, fixed(("hung", "alpha", "up"), ("fine", "beta", "up")))
    # stream: 0.6 s; whole reply of 2 tokens: 0.6 s + 2 / 4 tok/s = 1.1 s; the flat bound stays 120 s
    settings = make_settings(read_min_s=0.1, read_unprofiled_s=0.6, unprofiled_min_tokens_per_s=4)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        t0 = time.monotonic()
        streamed = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        stream_s = time.monotonic() - t0
        t0 = time.monotonic()
        whole = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        whole_s = time.monotonic() - t0
        events = await wait_events(redis, keys, 2)
    assert (streamed.status_code, streamed.headers["x-turnout-backend"]) == (200, "beta")
    assert (whole.status_code, whole.headers["x-turnout-backend"]) == (200, "beta")
    assert 0.55 < stream_s < 1.7
    assert 1.05 < whole_s < 2.2
    assert [[(a.backend, a.outcome) for a in e.attempts] for e in events] == [
        [("alpha", "timeout"), ("beta", "ok")],
        [("alpha", "timeout"), ("beta", "ok")],
    ]
    # the slot was held no longer than the bound (plus scheduling slack on a loaded machine)
    held_s = [e.attempts[0].latency_ms / 1000 for e in events]
    assert 0.55 < held_s[0] < 1.2 and 1.05 < held_s[1] < 1.7, held_s


async def test_a_full_backend_sends_the_request_to_the_next_candidate_then_503(
    redis, redis_url, keys, fleet: Fleet, make_settings
):
    fleet.alpha.mode = "hang"  # holds its one slot
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up"), ("m", "beta", "up")))
    settings = make_settings(max_connections_per_backend=1, slot_wait_s=0.1)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as held:
            lines = held.aiter_lines()  # kept open (leaving an `async for` would close the stream)
            while "partial" not in await anext(lines):
                pass
            moved = await http.post("/v1/chat/completions", json=CHAT)
            scorer.decide = fixed(("m", "alpha", "up"))
            t0 = time.monotonic()
            refused = await http.post("/v1/chat/completions", json=CHAT)
            waited = time.monotonic() - t0
    assert (moved.status_code, moved.headers["x-turnout-backend"]) == (200, "beta")
    assert (refused.status_code, refused.headers["retry-after"], refused.json()["error"]) == (
        503,
        "1",
        {
            "message": "backend alpha has no free connection slot",
            "type": "service_unavailable",
            "param": None,
            "code": "backend_busy",
        },
    )
    assert 0.1 <= waited < 1.0


async def test_a_client_that_leaves_a_whole_reply_cancels_the_upstream_request(
    redis, redis_url, keys, fleet: Fleet, make_settings
):
    fleet.alpha.mode = "slow"
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=0.5) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=CHAT)
        t0 = time.monotonic()
        await asyncio.wait_for(fleet.alpha.cancelled.wait(), timeout=3)
        cancelled_after = time.monotonic() - t0
        [event] = await wait_events(redis, keys, 1)
    assert cancelled_after < 1.0  # not the 5 s the backend would have taken
    assert (event.status, event.outcome, [a.outcome for a in event.attempts]) == (499, "cancelled", ["cancelled"])


@pytest.mark.parametrize("stream", [False, True])
async def test_a_reply_that_is_json_but_not_an_object_fails_over(
    redis, redis_url, keys, fleet: Fleet, make_settings, stream
):
    fleet.alpha.mode = "non_object"
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up"), ("m", "beta", "up")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        [event] = await wait_events(redis, keys, 1)
    assert (r.status_code, r.headers["x-turnout-backend"]) == (200, "beta")
    assert [(a.backend, a.outcome) for a in event.attempts] == [("alpha", "broken"), ("beta", "ok")]
