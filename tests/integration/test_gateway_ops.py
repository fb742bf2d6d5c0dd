"""Request events, feedback, model lists, readiness and metrics."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import (
    FakeScorer,
    Fleet,
    catalog_model,
    fixed,
    run_gateway,
    snapshot,
)
from tests.integration.test_gateway_resilience import metric, wait_events
from turnout.common.schemas.events import FeedbackEventV1

pytestmark = pytest.mark.integration

# shared fixtures (plain assignments: pytest finds them, ruff sees no redefinition)
fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hello there"}]}


async def test_each_request_lands_on_the_event_stream(redis_url, redis, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        ok = await http.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "req-ev-1"})
        streamed = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        first, second = await wait_events(redis, keys, 2)

    assert first.request_id == "req-ev-1"
    assert first.response_id == ok.json()["id"]
    assert (first.model, first.backend, first.status, first.outcome) == ("fake-8b", "alpha", 200, "ok")
    assert (first.route_source, first.stream, first.kind) == ("scorer", False, "chat")
    assert (first.prompt_tokens, first.completion_tokens) == (7, 5)
    assert [(a.backend, a.outcome) for a in first.attempts] == [("alpha", "ok")]
    assert [c.model for c in first.candidates] == ["fake-8b"]
    assert first.route_ms is not None and first.latency_ms >= first.route_ms
    assert first.ttft_ms is None
    assert second.stream is True and second.ttft_ms is not None and second.ttft_ms <= second.latency_ms
    assert second.response_id is not None and second.response_id in streamed.text
    assert second.completion_tokens == 5


async def test_feedback_is_accepted_and_published(redis, keys, fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        scored = await http.post("/v1/feedback", json={"response_id": "chatcmpl-1", "score": 0.5, "comment": "ok"})
        thumbs = await http.post("/v1/feedback", json={"response_id": "chatcmpl-2", "thumbs": "down"})
        both = await http.post("/v1/feedback", json={"response_id": "x", "score": 1, "thumbs": "up"})
        out_of_range = await http.post("/v1/feedback", json={"response_id": "x", "score": 3})
        wrong_type = await http.post("/v1/feedback", json={"response_id": "x", "score": "great"})
        missing = await http.post("/v1/feedback", json={"score": 1})
        malformed = await http.post("/v1/feedback", content=b"{", headers={"content-type": "application/json"})

    assert (scored.status_code, scored.json()) == (
        202,
        {"status": "accepted", "response_id": "chatcmpl-1", "score": 0.5},
    )
    assert thumbs.status_code == 202
    entries = await redis.xrange(keys.feedback_events)
    got = [FeedbackEventV1.model_validate_json(f[b"data"]) for _, f in entries]
    assert [(e.response_id, e.score, e.comment) for e in got] == [("chatcmpl-1", 0.5, "ok"), ("chatcmpl-2", -1.0, None)]
    assert (both.status_code, both.json()["error"]["code"]) == (400, "invalid_value")
    assert (out_of_range.status_code, out_of_range.json()["error"]["param"]) == (400, "score")
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (
        422,
        {"message": "score: Input should be a valid number, unable to parse string as a number",
         "type": "invalid_request_error", "param": "score", "code": "invalid_type"},
    )  # fmt: skip
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "missing_required_parameter")
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_json")


async def test_models_lists_the_virtual_model_first_then_the_catalog(redis, keys, fleet: Fleet, make_settings):
    await redis.set(
        keys.catalog_snapshot,
        snapshot(catalog_model("small-3b", "alpha", "s", 3), catalog_model("big-70b", "beta", "b", 70)),
    )
    async with run_gateway(make_settings()) as gw:
        client = gw.openai(api_key="x")
        models = [m.id async for m in client.models.list()]
        one = await client.models.retrieve("big-70b")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("nope")
    async with run_gateway(make_settings(list_real_models=False, virtual_model="auto")) as gw:
        client = gw.openai(api_key="x")
        only_virtual = [m.id async for m in client.models.list()]
    assert models == ["turnout/auto", "small-3b", "big-70b"]
    assert one.owned_by == "beta"
    assert only_virtual == ["auto"]


async def test_ready_means_can_serve_and_lists_what_is_degraded(redis_url, keys, fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        without_scorer = await http.get("/ready")
        async with FakeScorer(redis_url, keys, fixed(("m", "alpha", "u"))).running():
            with_scorer = await http.get("/ready")
        health = await http.get("/health")
    all_up = {"redis": True, "postgres": True, "scorer": True, "routes": True}
    running = {"running": True, "restarts": 0, "last_error": None}
    tasks = dict.fromkeys(
        ("catalog-refresh", "inflight-publish", "event-publish", "circuit-refresh", "drain-watch"), running
    )
    assert (without_scorer.status_code, without_scorer.json()) == (
        200,
        {"status": "degraded", "checks": {**all_up, "scorer": False}, "degraded": ["scorer"], "tasks": tasks},
    )
    assert (with_scorer.status_code, with_scorer.json()) == (
        200,
        {"status": "ok", "checks": all_up, "degraded": [], "tasks": tasks},
    )
    assert health.json() == {"status": "ok", "service": "gateway"}


async def test_ready_stays_200_while_postgres_is_unreachable(redis_url, key_prefix, fleet: Fleet, make_settings):
    settings = make_settings()
    settings = settings.model_copy(update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/none"})
    async with run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/ready")
    body = r.json()
    assert (r.status_code, body["status"], body["checks"], body["degraded"]) == (
        200,
        "degraded",
        {"redis": True, "postgres": False, "scorer": False, "routes": True},
        ["postgres", "scorer"],
    )


async def test_ready_is_503_with_nothing_to_route_to_or_while_draining(redis, keys, make_settings):
    async with run_gateway(make_settings(backends=[])) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        nothing = await http.get("/ready")
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        gw.app_state().drain.begin()
        draining = await http.get("/ready")
        still_serving = await http.get("/health")
    assert (nothing.status_code, nothing.json()["status"], nothing.json()["degraded"]) == (
        503,
        "unavailable",
        ["scorer", "routes"],
    )
    assert (draining.status_code, draining.json()["status"]) == (503, "draining")
    assert still_serving.status_code == 200


async def test_metrics_count_requests_attempts_and_access(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        await http.post("/v1/chat/completions", json=CHAT)
        await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        await http.post("/v1/chat/completions", json={"messages": 1})
        text = (await http.get("/metrics")).text
    assert metric(text, 'turnout_gateway_requests_total{backend="alpha",model="fake-8b",status="200"}') == 2.0
    assert metric(text, 'turnout_gateway_upstream_attempts_total{backend="alpha",outcome="ok"}') == 2.0
    assert metric(text, 'turnout_gateway_upstream_attempts_total{backend="beta",outcome="timeout"}') == 0.0
    assert metric(text, 'turnout_gateway_ttft_seconds_count{model="fake-8b"}') == 1.0
    assert metric(text, "turnout_gateway_in_flight ") == 0.0
    assert (
        metric(text, 'turnout_gateway_http_requests_total{method="POST",path="/v1/chat/completions",status="422"}')
        == 1.0
    )
    assert metric(text, 'turnout_rpc_calls_total{method="scorer.route.v1",outcome="ok"}') == 2.0
