"""Fallback routing, next-candidate retries, broken streams and disconnects."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import (
    FakeScorer,
    Fleet,
    catalog_model,
    eventually,
    fixed,
    run_gateway,
    snapshot,
)
from turnout.common.inflight import read_inflight
from turnout.common.schemas.events import RequestEventV1
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration

# shared fixtures (plain assignments: pytest finds them, ruff sees no redefinition)
fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}


async def events(redis, keys) -> list[RequestEventV1]:
    entries = await redis.xrange(keys.request_events)
    return [RequestEventV1.model_validate_json(fields[b"data"]) for _, fields in entries]


async def wait_events(redis, keys, n: int) -> list[RequestEventV1]:
    for _ in range(200):
        got = await events(redis, keys)
        if len(got) >= n:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {n} events, got {len(await events(redis, keys))}")


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line {line_start!r}")


async def test_without_a_scorer_the_gateway_routes_by_its_fallback(redis, keys, fleet: Fleet, make_settings):
    await redis.set(
        keys.catalog_snapshot,
        snapshot(
            catalog_model("big-70b", "beta", "big-70b", 70),
            catalog_model("small-3b", "alpha", "small-3b", 3),
            catalog_model("embedder", "olla", "nomic-embed-text", 0.1, chat=False, embedding=True),
        ),
    )
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        reply = await gw.openai().chat.completions.create(**CHAT)
        text = (await http.get("/metrics")).text
        [event] = await wait_events(redis, keys, 1)

    assert reply.model == "small-3b"  # a short prompt goes to the smallest chat model
    assert fleet.alpha.received[0]["model"] == "small-3b"
    assert metric(text, 'turnout_gateway_fallback_routes_total{reason="unavailable"}') == 1.0
    assert event.route_source == "fallback"
    assert [c.model for c in event.candidates] == ["small-3b", "big-70b"]


async def test_a_slow_scorer_is_not_waited_for_past_its_deadline(redis_url, redis, keys, fleet: Fleet, make_settings):
    await redis.set(keys.catalog_snapshot, snapshot(catalog_model("small-3b", "alpha", "small-3b", 3)))
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "beta", "gpt-fake-8b")), delay_s=1.0)
    async with scorer.running(), run_gateway(make_settings(route_timeout_s=0.05)) as gw:
        reply = await gw.openai().chat.completions.create(**CHAT)
        [event] = await wait_events(redis, keys, 1)
    assert reply.model == "small-3b"
    assert event.route_source == "fallback"
    assert event.route_ms is not None and event.route_ms < 500


async def test_without_scorer_or_snapshot_the_backends_model_lists_are_used(redis, keys, fleet: Fleet, make_settings):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    async with run_gateway(make_settings()) as gw:
        client = gw.openai()
        vision = await client.chat.completions.create(
            model="turnout/auto", messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, image]}]
        )
        named = await client.chat.completions.create(model="gpt-fake-8b", messages=CHAT["messages"])
    assert vision.model == "llava:7b"
    assert fleet.olla.received[0]["model"] == "llava:7b"
    assert named.model == "gpt-fake-8b"
    events_ = await wait_events(redis, keys, 2)
    assert {e.route_source for e in events_} == {"fallback", "direct"}


async def test_a_5xx_candidate_is_skipped_for_the_next(redis_url, redis, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = "status"
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a"), ("m-b", "beta", "up-b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        stream = await gw.openai().chat.completions.create(**CHAT, stream=True)
        chunks = [c async for c in stream]
        [event] = await wait_events(redis, keys, 1)
    assert {c.model for c in chunks} == {"m-b"}
    assert [(a.backend, a.outcome) for a in event.attempts] == [("alpha", "status_5xx"), ("beta", "ok")]
    assert (event.backend, event.status, event.outcome) == ("beta", 200, "ok")


async def test_connection_refused_moves_to_the_next_candidate(redis_url, redis, keys, fleet: Fleet, make_settings):
    dead = {"name": "dead", "kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}
    scorer = FakeScorer(redis_url, keys, fixed(("m-d", "dead", "up-d"), ("m-a", "alpha", "up-a")))
    async with scorer.running(), run_gateway(make_settings(backends=fleet.backends(dead))) as gw:
        reply = await gw.openai().chat.completions.create(**CHAT)
        [event] = await wait_events(redis, keys, 1)
    assert reply.model == "m-a"
    assert [(a.backend, a.outcome) for a in event.attempts] == [("dead", "unavailable"), ("alpha", "ok")]


async def test_when_every_candidate_fails_the_client_gets_502(redis_url, redis, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = fleet.beta.mode = "status"
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a"), ("m-b", "beta", "up-b")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=CHAT)
        [event] = await wait_events(redis, keys, 1)
    assert r.status_code == 502
    assert r.json() == {
        "error": {
            "message": "all 2 candidates failed; last: beta is failing",
            "type": "upstream_error",
            "param": None,
            "code": "bad_gateway",
        }
    }
    assert (event.status, event.outcome, event.model) == (502, "bad_gateway", None)


async def test_rate_limited_everywhere_is_429(redis_url, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = "status"
    fleet.alpha.fail_status = 429
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"


async def test_a_backend_400_is_the_clients_error_and_not_retried(redis_url, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = "status"
    fleet.alpha.fail_status = 400
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a"), ("m-b", "beta", "up-b")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "alpha is failing"
    assert fleet.beta.received == []


async def test_a_backend_timeout_is_504(redis_url, keys, fleet: Fleet, make_settings):
    fleet.alpha.mode = "slow"
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a")))
    settings = make_settings(read_timeout_s=0.2)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"


async def test_no_candidate_at_all_is_503(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("m-x", "not-configured", "up")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_backend_available"


async def test_a_stream_broken_after_the_first_byte_ends_with_an_error_event(
    redis_url, redis, keys, fleet: Fleet, make_settings
):
    fleet.alpha.mode = "break"
    scorer = FakeScorer(redis_url, keys, fixed(("m-a", "alpha", "up-a"), ("m-b", "beta", "up-b")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        [event] = await wait_events(redis, keys, 1)
    events_ = [e for e in r.text.split("\n\n") if e]
    assert r.status_code == 200
    assert [orjson.loads(e[6:])["choices"][0]["delta"].get("content") for e in events_[:2]] == ["", "partial"]
    last = orjson.loads(events_[-1][6:])
    assert last["error"]["type"] == "service_unavailable"
    assert fleet.beta.received == []  # past the first byte, no retry
    assert (event.outcome, event.attempts[0].outcome) == ("upstream_error", "broken_unavailable")


@pytest.mark.parametrize("backend", ["alpha", "olla"])
async def test_stream_is_cancelled_upstream_when_the_client_disconnects(
    redis_url, redis, keys, fleet: Fleet, make_settings, backend
):
    fake = getattr(fleet, backend)
    fake.mode = "hang"
    scorer = FakeScorer(redis_url, keys, fixed(("m", backend, "up")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                async for line in r.aiter_lines():
                    if "partial" in line:
                        await eventually(lambda: _inflight_is(redis, keys, backend, 1))
                        break  # closes the connection
        await asyncio.wait_for(fake.cancelled.wait(), timeout=5)
        [event] = await wait_events(redis, keys, 1)
        await eventually(lambda: _inflight_is(redis, keys, backend, 0))
    assert (event.status, event.outcome) == (499, "cancelled")


async def _inflight_is(redis, keys, backend: str, value: int) -> bool:
    return (await read_inflight(redis, keys)).get((backend, "up"), 0) == value
