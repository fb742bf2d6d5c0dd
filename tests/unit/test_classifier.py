"""The LLM classifier against a loopback fake speaking the OpenAI chat-completions wire format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web

from turnout.scorer.classifier import ClassifierConfig, LLMClassifier
from turnout.scorer.prompt_analysis import AnalysisConfig, Analyzer, PromptFeatures

UNSURE = "implement a thread-safe LRU cache in Rust with tests"  # confidence < 0.5
SURE = "hi"


@dataclass
class FakeOpenAI:
    content: str = '{"category": "reasoning", "difficulty": "medium"}'
    status: int = 200
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=self.status)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": self.content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    f = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", f.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def heuristic(text: str):
    return Analyzer().analyze(PromptFeatures(text))


async def test_unsure_prompt_is_classified_by_the_model(fake, session):
    f, url = fake
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="qwen2.5:0.5b", api_key="k", timeout_s=2), session)
    a = heuristic(UNSURE)
    assert clf.should_ask(a)
    out = await clf.refine(UNSURE, a)
    assert (out.category, out.level, out.complexity, out.source) == ("reasoning", "medium", 0.5, "classifier")
    assert "classifier qwen2.5:0.5b: category reasoning (heuristic said coding)" in out.reasons
    sent = f.requests[0]
    assert sent["auth"] == "Bearer k"
    assert sent["body"]["model"] == "qwen2.5:0.5b"
    assert sent["body"]["temperature"] == 0
    assert sent["body"]["response_format"] == {"type": "json_object"}
    assert sent["body"]["messages"][-1] == {"role": "user", "content": UNSURE}


async def test_confident_prompt_is_not_sent(fake, session):
    f, url = fake
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", band=(0.4, 0.6)), session)
    a = heuristic(SURE)
    assert await clf.refine(SURE, a) is a
    assert f.requests == []


async def test_answers_are_cached(fake, session):
    f, url = fake
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=2), session)
    a = heuristic(UNSURE)
    first, second = await asyncio.gather(clf.refine(UNSURE, a), clf.refine(UNSURE, a))
    third = await clf.refine(UNSURE, a)
    assert first.category == second.category == third.category == "reasoning"
    assert len(f.requests) == 1
    assert clf.cache_hits >= 1


async def test_prose_wrapped_json_is_accepted(fake, session):
    f, url = fake
    f.content = 'Sure! ```json\n{"category": "creative", "difficulty": "hard"}\n```'
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=2), session)
    out = await clf.refine(UNSURE, heuristic(UNSURE))
    assert (out.category, out.level) == ("creative", "hard")


@pytest.mark.parametrize(
    ("content", "status", "delay_s"),
    [
        ('{"category": "poetry", "difficulty": "medium"}', 200, 0.0),  # out of vocabulary
        ("I think it is code", 200, 0.0),  # no JSON
        ('{"category": "coding", "difficulty": "medium"}', 500, 0.0),  # HTTP error
        ('{"category": "coding", "difficulty": "medium"}', 200, 0.5),  # too slow
    ],
)
async def test_failures_return_the_heuristic(fake, session, content, status, delay_s):
    f, url = fake
    f.content, f.status, f.delay_s = content, status, delay_s
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=0.1), session)
    a = heuristic(UNSURE)
    assert await clf.refine(UNSURE, a) is a
    assert clf.failures == 1
    assert await clf.refine(UNSURE, a) is a  # the failure is cached for a while
    assert len(f.requests) == 1


async def test_unreachable_endpoint_returns_the_heuristic(session):
    clf = LLMClassifier(ClassifierConfig(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=0.2), session)
    a = heuristic(UNSURE)
    assert await clf.refine(UNSURE, a) is a


async def test_extra_categories_are_offered_to_the_model(fake, session):
    f, url = fake
    f.content = '{"category": "legal", "difficulty": "hard"}'
    cfg = AnalysisConfig(extra_categories={"legal": ("contract",)})
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=2), session, analysis=cfg)
    out = await clf.refine(UNSURE, heuristic(UNSURE))
    assert out.category == "legal"
    assert "legal" in orjson.dumps(f.requests[0]["body"]["messages"][0]).decode()


async def test_no_time_within_the_deadline_asks_in_the_background_and_warms_the_cache(fake, session):
    f, url = fake
    f.delay_s = 0.05
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=1.0, margin_s=0.02), session)
    a = heuristic(UNSURE)
    first = await clf.refine(UNSURE, a, budget_s=0.1)  # the gateway's route deadline: no time to ask
    assert (first.category, first.source) == (a.category, "heuristic")
    assert first.reasons[-1] == "classifier: no time within the deadline, asked in the background"
    assert clf.deferred == 1
    again = await clf.refine(UNSURE, a, budget_s=0.1)  # the question is in flight: not asked twice
    assert again.source == "heuristic"
    for _ in range(100):
        if clf.calls == 1 and not clf._background:
            break
        await asyncio.sleep(0.02)
    assert len(f.requests) == 1
    warm = await clf.refine(UNSURE, a, budget_s=0.1)  # cached now: used at once
    assert (warm.category, warm.level, warm.source) == ("reasoning", "medium", "classifier")
    assert clf.cache_hits == 1


async def test_enough_budget_asks_inline_and_background_is_bounded(fake, session):
    f, url = fake
    clf = LLMClassifier(ClassifierConfig(base_url=url, model="m", timeout_s=0.5, max_background=1), session)
    out = await clf.refine(UNSURE, heuristic(UNSURE), budget_s=2.0)
    assert out.source == "classifier" and len(f.requests) == 1
    f.delay_s = 0.5
    other = [f"{UNSURE} number {i}" for i in range(3)]
    for text in other:
        await clf.refine(text, heuristic(text), budget_s=0.05)
    assert (clf.deferred, clf.dropped) == (3, 2)
    await clf.close()
    assert not clf._background
