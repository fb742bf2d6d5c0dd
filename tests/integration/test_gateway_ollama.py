"""Ollama clients use the gateway too: /api/chat, /api/generate, /api/embed, /api/tags."""

from __future__ import annotations

import httpx
import ollama
import orjson
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import (
    PNG_B64,
    REPLY_TEXT,
    FakeScorer,
    Fleet,
    catalog_model,
    fixed,
    run_gateway,
    snapshot,
)

pytestmark = pytest.mark.integration

# shared fixtures (plain assignments: pytest finds them, ruff sees no redefinition)
fleet = fakes.fleet
make_settings = fakes.make_settings


@pytest.mark.parametrize("backend", ["alpha", "olla"])
async def test_ollama_chat_with_and_without_streaming(redis_url, keys, fleet: Fleet, make_settings, backend):
    scorer = FakeScorer(redis_url, keys, fixed(("llama3.2:3b", backend, "llama3.2:3b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        client = gw.ollama()
        messages = [{"role": "user", "content": "hi", "images": [PNG_B64]}]
        whole = await client.chat(model="turnout/auto", messages=messages, options={"temperature": 0.5})
        parts = [p async for p in await client.chat(model="turnout/auto", messages=messages, stream=True)]

    assert whole.message.content == "".join(REPLY_TEXT)
    assert whole.model == "llama3.2:3b"
    assert whole.done is True
    assert (whole.prompt_eval_count, whole.eval_count) == ((9, 5) if backend == "olla" else (7, 5))
    assert "".join(p.message.content for p in parts) == "".join(REPLY_TEXT)
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    assert scorer.seen[0].has_images is True
    sent = getattr(fleet, backend).received[0]
    if backend == "olla":
        assert sent["messages"] == [{"role": "user", "content": "hi", "images": [PNG_B64]}]
        assert sent["options"] == {"temperature": 0.5}
    else:
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
        assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]
        assert sent["temperature"] == 0.5


async def test_ollama_generate_embed_and_tags(redis_url, redis, keys, fleet: Fleet, make_settings):
    await redis.set(
        keys.catalog_snapshot,
        snapshot(catalog_model("llama3.2:3b", "olla", "llama3.2:3b", 3), catalog_model("e", "olla", "e", 0.1)),
    )

    def decide(req):
        if req.kind == "embedding":
            return fixed(("nomic-embed-text:latest", "olla", "nomic-embed-text:latest"))(req)
        return fixed(("llama3.2:3b", "olla", "llama3.2:3b"))(req)

    async with FakeScorer(redis_url, keys, decide).running(), run_gateway(make_settings()) as gw:
        client = gw.ollama()
        gen = await client.generate(model="turnout/auto", prompt="Hello", system="terse")
        streamed = [p async for p in await client.generate(model="turnout/auto", prompt="Hello", stream=True)]
        emb = await client.embed(model="turnout/auto", input=["a", "b"])
        listed = await client.list()
        async with httpx.AsyncClient(base_url=gw.url) as http:
            legacy = (await http.post("/api/embeddings", json={"model": "x", "prompt": "a"})).json()
            version = (await http.get("/api/version")).json()

    assert gen.response == "".join(REPLY_TEXT) and gen.done
    assert fleet.olla.received[0]["messages"] == [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "Hello"},
    ]
    assert "".join(p.response for p in streamed) == "".join(REPLY_TEXT)
    assert [list(e) for e in emb.embeddings] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert legacy == {"embedding": [0.5, -0.25, 0.0]}
    assert [m.model for m in listed.models] == ["turnout/auto", "llama3.2:3b", "e"]
    assert version == {"version": "0.6.0"}


async def test_ollama_errors_are_in_ollama_shape(fleet: Fleet, make_settings):
    async with run_gateway(make_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        bad = await http.post("/api/chat", content=b"{nope", headers={"content-type": "application/json"})
        wrong = await http.post("/api/chat", json={"model": "m", "messages": [{"role": "user", "content": 3}]})
    assert (bad.status_code, bad.json()) == (400, {"error": "request body is not valid JSON"})
    assert (wrong.status_code, wrong.json()) == (422, {"error": "'messages[0].content' must be a string"})


async def test_ollama_load_and_unload_calls_are_answered_without_generating(redis, keys, fleet: Fleet, make_settings):
    """``ollama.chat(model)`` with no messages loads a model and ``generate(model, keep_alive=0)``
    unloads it, in Ollama; neither may become a generation on an empty prompt."""
    await redis.set(keys.catalog_snapshot, snapshot(catalog_model("llama3.2:3b", "olla", "llama3.2:3b", 3)))
    async with run_gateway(make_settings()) as gw:
        client = gw.ollama()
        loaded = await client.chat(model="llama3.2")  # tag-less, as Ollama resolves it
        unloaded = await client.generate(model="llama3.2:3b", keep_alive=0)
        virtual = await client.generate(model="turnout/auto")
        with pytest.raises(ollama.ResponseError) as missing:
            await client.chat(model="nope", messages=[])
        async with httpx.AsyncClient(base_url=gw.url) as http:
            streamed = await http.post("/api/chat", json={"model": "llama3.2:3b"})  # Ollama streams by default

    assert (loaded.model, loaded.done, loaded.done_reason, loaded.message.content) == ("llama3.2:3b", True, "load", "")
    assert (unloaded.model, unloaded.done_reason, unloaded.response) == ("llama3.2:3b", "unload", "")
    assert (virtual.model, virtual.done_reason) == ("turnout/auto", "load")
    assert (missing.value.status_code, missing.value.error) == (404, "model 'nope' not found")
    assert streamed.headers["content-type"] == "application/x-ndjson"
    assert [orjson.loads(line)["done_reason"] for line in streamed.text.splitlines()] == ["load"]
    assert fleet.olla.received == []  # no backend was asked to generate anything
