"""Response shaping and stream framing over real sockets: the gateway in front of the simulated
fleet's reasoning model (``<think>`` blocks, fenced JSON), with the OpenAI and Ollama clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.test_gateway_fakes import FakeScorer, fixed, response_cache_holds, run_gateway
from turnout.fakefleet.config import FleetConfig
from turnout.fakefleet.server import Fleet
from turnout.gateway.settings import GatewayOptions, GatewaySettings

pytestmark = pytest.mark.integration

FLEET = """
listeners:
  - name: ollama
    dialect: ollama
    models:
      - {name: "qwen3:4b", params: 4B, capabilities: [completion, tools, thinking], fences_json: true, reply_tokens: 6}
  - name: openai
    dialect: openai
    models:
      - {name: "Qwen3-4B", params: 4B, capabilities: [completion, thinking], fences_json: true, reply_tokens: 6}
"""
THOUGHT = "Let me think about this request step by step."
ON_OLLAMA = ("qwen3:4b", "fleet-ollama", "qwen3:4b")
ON_OPENAI = ("Qwen3-4B", "fleet-openai", "Qwen3-4B")


@pytest.fixture
async def fakefleet() -> AsyncIterator[Fleet]:
    async with Fleet(FleetConfig.from_yaml(FLEET)) as f:
        yield f


@pytest.fixture
def settings(redis_url: str, database_url: str, key_prefix: str, fakefleet: Fleet) -> Callable[..., GatewaySettings]:
    def make(**gateway: Any) -> GatewaySettings:
        opts = {"route_timeout_s": 1.0, "catalog_refresh_s": 0.05, "inflight_publish_s": 0.05, **gateway}
        backends = [
            {"name": "fleet-ollama", "kind": "ollama", "url": fakefleet.url("ollama")},
            {"name": "fleet-openai", "kind": "openai", "url": fakefleet.url("openai")},
        ]
        return GatewaySettings.load(
            environment="test",
            redis_url=redis_url,
            database_url=database_url,
            key_prefix=key_prefix,
            backends=backends,
            gateway=GatewayOptions(**opts),
        )

    return make


ASK = [{"role": "user", "content": "Name three colors"}]


@pytest.mark.parametrize("where", [ON_OLLAMA, ON_OPENAI], ids=["ollama-backend", "openai-backend"])
async def test_think_blocks_move_to_reasoning_content_whole_and_streamed(redis_url, keys, settings, where):
    async with FakeScorer(redis_url, keys, fixed(where)).running(), run_gateway(settings()) as gw:
        client = gw.openai()
        whole = await client.chat.completions.create(model="turnout/auto", messages=ASK)
        chunks = [
            c async for c in await client.chat.completions.create(model="turnout/auto", messages=ASK, stream=True)
        ]

    answer = whole.choices[0].message.content
    assert answer is not None and "<think>" not in answer and answer.startswith(("Here", "Qwen3", "qwen3", "A ", "Sim"))
    assert (whole.choices[0].message.model_extra or {})["reasoning_content"] == THOUGHT
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert reasoning == THOUGHT + "\n"
    assert all(c.choices for c in chunks)  # no usage chunk: include_usage was not asked


async def test_strip_setting_no_think_and_signature(redis_url, keys, settings):
    shaping = {"reasoning": "strip", "signature": "-- {model}"}
    async with FakeScorer(redis_url, keys, fixed(ON_OPENAI)).running(), run_gateway(settings(shaping=shaping)) as gw:
        client = gw.openai()
        stripped = await client.chat.completions.create(model="turnout/auto", messages=ASK)
        asked = [{"role": "user", "content": "Name three colors /no_think"}]
        no_think = await client.chat.completions.create(
            model="turnout/auto", messages=asked, extra_body={"turnout": {"shaping": {"reasoning": "separate"}}}
        )

    msg = stripped.choices[0].message
    assert msg.content is not None and msg.content.endswith("\n\n-- Qwen3-4B") and "<think>" not in msg.content
    assert "reasoning_content" not in (msg.model_extra or {})
    # /no_think wins over the request's "separate", and the model did not think at all
    assert "reasoning_content" not in (no_think.choices[0].message.model_extra or {})


@pytest.mark.parametrize("stream", [False, True])
async def test_fenced_json_is_scrubbed_when_json_was_asked(redis_url, keys, settings, stream):
    async with FakeScorer(redis_url, keys, fixed(ON_OLLAMA)).running(), run_gateway(settings()) as gw:
        client = gw.openai()
        kw: dict[str, Any] = {"model": "turnout/auto", "messages": ASK, "response_format": {"type": "json_object"}}
        if stream:
            text = "".join(
                [
                    c.choices[0].delta.content or ""
                    async for c in await client.chat.completions.create(**kw, stream=True)
                ]
            )
        else:
            text = (await client.chat.completions.create(**kw)).choices[0].message.content or ""
        async with httpx.AsyncClient(base_url=gw.url) as http:
            raw = await http.post("/v1/chat/completions", json={"model": "turnout/auto", "messages": ASK})
        plain = raw.json()["choices"][0]["message"]["content"]

    assert json.loads(text)["answer"].startswith(("Here", "qwen3", "A ", "Sim"))
    assert "```" not in plain and not plain.startswith("{")  # not asked for JSON: nothing to scrub


async def test_ollama_think_field_gives_thinking_or_nothing(redis_url, keys, settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OPENAI)).running(), run_gateway(settings()) as gw:
        client = gw.ollama()
        thought = await client.chat(model="turnout/auto", messages=ASK, think=True)
        quiet = await client.chat(model="turnout/auto", messages=ASK, think=False)
        parts = [p async for p in await client.chat(model="turnout/auto", messages=ASK, think=True, stream=True)]

    assert thought.message.thinking == THOUGHT and "<think>" not in (thought.message.content or "")
    assert quiet.message.thinking is None and quiet.message.content == thought.message.content
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT + "\n"
    assert "".join(p.message.content or "" for p in parts) == thought.message.content


def _shape(lines: list[bytes]) -> list[Any]:
    """A stream's framing: per event, its object, choice keys, delta keys, finish reason, usage."""
    out: list[Any] = []
    for line in lines:
        if line == b"data: [DONE]":
            out.append("[DONE]")
            continue
        c = orjson.loads(line.removeprefix(b"data: "))
        choices = [(sorted(ch), sorted(ch.get("delta") or {}), ch.get("finish_reason")) for ch in c["choices"]]
        out.append((c["object"], choices, "usage" in c and c["usage"] is not None))
    return out


