"""Shared rate limits over a real socket: one budget for every gateway, 429 with OpenAI's headers,
token budgets drawn from the estimate and corrected by the reply's usage."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, Fleet, fixed, response_cache_holds, run_gateway

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}
KEY = {"authorization": "Bearer client-1"}


async def test_two_gateways_share_one_request_budget_per_key(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    settings = make_settings(api_keys=["client-1", "client-2"], rate_limits={"requests_per_minute_per_key": 3})
    async with scorer.running(), run_gateway(settings) as one, run_gateway(settings) as two:
        async with httpx.AsyncClient(base_url=one.url) as a, httpx.AsyncClient(base_url=two.url) as b:
            got = [
                await a.post("/v1/chat/completions", json=CHAT, headers=KEY),
                await b.post("/v1/chat/completions", json=CHAT, headers=KEY),
                await a.post("/v1/chat/completions", json=CHAT, headers=KEY),
            ]
            refused = await b.post("/v1/chat/completions", json=CHAT, headers=KEY)
            other_key = await b.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer client-2"})
            metrics = (await b.get("/metrics")).text
    assert [r.status_code for r in got] == [200, 200, 200]
    assert refused.status_code == 429
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 60
    assert refused.json() == {
        "error": {
            "message": f"Rate limit reached for this API key: 3 requests per minute. Retry after {retry}s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert (
        refused.headers["x-ratelimit-limit-requests"],
        refused.headers["x-ratelimit-remaining-requests"],
        refused.headers["x-ratelimit-reset-requests"],
    ) == ("3", "0", f"{retry}s")
    assert other_key.status_code == 200
    assert 'turnout_gateway_rate_limited_total{limit="requests_per_key"} 1.0' in metrics
    assert len(fleet.alpha.received) == 4  # the refused request never reached a backend


async def test_the_token_budget_is_corrected_by_the_replys_usage(redis_url, keys, fleet: Fleet, make_settings):
    # "hi" is estimated at 0 + 4 = 4 tokens up front; the fake backend reports 12 used: 8 more are drawn
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    settings = make_settings(rate_limits={"tokens_per_minute_per_ip": 30})
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        statuses = []
        for _ in range(4):
            r = await http.post("/v1/chat/completions", json=CHAT)
            statuses.append(r.status_code)
            await asyncio.sleep(0.1)  # the usage correction is drawn after the reply
    # by estimate alone (4 each) all four would pass; with usage: 12, 24, then 24 + 4 = 28 passes
    # and is corrected to 36, so the fourth (36 + 4 > 30) is refused
    assert statuses == [200, 200, 200, 429]
    assert r.headers["x-ratelimit-limit-tokens"] == "30"
    assert r.json()["error"]["message"].startswith("Rate limit reached for this IP address: 30 tokens per minute.")


async def test_response_cache_hits_count_as_requests_and_their_replys_tokens(
    redis_url, keys, fleet: Fleet, make_settings
):
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    cached = {**CHAT, "temperature": 0}
    by_requests = make_settings(rate_limits={"requests_per_minute_per_ip": 2}, response_cache={"enabled": True})
    async with scorer.running(), run_gateway(by_requests) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        first = await http.post("/v1/chat/completions", json=cached)
        await response_cache_holds(redis_url, keys, 1)  # the reply is stored after it goes
        hit = await http.post("/v1/chat/completions", json=cached)
        refused = await http.post("/v1/chat/completions", json=cached)
    assert (first.status_code, hit.status_code, hit.headers.get("x-turnout-cache")) == (200, 200, "hit")
    assert refused.status_code == 429 and refused.headers["x-ratelimit-limit-requests"] == "2"
    assert len(fleet.alpha.received) == 1  # one request reached a backend; three were counted

    # tokens: the same sequence as test_the_token_budget_is_corrected_by_the_replys_usage, with the
    # second to fourth answered from the cache: each draws its estimate, then its stored usage (12)
    other = {**CHAT, "messages": [{"role": "user", "content": "ho"}], "temperature": 0}
    by_tokens = make_settings(rate_limits={"tokens_per_minute_per_ip": 30}, response_cache={"enabled": True})
    async with scorer.running(), run_gateway(by_tokens) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        statuses = []
        for i in range(4):
            r = await http.post("/v1/chat/completions", json=other)
            statuses.append((r.status_code, r.headers.get("x-turnout-cache")))
            if i == 0:
                await response_cache_holds(redis_url, keys, 2)
            await asyncio.sleep(0.2)  # the usage correction is drawn after the reply
    assert statuses == [(200, "miss"), (200, "hit"), (200, "hit"), (429, None)]
    assert r.headers["x-ratelimit-limit-tokens"] == "30"


async def test_without_limits_nothing_is_counted(redis, keys, redis_url, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    async with scorer.running(), run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        statuses = {(await http.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(5)}
    assert statuses == {200}
    assert await redis.keys(keys.ratelimit("*") + "*") == []
