"""The LLM judge against a fake OpenAI-compatible endpoint on loopback: retries, back-off, parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from turnout.profiler.errors import JudgeError
from turnout.profiler.judge import JudgeOptions, LLMJudge, parse_verdict


@dataclass
class FakeOpenAI:
    """Answers ``POST /v1/chat/completions`` from a script: each step is a status code and a
    message content (or a raw body); the last step repeats."""

    script: list[tuple[int, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    retry_after: str | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        status, content = self.script[min(len(self.requests), len(self.script)) - 1]
        if status != 200:
            hdrs = {"retry-after": self.retry_after} if self.retry_after else {}
            return web.json_response(
                {"error": {"message": "busy", "type": "server_error"}}, status=status, headers=hdrs
            )
        if content.startswith("RAW:"):
            return web.Response(body=content[4:].encode(), content_type="application/json")
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "judge-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return web.json_response(body)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_judge(base_url: str, session: aiohttp.ClientSession, **kw: Any) -> LLMJudge:
    opts = JudgeOptions(base_url=base_url, model="judge-model", backoff_initial_s=0.01, backoff_max_s=0.05, **kw)
    return LLMJudge(opts, session)


Call = Callable[[], Any]


async def test_429_then_success_is_retried(fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.script = [(429, ""), (200, '{"score": 8, "reasoning": "good"}')]
    server.retry_after = "0"
    verdict = await make_judge(url, session).judge(prompt="p", answer="a", rubric="r")
    assert verdict.score == 0.8
    assert verdict.reasoning == "good"
    assert len(server.requests) == 2


async def test_5xx_is_retried_with_backoff(fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.script = [(503, ""), (502, ""), (200, '{"score": 3}')]
    verdict = await make_judge(url, session).judge(prompt="p", answer="a", rubric="r")
    assert verdict.score == 0.3
    assert len(server.requests) == 3


async def test_fenced_json_verdict_is_parsed(fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.script = [(200, 'Here is my verdict:\n```json\n{"score": 9, "reasoning": "vivid"}\n```')]
    verdict = await make_judge(url, session).judge(prompt="p", answer="a", rubric="r")
    assert (verdict.score, verdict.reasoning) == (0.9, "vivid")


async def test_the_request_carries_model_rubric_answer_and_key(
    fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.script = [(200, '{"score": 5}')]
    judge = make_judge(url, session, api_key="sk-test", json_mode=True)
    await judge.judge(prompt="Write a haiku", answer="leaves fall", rubric="RUBRIC-X", reference="REF-Y")
    body = server.requests[0]
    assert body["model"] == "judge-model"
    assert body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    user = body["messages"][-1]["content"]
    assert "Write a haiku" in user and "leaves fall" in user and "RUBRIC-X" in user and "REF-Y" in user
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert judge.name == "judge:judge-model"


async def test_unreadable_verdicts_are_retried_then_fail(
    fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.script = [(200, "I would rather not say.")]
    with pytest.raises(JudgeError, match="3 attempt"):
        await make_judge(url, session, max_attempts=3).judge(prompt="p", answer="a", rubric="r")
    assert len(server.requests) == 3


async def test_malformed_completion_body_is_retried(
    fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.script = [(200, "RAW:{not json"), (200, '{"score": 10}')]
    verdict = await make_judge(url, session).judge(prompt="p", answer="a", rubric="r")
    assert verdict.score == 1.0


async def test_a_client_error_is_not_retried(fake: tuple[FakeOpenAI, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.script = [(400, "")]
    with pytest.raises(JudgeError, match="HTTP 400"):
        await make_judge(url, session).judge(prompt="p", answer="a", rubric="r")
    assert len(server.requests) == 1


async def test_connection_refused_is_retried_then_fails(session: aiohttp.ClientSession) -> None:
    from turnout.devstack.infra import free_port

    judge = make_judge(f"http://127.0.0.1:{free_port()}/v1", session, max_attempts=2)
    with pytest.raises(JudgeError, match="2 attempt"):
        await judge.judge(prompt="p", answer="a", rubric="r")


def test_judge_needs_a_url_and_a_model() -> None:
    assert not JudgeOptions().enabled
    with pytest.raises(ValueError):
        LLMJudge(JudgeOptions(), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 7, "reasoning": "ok"}', 0.7),
        ('{"Score": "7/10"}', 0.7),
        ('{"rating": 4.5}', 0.45),
        ('```\n{"score": 10}\n```', 1.0),
        ('<think>hmm</think>{"score": 2}', 0.2),
        ("Score: 6/10 - decent", 0.6),
        ('Verdict {"score": 0, "reasoning": "wrong"} end', 0.0),
    ],
)
def test_parse_verdict(reply: str, score: float) -> None:
    assert parse_verdict(reply).score == pytest.approx(score)


@pytest.mark.parametrize("reply", ["", "great answer!", '{"score": 11}', '{"score": true}', '{"score": -1}'])
def test_parse_verdict_rejects_what_is_not_a_score(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_verdict(reply)


def test_verdict_reasoning_is_bounded() -> None:
    v = parse_verdict(orjson.dumps({"score": 5, "reasoning": "x" * 5000}).decode())
    assert len(v.reasoning) == 500