def _squash(shape: list[Any]) -> list[Any]:
    """Consecutive content events folded into one (a live stream sends one per token)."""
    out: list[Any] = []
    for s in shape:
        if out and s == out[-1]:
            continue
        out.append(s)
    return out


@pytest.mark.parametrize("include_usage", [False, True])
async def test_cached_and_live_streams_are_framed_alike(redis_url, keys, settings, include_usage):
    body: dict[str, Any] = {"model": "turnout/auto", "messages": ASK, "temperature": 0, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with FakeScorer(redis_url, keys, fixed(ON_OPENAI)).running(), run_gateway(settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            live = await http.post("/v1/chat/completions", json=body, headers={"X-Turnout-Cache": "off"})
            stored = await http.post("/v1/chat/completions", json={**body, "stream": False})
            await response_cache_holds(redis_url, keys, 1)
            cached = await http.post("/v1/chat/completions", json=body)

    assert (stored.headers["x-turnout-cache"], cached.headers["x-turnout-cache"]) == ("miss", "hit")
    live_lines = [ln for ln in live.content.split(b"\n") if ln]
    cached_lines = [ln for ln in cached.content.split(b"\n") if ln]
    assert _squash(_shape(live_lines)) == _squash(_shape(cached_lines))
    usage = ("chat.completion.chunk", [], True)
    assert (usage in _shape(live_lines), usage in _shape(cached_lines)) == (include_usage, include_usage)

    def text(lines: list[bytes], key: str) -> str:
        return "".join(
            ch["delta"].get(key) or ""
            for ln in lines
            if ln != b"data: [DONE]"
            for ch in orjson.loads(ln.removeprefix(b"data: "))["choices"]
        )

    assert text(live_lines, "content") == text(cached_lines, "content")
    assert text(cached_lines, "reasoning_content") == THOUGHT


async def test_ollama_generate_gets_thinking_apart(redis_url, keys, settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OPENAI)).running(), run_gateway(settings()) as gw:
        client = gw.ollama()
        whole = await client.generate(model="turnout/auto", prompt="Name three colors", think=True)
        parts = [p async for p in await client.generate(model="turnout/auto", prompt="Name three colors", stream=True)]

    assert whole.thinking == THOUGHT and "<think>" not in whole.response
    assert "".join(p.thinking or "" for p in parts) == THOUGHT + "\n"
    assert "".join(p.response for p in parts) == whole.response


async def test_think_false_reaches_ollama_backends_so_the_model_does_not_reason(redis_url, keys, settings):
    async with FakeScorer(redis_url, keys, fixed(ON_OLLAMA)).running(), run_gateway(settings()) as gw:
        client = gw.ollama()
        default = await client.chat(model="turnout/auto", messages=ASK)
        quiet = await client.chat(model="turnout/auto", messages=ASK, think=False)

    assert quiet.message.content == default.message.content and quiet.message.thinking is None
    assert default.message.thinking == THOUGHT
    # the think block (<think>, newline, 9 words, newline, </think>, blank line) was never generated
    assert (default.eval_count or 0) - (quiet.eval_count or 0) == 14
