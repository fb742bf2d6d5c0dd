"""The profiler's chat client against fake Ollama (NDJSON) and OpenAI (SSE) servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.errors import BackendStatusError, BackendTimeout, BackendUnavailable
from turnout.devstack.infra import free_port
from turnout.profiler.chat import BackendChat, ChatRequest, PrefillSample

REQ = ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=8)


class Fake:
    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[dict[str, Any]] = []

    async def ollama_chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        if self.mode == "status":
            return web.json_response({"error": "model 'x' not found"}, status=404)
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await resp.prepare(request)
        for word in ("Hel", "lo"):
            await resp.write(
                orjson.dumps({"model": "m", "message": {"role": "assistant", "content": word}, "done": False}) + b"\n"
            )
            if self.mode == "slow":
                await asyncio.sleep(2)
        final = {
            "model": "m",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 900_000_000,
            "load_duration": 500_000_000,
            "prompt_eval_count": 12,
            "prompt_eval_duration": 50_000_000,
            "eval_count": 20,
            "eval_duration": 400_000_000,
        }
        await resp.write(orjson.dumps(final) + b"\n")
        return resp

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if self.mode == "status":
            return web.json_response({"error": {"message": "bad", "type": "invalid_request_error"}}, status=400)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")

        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        await send({"choices": [{"index": 0, "delta": {"content": "Hello"}}]})
        await asyncio.sleep(0.05)
        if body.get("tools"):
            call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            await send({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
        await send({"choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": "stop"}]})
        last: dict[str, Any] = {
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 11, "total_tokens": 16},
        }
        if self.mode == "llamacpp":
            # 40 prompt tokens processed (usage counts 5 here: what a cache served is not in prompt_n)
            last["timings"] = {"prompt_n": 40, "prompt_ms": 30.0, "predicted_per_second": 88.5}
        if self.mode != "no-usage":  # llama-cpp-python: neither usage nor timings in streams
            await send(last)
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    fake = Fake()
    app = web.Application()
    app.router.add_post("/api/chat", fake.ollama_chat)
    app.router.add_post("/v1/chat/completions", fake.openai_chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def chat(kind: str, url: str, session: aiohttp.ClientSession) -> BackendChat:
    return BackendChat(BackendConfig(name="b", kind=BackendKind(kind), url=url), session, "m")


async def test_ollama_counters_give_speed_ttft_and_load(fake: tuple[Fake, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    res = await chat("ollama", url, session)(REQ, timeout_s=10)
    assert res.text == "Hello"
    assert res.completion_tokens == 20 and res.prompt_tokens == 12
    assert res.backend_tokens_per_s == pytest.approx(50.0)
    assert res.tokens_per_s == pytest.approx(50.0)
    assert res.time_to_first_token_s == pytest.approx(0.05)
    assert res.load_s == pytest.approx(0.5)
    assert res.speed_source == "backend"
    assert res.prefill_sample == PrefillSample(tokens=12, seconds=0.05, source="backend")  # prompt_eval_*
    body = server.bodies[0]
    assert body["stream"] is True and body["options"]["num_predict"] == 8 and body["options"]["temperature"] == 0.0


async def test_openai_usage_and_client_timing(fake: tuple[Fake, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    res = await chat("openai", url, session)(REQ, timeout_s=10)
    assert res.text == "Hello world"
    assert res.completion_tokens == 11
    assert res.ttft_s is not None and res.ttft_s < res.total_s
    assert res.tokens_per_s is not None and res.tokens_per_s > 0
    assert res.speed_source == "client"
    assert server.bodies[0]["stream_options"] == {"include_usage": True}
    # vLLM-like: usage's prompt tokens over the client's time to first token
    assert res.prefill_sample == PrefillSample(tokens=5, seconds=res.ttft_s, source="timing")


async def test_llamacpp_timings_are_preferred(fake: tuple[Fake, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.mode = "llamacpp"
    res = await chat("openai", url, session)(REQ, timeout_s=10)
    assert res.tokens_per_s == pytest.approx(88.5)
    assert res.time_to_first_token_s == pytest.approx(0.03)
    assert res.prefill_sample == PrefillSample(tokens=40, seconds=0.03, source="backend")  # prompt_n / prompt_ms


async def test_without_usage_or_timings_speed_comes_from_content_chunks(
    fake: tuple[Fake, str], session: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.mode = "no-usage"
    res = await chat("openai", url, session)(REQ, timeout_s=10)
    assert res.text == "Hello world"
    assert res.completion_tokens is None and res.backend_tokens_per_s is None
    assert res.content_chunks == 2  # the empty role chunk does not count
    assert res.first_content_s is not None and res.last_content_s is not None
    # two chunks sent 50 ms apart: one token over that span. The client timestamps each chunk as
    # it reads it, so a busy loop that reads the first one late shortens the gap (a full run: 48.7 ms)
    assert res.last_content_s - res.first_content_s >= 0.04
    assert res.tokens_per_s is not None and 1.0 < res.tokens_per_s <= 25.0
    assert res.speed_source == "chunks"
    assert res.prefill_sample is None  # no prompt token count at all


async def test_tool_calls_are_collected(fake: tuple[Fake, str], session: aiohttp.ClientSession) -> None:
    _server, url = fake
    req = ChatRequest(messages=REQ.messages, tools=[{"type": "function", "function": {"name": "get_weather"}}])
    res = await chat("openai", url, session)(req, timeout_s=10)
    assert res.tool_calls[0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_http_errors_raise_status_errors(
    kind: str, fake: tuple[Fake, str], session: aiohttp.ClientSession
) -> None:
    server, url = fake
    server.mode = "status"
    with pytest.raises(BackendStatusError) as info:
        await chat(kind, url, session)(REQ, timeout_s=10)
    assert info.value.status in (400, 404)


async def test_a_slow_stream_times_out(fake: tuple[Fake, str], session: aiohttp.ClientSession) -> None:
    server, url = fake
    server.mode = "slow"
    with pytest.raises(BackendTimeout):
        await chat("ollama", url, session)(REQ, timeout_s=0.5)


async def test_connection_refused_is_unavailable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(BackendUnavailable):
        await chat("ollama", f"http://127.0.0.1:{free_port()}", session)(REQ, timeout_s=5)
