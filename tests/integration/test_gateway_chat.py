"""The OpenAI API through the gateway, with the `openai` SDK, a real scorer RPC and fake backends."""

from __future__ import annotations

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import (
    PNG_B64,
    REPLY_TEXT,
    FakeScorer,
    Fleet,
    fixed,
    run_gateway,
)
from turnout.common.inflight import read_inflight_at

pytestmark = pytest.mark.integration

# shared fixtures (plain assignments: pytest finds them, ruff sees no redefinition)
fleet = fakes.fleet
make_settings = fakes.make_settings


async def test_non_streaming_chat_is_routed_by_the_scorer_and_forwarded(
    redis, redis_url, keys, fleet: Fleet, make_settings
):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        raw = await gw.openai().chat.completions.with_raw_response.create(
            model="turnout/auto",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hello"}],
            temperature=0.2,
            max_tokens=20,
            seed=7,
            extra_headers={"X-Turnout-Quality": "0.8", "X-Request-ID": "req-test-1"},
        )
        reply = raw.parse()
        # the route request names the gateway whose in-flight counts (with when it took them) the scorer reads
        gateway_id = scorer.seen[0].gateway_id
        assert gateway_id
        await fakes.eventually(lambda: _counted_after(redis, keys, gateway_id, scorer.seen_at[0]))

    assert reply.choices[0].message.content == "".join(REPLY_TEXT)
    assert reply.model == "fake-8b"
    assert reply.id.startswith("chatcmpl-") and reply.id != "chatcmpl-upstream"
    assert reply.usage is not None and reply.usage.total_tokens == 12
    assert raw.headers["x-turnout-model"] == "fake-8b"
    assert raw.headers["x-turnout-backend"] == "alpha"
    assert raw.headers["x-request-id"] == "req-test-1"
    sent = fleet.alpha.received[0]
    assert sent["model"] == "gpt-fake-8b"
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.2, 20, 7)
    [req] = scorer.seen
    assert req.requested_model is None
    assert req.text == "Say hello"
    assert req.quality == 0.8
    assert req.system_chars == len("be brief")
    assert req.n_messages == 2


async def _counted_after(redis, keys, gateway_id: str, at: float) -> bool:
    return (await read_inflight_at(redis, keys)).taken_at.get(gateway_id, 0.0) > at


