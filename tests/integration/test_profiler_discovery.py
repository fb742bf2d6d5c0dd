"""Model discovery against a tiny in-test server speaking the real Ollama (``/api/tags``,
``/api/show``) and OpenAI (``/v1/models``) formats, writing to a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select

from turnout.common.arq import DISCOVER_MODELS, create_job_pool
from turnout.common.arq_running import close_worker
from turnout.common.db.models import Backend, Deployment, Model
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.profiler.settings import ProfilerSettings
from turnout.profiler.worker import ProfilerContext, build_context, build_worker, discover

pytestmark = pytest.mark.integration

DETAILS_8B = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_K_M",
}
OLLAMA_MODELS: dict[str, dict[str, Any]] = {
    "llama3.1:8b": {
        "tags": {"size": 4920753328, "digest": "d1", "details": DETAILS_8B},
        "show": {"capabilities": ["completion", "tools"], "model_info": {"llama.context_length": 131072}},
    },
    "mystery:latest": {
        "tags": {
            "size": 4100000000,
            "digest": "d2",
            "details": {**DETAILS_8B, "family": "mllama", "parameter_size": "7.2B", "quantization_level": "Q8_0"},
        },
        "show": {"capabilities": ["completion", "vision"], "model_info": {"mllama.context_length": 8192}},
    },
    "nomic-embed-text:latest": {
        "tags": {
            "size": 274302450,
            "digest": "d3",
            "details": {**DETAILS_8B, "family": "nomic-bert", "parameter_size": "137M", "quantization_level": "F16"},
        },
        "show": {"capabilities": ["embedding"], "model_info": {"nomic-bert.context_length": 2048}},
    },
}


@dataclass
class FakeBackends:
    """An Ollama and an OpenAI-compatible server on one port; edit ``ollama``/``openai`` to change them."""

    ollama: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(OLLAMA_MODELS))
    openai: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": "llama3.1:8b", "object": "model", "created": 1, "owned_by": "vllm", "max_model_len": 32768},
            {"id": "Qwen2.5-7B-Instruct", "object": "model", "created": 1, "owned_by": "vllm"},
            {"id": "llava-v1.6-mistral-7b", "object": "model", "created": 1, "owned_by": "vllm"},
        ]
    )
    fail_tags: bool = False
    shows: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        async def tags(_: web.Request) -> web.Response:
            if self.fail_tags:
                return web.json_response({"error": "boom"}, status=500)
            models = [
                {"name": n, "model": n, "modified_at": "2025-01-01T00:00:00Z", **m["tags"]}
                for n, m in self.ollama.items()
            ]
            return web.json_response({"models": models})

        async def show(request: web.Request) -> web.Response:
            body = orjson.loads(await request.read())
            name = body.get("model") or body.get("name")
            self.shows.append(name)
            m = self.ollama.get(name)
            if m is None:
                return web.json_response({"error": f"model '{name}' not found"}, status=404)
            return web.json_response({"modelfile": "", "template": "", "details": m["tags"]["details"], **m["show"]})

        async def models(_: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": self.openai})

        app = web.Application()
        app.add_routes([web.get("/api/tags", tags), web.post("/api/show", show), web.get("/v1/models", models)])
        return app


@pytest.fixture
async def fake() -> AsyncIterator[FakeBackends]:
    backends = FakeBackends()
    runner = web.AppRunner(backends.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    backends.url = f"http://{host}:{port}"
    try:
        yield backends
    finally:
        await runner.cleanup()


def make_settings(redis_url: str, db: str, key_prefix: str, fake: FakeBackends, **profiler: Any) -> ProfilerSettings:
    return ProfilerSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        backends=f"local:ollama={fake.url},vllm:openai={fake.url}/v1",
        profiler={
            "discover_on_schedule": False,
            "discover_at_startup": False,
            "profiling": {"enabled": False},  # profiling has its own tests (test_profiling_fleet.py)
            **profiler,
        },
    )


@pytest.fixture
async def wctx(redis_url, db, key_prefix, fake) -> AsyncIterator[ProfilerContext]:
    redis = Redis.from_url(redis_url)
    ctx = await build_context(make_settings(redis_url, db, key_prefix, fake), redis, registry=CollectorRegistry())
    try:
        yield ctx
    finally:
        await ctx.exit_stack.aclose()
        await redis.aclose()


async def next_message(pubsub: Any, timeout: float = 3.0) -> dict[str, Any] | None:
    """The next published message (``get_message`` also returns None for subscribe confirmations)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return message
    return None


async def catalog(db: str) -> dict[str, dict[str, Any]]:
    """model name -> its row and its deployments {backend: (upstream, active)}."""
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        models = {m.name: m for m in (await session.execute(select(Model))).scalars()}
        deps = (
            await session.execute(
                select(Model.name, Backend.name, Deployment.upstream_name, Deployment.active)
                .join(Deployment, Deployment.model_id == Model.id)
                .join(Backend, Backend.id == Deployment.backend_id)
            )
        ).all()
    out: dict[str, dict[str, Any]] = {n: {"row": m, "on": {}} for n, m in models.items()}
    for model, backend, upstream, active in deps:
        out[model]["on"][backend] = (upstream, active)
    return out


async def backend_rows(db: str) -> dict[str, Backend]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        return {b.name: b for b in (await session.execute(select(Backend))).scalars()}


