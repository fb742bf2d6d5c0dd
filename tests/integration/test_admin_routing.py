"""``/admin/explain``, ``/admin/reload`` and ``/admin/cache/invalidate`` through the gateway with a
real scorer (catalog in Postgres), and the gateway's response cache with fake backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.integration import test_gateway_fakes as fakes
from tests.integration import test_scorer_service as svc
from tests.integration.test_gateway_fakes import FakeScorer, fixed, run_gateway
from turnout.common import router_priors
from turnout.common.rpc import ROUTE_V1
from turnout.common.schemas.events import EVENT_FIELD
from turnout.common.schemas.route import RouteRequestV1
from turnout.devstack.infra import free_port
from turnout.scorer.app import Running, running_scorer
from turnout.scorer.learned_prior import load_prior
from turnout.scorer.settings import ScorerSettings

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings
scorer_db = svc.scorer_db
rpc = svc.rpc

HARD_CODE = "implement a thread-safe LRU cache in Rust with tests"


@pytest.fixture(scope="module")
def seeded(scorer_db: str) -> str:
    asyncio.run(
        svc.add_models(
            scorer_db,
            {"llama3.2:1b": ["gpu1"], "qwen2.5-coder:32b": ["gpu1"], "llava:7b": ["gpu2"], "llama3.3:70b": ["gpu2"]},
        )
    )
    return scorer_db


@pytest.fixture
async def scorer(redis_url: str, seeded: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Path]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("aliases: {fast: llama3.2:1b}\n")
    settings = ScorerSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=seeded,
        key_prefix=key_prefix,
        backends=[],
        scorer={
            "ops_host": "127.0.0.1",
            "ops_port": free_port(),
            "catalog_refresh_s": 60,
            "fleet_poll_s": 60,
            # the routing cache is off by default; the invalidation test needs it
            "routing": {"rules_file": str(rules), "rules_poll_s": 60, "route_cache": {"enabled": True}},
        },
    )
    async with running_scorer(settings, registry=CollectorRegistry(), rid="scorer-admin-test") as running:
        await svc.wait_for(lambda: svc._true(running.server.connected), what="the RPC server")
        yield running, rules


async def test_explain_shows_every_candidate_and_agrees_with_route(scorer, rpc, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        got = (await http.get("/admin/explain", params={"prompt": HARD_CODE})).json()
        posted = (
            await http.post(
                "/admin/explain",
                json={"model": "turnout/auto", "messages": [{"role": "user", "content": HARD_CODE}]},
            )
        ).json()
    routed = await rpc.call(
        ROUTE_V1, RouteRequestV1(text=HARD_CODE, est_prompt_tokens=len(HARD_CODE) // 4 + 4), timeout=2.0
    )
    assert got["analysis"]["category"] == "coding" and got["analysis"]["level"] == "hard"
    assert [c["model"] for c in got["candidates"]][:1] == [routed.candidates[0].model] == ["qwen2.5-coder:32b"]
    assert {c["model"] for c in got["candidates"]} == {"llama3.2:1b", "qwen2.5-coder:32b", "llava:7b", "llama3.3:70b"}
    for c in got["candidates"]:
        assert sum(c["terms"].values()) == pytest.approx(c["score"], abs=1e-3)
    assert posted["candidates"][0]["model"] == "qwen2.5-coder:32b"
    assert got["rules_version"] == posted["rules_version"] != "none"

    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        vision = (await http.get("/admin/explain", params={"prompt": "what is this?", "images": True})).json()
    assert [c["model"] for c in vision["candidates"]] == ["llava:7b"]
    assert vision["filtered"]["llama3.3:70b"] == "no vision support"


async def test_reload_applies_a_changed_rules_file(scorer, make_settings):
    _, rules = scorer
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        before = (await http.get("/admin/explain", params={"prompt": "hi", "model": "fast"})).json()
        assert before["candidates"][0]["model"] == "llama3.2:1b"
        rules.write_text("aliases: {fast: llama3.3:70b}\n")
        reply = (await http.post("/admin/reload", json={})).json()
        assert reply["status"] == "ok" and reply["scorer_replicas_notified"] >= 1

        async def switched() -> bool:
            r = (await http.get("/admin/explain", params={"prompt": "hi", "model": "fast"})).json()
            return bool(r["candidates"] and r["candidates"][0]["model"] == "llama3.3:70b")

        await svc.wait_for(switched, what="the new alias")


async def test_cache_invalidate_clears_the_routing_cache(scorer, rpc, redis, key_prefix, make_settings):
    await rpc.call(ROUTE_V1, RouteRequestV1(text="hello there"), timeout=2.0)
    assert [k async for k in redis.scan_iter(match=f"{key_prefix}:routecache:*")]
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        out = (await http.post("/admin/cache/invalidate", params={"which": "routing"}, json={})).json()
    assert out["scorer_replicas_notified"] >= 1

    async def empty() -> bool:
        return not [k async for k in redis.scan_iter(match=f"{key_prefix}:routecache:*")]

    await svc.wait_for(empty, what="the routing cache to be empty")


CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Say hello"}]}


async def test_deterministic_requests_are_answered_from_the_response_cache(redis_url, keys, fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            first = await http.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
            await fakes.response_cache_holds(redis_url, keys, 1)
            second = await http.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
            assert len(fleet.alpha.received) == 1
            assert first.headers["x-turnout-cache"] == "miss"
            assert second.headers["x-turnout-cache"] == "hit"
            assert second.headers["x-turnout-model"] == "fake-8b"
            a, b = first.json(), second.json()
            assert (b["choices"], b["usage"], b["model"]) == (a["choices"], a["usage"], a["model"])
            assert b["id"] != a["id"]  # a hit is this request's reply: feedback on it refers to it

            async with http.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "temperature": 0, "stream": True}
            ) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
            assert len(fleet.alpha.received) == 1  # replayed, not forwarded

            await http.post("/v1/chat/completions", json={**CHAT, "temperature": 0.7})
            await http.post("/v1/chat/completions", json={**CHAT, "temperature": 0.7})
            assert len(fleet.alpha.received) == 3  # not deterministic: not cached
            opted = {**CHAT, "temperature": 0.7, "turnout": {"cache": True}}
            await http.post("/v1/chat/completions", json=opted)
            await fakes.response_cache_holds(redis_url, keys, 2)
            hit = await http.post("/v1/chat/completions", json=opted)
            assert hit.headers["x-turnout-cache"] == "hit"
            assert len(fleet.alpha.received) == 4

            out = (await http.post("/admin/cache/invalidate", params={"which": "response"}, json={})).json()
            assert out["response_cache_entries_removed"] >= 2
            await http.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
            assert len(fleet.alpha.received) == 5
            metrics = (await http.get("/metrics")).text
    assert 'turnout_gateway_response_cache_lookups_total{kind="chat",outcome="hit"} 3.0' in metrics
    # every request, hits included, is counted and reported
    assert 'turnout_gateway_requests_total{backend="alpha",model="fake-8b",status="200"} 8.0' in metrics
    r = Redis.from_url(redis_url)
    try:
        for _ in range(50):  # published off the response path, in batches
            if await r.xlen(keys.request_events) >= 8:
                break
            await asyncio.sleep(0.1)
        events = [orjson.loads(fields[EVENT_FIELD.encode()]) for _, fields in await r.xrange(keys.request_events)]
    finally:
        await r.aclose()
    sources = [e["route_source"] for e in events]
    assert sources.count("cache") == 3 and len(events) == 8, sources
    hit_event = next(e for e in events if e["route_source"] == "cache")
    expected = ("fake-8b", 200, a["usage"]["prompt_tokens"])
    assert (hit_event["model"], hit_event["status"], hit_event["prompt_tokens"]) == expected
    assert hit_event["response_id"] == b["id"]


async def test_router_prior_versions_activate_and_roll_back_through_admin(scorer, make_settings, redis, keys):
    """A trained artefact published to Redis is hot-loaded by the scorer when activated through
    ``/admin/router/activate``; ``/admin/router/rollback`` goes back to the default (the shipped
    prior is off by default: no prior)."""
    shipped = load_prior()
    trained = replace(shipped, weights=shipped.weights * 0.5, version="deploy-test-1", created=1.0)
    await router_priors.publish(redis, keys, trained.to_json(), activate=False)
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        listed = (await http.get("/admin/router")).json()
        assert listed["active"] == "shipped"
        assert [v["version"] for v in listed["versions"]] == ["deploy-test-1"]
        assert (await http.get("/admin/explain", params={"prompt": HARD_CODE})).json()["learned"]["prior"] is None
        missing = await http.post("/admin/router/activate", json={"version": "nope"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        ok = await http.post("/admin/router/activate", json={"version": "deploy-test-1"})
        assert ok.json() == {"status": "ok", "active": "deploy-test-1"}

        async def prior_is(version: str | None) -> bool:
            r = (await http.get("/admin/explain", params={"prompt": HARD_CODE})).json()
            return bool(r["learned"]["prior"] == version)

        await svc.wait_for(lambda: prior_is("deploy-test-1"), what="the trained prior")
        back = (await http.post("/admin/router/rollback", json={})).json()
        assert back == {"status": "ok", "active": "shipped"}
        await svc.wait_for(lambda: prior_is(None), what="no prior again")
        assert (await http.get("/admin/router")).json()["active"] == "shipped"
