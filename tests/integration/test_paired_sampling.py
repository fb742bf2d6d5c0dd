"""Paired sampling through the real gateway: a sampled chat request is also answered by the
reply's second candidate on another backend, a judge (a loopback fake speaking the OpenAI wire
format) compares the two, and one feedback event per model lands on the feedback stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, fixed, run_gateway
from turnout.common.schemas.events import EVENT_FIELD, FeedbackEventV1

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4000}


@pytest.fixture
async def judge() -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        content = '{"better": "A"}'
        return web.json_response(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield seen, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def feedback_events(redis: Any, keys: Any) -> list[FeedbackEventV1]:
    entries = await redis.xrange(keys.feedback_events)
    return [FeedbackEventV1.model_validate(orjson.loads(fields[EVENT_FIELD.encode()])) for _, fields in entries]


async def test_a_sampled_request_is_answered_twice_judged_and_fed_back(
    redis_url, keys, redis, fleet, make_settings, judge
):
    seen, judge_url = judge
    scorer = FakeScorer(
        redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b"), ("fake-70b", "beta", "gpt-fake-8b"))
    )
    paired = {"enabled": True, "share": 1.0, "max_per_minute": 1, "max_tokens": 64,
              "judge_base_url": judge_url, "judge_model": "judge-1"}  # fmt: skip
    async with scorer.running(), run_gateway(make_settings(paired_sampling=paired)) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            first = await http.post("/v1/chat/completions", json=CHAT)
            assert first.status_code == 200 and first.headers["x-turnout-model"] == "fake-8b"
            for _ in range(200):
                if len(await feedback_events(redis, keys)) >= 2:
                    break
                await asyncio.sleep(0.05)
            second = await http.post("/v1/chat/completions", json=CHAT)  # the per-minute budget is spent
            assert second.status_code == 200
            await asyncio.sleep(0.3)
    events = await feedback_events(redis, keys)
    assert [(e.model, e.client, e.response_id) for e in events] == [
        ("fake-8b", "paired-sampling", first.json()["id"]),
        ("fake-70b", "paired-sampling", first.json()["id"]),
    ]
    assert sorted(e.score for e in events) == [-1.0, 1.0]
    assert events[0].comment == "paired sampling: fake-8b vs fake-70b"
    # the client's request went to alpha; the paired one to beta with its answer capped
    assert len(fleet.alpha.received) == 2 and len(fleet.beta.received) == 1
    assert fleet.beta.received[0]["max_tokens"] == 64 and fleet.beta.received[0]["stream"] is False
    assert len(seen) == 1 and seen[0]["model"] == "judge-1"
    assert "Answer A:" in seen[0]["messages"][1]["content"]


async def test_off_by_default(redis_url, keys, redis, fleet, make_settings):
    scorer = FakeScorer(
        redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b"), ("fake-70b", "beta", "gpt-fake-8b"))
    )
    async with scorer.running(), run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200
            await asyncio.sleep(0.3)
    assert await feedback_events(redis, keys) == []
    assert len(fleet.beta.received) == 0