async def test_streaming_chat_passes_chunks_through_with_usage_last(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        stream = await gw.openai().chat.completions.create(
            model="turnout/auto",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(REPLY_TEXT)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"fake-8b"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    assert fleet.alpha.include_usage_seen == [True]


async def test_stream_without_include_usage_has_no_empty_choices_chunk(redis_url, keys, fleet: Fleet, make_settings):
    """OpenAI's framing: without ``stream_options.include_usage`` every chunk has a choice, so the
    common ``chunk.choices[0].delta`` loop works; the gateway still asks the backend for usage."""
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        stream = await gw.openai().chat.completions.create(
            model="turnout/auto", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [c async for c in stream]

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(REPLY_TEXT)
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 6 + ["stop"]
    assert all(c.usage is None for c in chunks)
    assert fleet.alpha.include_usage_seen == [True]


async def test_body_turnout_options_set_quality_and_are_not_forwarded(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        await gw.openai().chat.completions.create(
            model="turnout/auto",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"turnout": {"quality": 0.1}},
        )
    assert scorer.seen[0].quality == 0.1
    assert "turnout" not in fleet.alpha.received[0]


async def test_openai_params_pass_through_untouched(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    params = {
        "top_p": 0.9,
        "max_completion_tokens": 33,
        "stop": ["\n\n"],
        "n": 1,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logprobs": True,
        "user": "u-1",
    }
    async with scorer.running(), run_gateway(make_settings()) as gw:
        await gw.openai().chat.completions.create(
            model="turnout/auto", messages=[{"role": "user", "content": "hi"}], **params
        )
    sent = fleet.alpha.received[0]
    assert {k: sent[k] for k in params} == params
    assert scorer.seen[0].has_tools is True and scorer.seen[0].json_mode is True


async def test_a_named_model_goes_to_the_scorer_as_requested_model(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("gpt-fake-8b", "alpha", "gpt-fake-8b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        reply = await gw.openai().chat.completions.create(
            model="gpt-fake-8b", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.model == "gpt-fake-8b"
    assert scorer.seen[0].requested_model == "gpt-fake-8b"


async def test_chat_on_an_ollama_backend_is_translated_both_ways(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("llava:7b", "olla", "llava:7b")))
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]
    async with scorer.running(), run_gateway(make_settings()) as gw:
        client = gw.openai()
        reply = await client.chat.completions.create(
            model="turnout/auto", messages=messages, temperature=0.3, max_tokens=50
        )
        stream = await client.chat.completions.create(
            model="turnout/auto", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]

    assert reply.choices[0].message.content == "".join(REPLY_TEXT)
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 5)
    sent = fleet.olla.received[0]
    assert fleet.olla.paths[0] == "/api/chat"
    assert sent["messages"] == [{"role": "user", "content": "what is this?", "images": [PNG_B64]}]
    assert sent["options"] == {"temperature": 0.3, "num_predict": 50}
    assert sent["stream"] is False
    assert scorer.seen[0].has_images is True
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(REPLY_TEXT)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_tool_calls_from_an_ollama_backend_come_back_in_openai_form(redis_url, keys, fleet: Fleet, make_settings):
    scorer = FakeScorer(redis_url, keys, fixed(("llama3.2:3b", "olla", "llama3.2:3b")))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    async with scorer.running(), run_gateway(make_settings()) as gw:
        reply = await gw.openai().chat.completions.create(
            model="turnout/auto", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
        )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Paris"}')
    assert fleet.olla.received[0]["tools"] == tools


async def test_completions_and_embeddings(redis_url, keys, fleet: Fleet, make_settings):
    def decide(req):
        if req.kind == "embedding":
            return fixed(("nomic-embed-text:latest", "olla", "nomic-embed-text:latest"))(req)
        return fixed(("fake-8b", "alpha", "gpt-fake-8b"))(req)

    scorer = FakeScorer(redis_url, keys, decide)
    async with scorer.running(), run_gateway(make_settings()) as gw:
        client = gw.openai()
        completion = await client.completions.create(model="turnout/auto", prompt="Hello", max_tokens=5)
        emb = await client.embeddings.create(model="turnout/auto", input=["a", "b"])  # SDK asks for base64
        emb_float = await client.embeddings.create(model="turnout/auto", input="a", encoding_format="float")

    assert completion.choices[0].text == " world" and completion.model == "fake-8b"
    assert completion.id.startswith("cmpl-")
    assert [d.embedding for d in emb.data] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert emb.model == "nomic-embed-text:latest" and emb.usage.prompt_tokens == 4
    assert emb_float.data[0].embedding == [0.5, -0.25, 0.0]
    assert fleet.olla.received[0] == {"model": "nomic-embed-text:latest", "input": ["a", "b"]}


async def test_request_id_is_generated_when_missing_or_malformed(redis_url, keys, fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        generated = await http.get("/health")
        kept = await http.get("/health", headers={"X-Request-ID": "abc-123"})
        replaced = await http.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"].startswith("req-")
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"].startswith("req-")


async def test_a_cookie_a_backend_sets_is_not_sent_with_later_requests(redis_url, keys, fleet: Fleet, make_settings):
    """One upstream session carries every client's requests: a backend's cookie must not ride along.
    (The backend is named by host name: aiohttp's cookie jar ignores cookies from IP addresses.)"""
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b")))
    by_name = [{**b, "url": b["url"].replace("127.0.0.1", "localhost")} for b in fleet.backends()]
    async with scorer.running(), run_gateway(make_settings(backends=by_name)) as gw:
        client = gw.openai()
        for text in ("first", "second", "third"):
            raw = await client.chat.completions.with_raw_response.create(
                model="turnout/auto", messages=[{"role": "user", "content": text}]
            )
            assert "set-cookie" not in raw.headers  # nor is it passed on to the client
    assert fleet.alpha.cookies_seen == [None, None, None]