async def test_an_arq_worker_discovers_both_backends_and_publishes_catalog_changed(
    redis_url, db, key_prefix, fake, redis: Redis
):
    settings = make_settings(redis_url, db, key_prefix, fake)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(settings.keys.catalog_changed)
    pool = await create_job_pool(redis_url, settings.keys.profiler_queue)
    try:
        job = await pool.enqueue_job(DISCOVER_MODELS, _job_id="discover-test")
        assert job is not None
        assert await pool.enqueue_job(DISCOVER_MODELS, _job_id="discover-test") is None  # deduped while queued
        raw = await redis.get("arq:job:discover-test")
        assert orjson.loads(raw)["f"] == DISCOVER_MODELS  # JSON, not pickle
        worker = build_worker(settings, registry=CollectorRegistry(), burst=True, poll_delay=0.05)
        try:
            assert await worker.run_check() == 1
        finally:
            await close_worker(worker)
    finally:
        await pool.aclose()
    message = await next_message(pubsub)
    await pubsub.aclose()
    assert message is not None and orjson.loads(message["data"])["source"] == "profiler"

    cat = await catalog(db)
    assert sorted(cat) == [
        "Qwen2.5-7B-Instruct",
        "llama3.1:8b",
        "llava-v1.6-mistral-7b",
        "mystery:latest",
        "nomic-embed-text:latest",
    ]
    llama = cat["llama3.1:8b"]
    assert llama["on"] == {"local": ("llama3.1:8b", True), "vllm": ("llama3.1:8b", True)}
    row = llama["row"]
    assert (row.family, row.params_b, row.active_params_b, row.quant, row.size_bytes) == (
        "llama3.1",
        8.0,
        8.0,
        "Q4_K_M",
        4920753328,
    )
    assert row.capabilities == {
        "chat": True,
        "completion": True,
        "vision": False,
        "tools": True,
        "embedding": False,
        "json_mode": True,
    }
    # capabilities from /api/show even where the name says nothing; size from parameter_size
    mystery = cat["mystery:latest"]["row"]
    assert (mystery.capabilities["vision"], mystery.params_b, mystery.context_length) == (True, 7.2, 8192)
    embed = cat["nomic-embed-text:latest"]["row"]
    assert (embed.capabilities["embedding"], embed.capabilities["chat"], embed.params_b) == (True, False, 0.137)
    # OpenAI-compatible backends: capabilities from the name
    assert cat["llava-v1.6-mistral-7b"]["row"].capabilities["vision"] is True
    assert cat["Qwen2.5-7B-Instruct"]["row"].capabilities["tools"] is True
    backends = await backend_rows(db)
    assert {n: (b.kind, b.active, b.last_error) for n, b in backends.items()} == {
        "local": ("ollama", True, None),
        "vllm": ("openai", True, None),
    }


async def test_vanished_models_become_inactive_and_unchanged_models_are_not_described_again(wctx, db, fake):
    first = await discover(wctx)
    assert first.changed and first.published
    assert sorted(fake.shows) == ["llama3.1:8b", "mystery:latest", "nomic-embed-text:latest"]

    fake.shows.clear()
    again = await discover(wctx)
    assert (again.changed, again.published) == (False, False)
    assert fake.shows == []  # same digests: nothing to describe

    del fake.ollama["mystery:latest"]
    fake.openai = [m for m in fake.openai if m["id"] != "llama3.1:8b"]
    result = await discover(wctx)
    assert result.changed and result.deactivated_models == 1
    cat = await catalog(db)
    assert cat["mystery:latest"]["row"].active is False
    assert cat["mystery:latest"]["on"] == {"local": ("mystery:latest", False)}
    assert cat["llama3.1:8b"]["row"].active is True  # still on the Ollama backend
    assert cat["llama3.1:8b"]["on"] == {"local": ("llama3.1:8b", True), "vllm": ("llama3.1:8b", False)}

    fake.ollama["mystery:latest"] = OLLAMA_MODELS["mystery:latest"]
    back = await discover(wctx)
    assert back.changed
    assert (await catalog(db))["mystery:latest"]["row"].active is True


async def test_a_failing_backend_is_recorded_without_wiping_its_models(wctx, db, fake):
    await discover(wctx)
    fake.fail_tags = True
    result = await discover(wctx)
    assert result.backends["local"].outcome == "error"
    assert result.backends["vllm"].outcome == "ok"
    assert result.changed is False
    backend = (await backend_rows(db))["local"]
    assert backend.last_error is not None and "HTTP 500" in backend.last_error
    cat = await catalog(db)
    assert cat["mystery:latest"]["row"].active is True
    assert cat["mystery:latest"]["on"]["local"] == ("mystery:latest", True)

    fake.fail_tags = False
    await discover(wctx)
    assert (await backend_rows(db))["local"].last_error is None


async def test_one_backend_on_demand_and_an_unknown_one(wctx, db):
    result = await discover(wctx, "vllm")
    assert list(result.backends) == ["vllm"]
    assert sorted(await catalog(db)) == ["Qwen2.5-7B-Instruct", "llama3.1:8b", "llava-v1.6-mistral-7b"]
    unknown = await discover(wctx, "nope")
    assert unknown.backends["nope"].outcome == "error"


async def test_a_backend_removed_from_the_configuration_takes_its_models_out(redis_url, db, key_prefix, fake, wctx):
    await discover(wctx)
    redis = Redis.from_url(redis_url)
    settings = make_settings(redis_url, db, key_prefix, fake).model_copy(
        update={"backends": [b for b in wctx.settings.backends if b.name == "local"]}
    )
    only_local = await build_context(settings, redis, registry=CollectorRegistry())
    try:
        result = await discover(only_local)
    finally:
        await only_local.exit_stack.aclose()
        await redis.aclose()
    assert result.changed and result.deactivated_models == 2
    cat = await catalog(db)
    assert cat["Qwen2.5-7B-Instruct"]["row"].active is False
    assert cat["llama3.1:8b"]["row"].active is True
    assert (await backend_rows(db))["vllm"].active is False
