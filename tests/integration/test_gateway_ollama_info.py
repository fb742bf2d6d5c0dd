"""What Ollama clients need beyond chat (``/``, ``/api/show``, ``/api/ps``), remote image URLs
for Ollama backends behind the SSRF guard, and ``n > 1`` served or refused."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import httpx
import ollama
import openai
import pytest
from aiohttp import web

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
from turnout.common.schemas.fleet import HostStateV1, LoadedModelV1
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

ON_OLLA = ("llama3.2:3b", "olla", "llama3.2:3b")
ON_ALPHA = ("fake-8b", "alpha", "gpt-fake-8b")
GiB = 2**30


async def test_root_show_and_ps_for_ollama_clients(redis, keys, fleet: Fleet, make_settings):
    model = catalog_model("llama3.2:3b", "olla", "llama3.2:3b", 3.2, tools=True)
    model.family, model.quant, model.context_length = "llama", "Q4_K_M", 131072
    await redis.set(keys.catalog_snapshot, snapshot(model, catalog_model("e:latest", "olla", "e:latest", 0.1)))
    host = HostStateV1(
        host="gpu-0",
        backend="olla",
        loaded_models=[LoadedModelV1(name="llama3.2:3b", size_bytes=3 * GiB, vram_bytes=2 * GiB, expires_at=None)],
        ts=time.time(),
    )
    await redis.set(keys.fleet_host("gpu-0"), host.model_dump_json())
    await redis.zadd(keys.fleet_hosts, {"gpu-0": time.time()})
    async with run_gateway(make_settings()) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            root = await http.get("/")
            head = await http.head("/")
            missing = await http.post("/api/show", json={"model": "nope"})
            nameless = await http.post("/api/show", json={})
            openai_missing = await http.get("/v1/nope")
        client = gw.ollama()
        with pytest.raises(ollama.ResponseError) as pull:  # an endpoint Turnout does not serve
            await client.pull("llama3.2:3b")
        shown = await client.show("llama3.2:3b")
        bare = await client.show("e")  # tag-less: e:latest
        virtual = await client.show("turnout/auto")
        running = await client.ps()

    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len("Ollama is running")))
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    assert (nameless.status_code, nameless.json()) == (400, {"error": "'model' is a required property"})
    assert pull.value.status_code == 404 and isinstance(pull.value.error, str)
    assert "POST /api/pull is not served by Turnout" in pull.value.error
    assert openai_missing.status_code == 404 and openai_missing.json()["error"]["code"] == "not_found"
    assert shown.details is not None and (shown.details.family, shown.details.parameter_size) == ("llama", "3.2B")
    assert shown.details.quantization_level == "Q4_K_M"
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 131072
    assert bare.modelinfo is not None and bare.modelinfo["general.parameter_count"] == 100_000_000
    assert virtual.details is not None and virtual.details.family == "turnout"
    assert [(m.model, m.size, m.size_vram) for m in running.models] == [("llama3.2:3b", 3 * GiB, 2 * GiB)]
    assert running.models[0].details is not None and running.models[0].details.family == "llama"


# --- remote images -------------------------------------------------------------------------------


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    """A loopback web server with a PNG, an HTML page, a redirect and an oversized image."""
    png = base64.b64decode(PNG_B64)

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/cat.png")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 20_000, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", image)
    app.router.add_get("/page", page)
    app.router.add_get("/moved", moved)
    app.router.add_get("/huge.png", huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _ask(url: str) -> list[dict[str, object]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


async def test_remote_images_are_refused_from_private_addresses_by_default(
    redis_url, keys, fleet: Fleet, make_settings, image_server
):
    async with FakeScorer(redis_url, keys, fixed(ON_OLLA)).running(), run_gateway(make_settings()) as gw:
        client = gw.openai(api_key="x")
        errors = []
        for url in (f"{image_server}/cat.png", image_server.replace("127.0.0.1", "localhost") + "/cat.png"):
            with pytest.raises(openai.BadRequestError) as err:
                await client.chat.completions.create(model="turnout/auto", messages=_ask(url))
            errors.append(err.value.body)

    assert errors[0] == {
        "message": "image URL points to a non-public address (127.0.0.1)",
        "type": "invalid_request_error",
        "param": None,
        "code": "image_url_refused",
    }
    assert isinstance(errors[1], dict) and str(errors[1]["message"]).startswith(
        "image host localhost resolves to a non-public address"
    )
    assert fleet.olla.received == []  # refused before any attempt


async def test_remote_images_are_inlined_when_private_addresses_are_allowed(
    redis_url, keys, fleet: Fleet, make_settings, image_server
):
    settings = make_settings(images={"allow_private": True, "max_bytes": 10_000})
    async with FakeScorer(redis_url, keys, fixed(ON_OLLA)).running(), run_gateway(settings) as gw:
        client = gw.openai(api_key="x")
        direct = await client.chat.completions.create(model="turnout/auto", messages=_ask(f"{image_server}/cat.png"))
        await client.chat.completions.create(model="turnout/auto", messages=_ask(f"{image_server}/moved"))
        refused = {}
        for path in ("/page", "/huge.png", "/absent.png"):
            with pytest.raises(openai.BadRequestError) as err:
                await client.chat.completions.create(model="turnout/auto", messages=_ask(image_server + path))
            refused[path] = err.value.body["message"]  # type: ignore[index]

    assert direct.choices[0].message.content == "".join(REPLY_TEXT)
    assert [r["messages"][0]["images"] for r in fleet.olla.received] == [[PNG_B64], [PNG_B64]]
    assert refused == {
        "/page": f"image URL is not an image (text/html): {image_server}/page",
        "/huge.png": f"image is larger than 10000 bytes: {image_server}/huge.png",
        "/absent.png": f"image URL answered HTTP 404: {image_server}/absent.png",
    }


# --- n > 1 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [ON_OLLA, ON_ALPHA], ids=["ollama-fan-out", "openai-topped-up"])
async def test_n_choices_are_served_never_silently_one(redis_url, keys, fleet: Fleet, make_settings, where):
    async with FakeScorer(redis_url, keys, fixed(where)).running(), run_gateway(make_settings()) as gw:
        client = gw.openai(api_key="x")
        reply = await client.chat.completions.create(
            model="turnout/auto", messages=[{"role": "user", "content": "hi"}], n=3
        )
        with pytest.raises(openai.BadRequestError) as streamed:
            await client.chat.completions.create(
                model="turnout/auto", messages=[{"role": "user", "content": "hi"}], n=2, stream=True
            )

    assert [(c.index, c.message.content) for c in reply.choices] == [(i, "".join(REPLY_TEXT)) for i in range(3)]
    backend = fleet.olla if where is ON_OLLA else fleet.alpha
    assert len(backend.received) == 3
    per_call = 5
    assert reply.usage is not None and reply.usage.completion_tokens == 3 * per_call
    assert streamed.value.body["param"] == "n"  # type: ignore[index]
