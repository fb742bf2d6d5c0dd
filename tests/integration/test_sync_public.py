"""Public benchmark sync into Postgres: one transaction per source, name matching with confidence,
no-op reruns, a failing source keeps the previous data, status in Redis, catalog_changed, arq jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import select

from turnout.common.arq import CTX_KEY, SYNC_ALL_BENCHMARKS, create_job_pool
from turnout.common.arq_running import close_worker
from turnout.common.catalog import load_snapshot
from turnout.common.db.models import Backend, Benchmark, DeadLetter, Deployment, Model
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.keys import Keys
from turnout.devstack.infra import free_port
from turnout.gateway.auth import AdminGuard
from turnout.gateway.errors import register_error_handlers
from turnout.gateway.routes import admin_catalog
from turnout.sync.public import (
    PublicBenchmarksOptions,
    read_status,
    sync_source,
)
from turnout.sync.settings import SyncSettings
from turnout.sync.sources import SourceUnavailable
from turnout.sync.worker import SyncContext, build_worker

from .sources_fakes import SourcesServer, sources_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration

LOCAL = ["llama3.1:8b", "llama3.1:8b-instruct-q8_0", "qwen2.5:7b", "gemma2:9b", "mistral:7b-instruct-v0.3", "phi3:mini"]


@pytest.fixture
async def sessionmaker(db: str) -> AsyncIterator[Any]:
    async with engine_scope(db) as engine:
        sm = make_sessionmaker(engine)
        async with sm() as session, session.begin():
            backend = Backend(name="b1", kind="ollama", url="http://b1:11434")
            for name in LOCAL:
                model = Model(name=name, capabilities={}, details={})
                session.add_all([model, Deployment(model=model, backend=backend, upstream_name=name)])
        yield sm


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def options(server: SourcesServer, **kw: Any) -> PublicBenchmarksOptions:
    fast = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_attempts": 2}
    data: dict[str, Any] = {
        "sources": {
            "hf_leaderboard": {"url": f"{server.url}/rows", **fast},
            "lmarena": {"url": f"{server.url}/rows", **fast},
            "openrouter": {"url": f"{server.url}/api/v1/models", **fast},
            "artificial_analysis": {"url": f"{server.url}/api/v2/data/llms/models", "api_key": "test-key", **fast},
        },
        **kw,
    }
    return PublicBenchmarksOptions.model_validate(data)


async def rows(sm: Any, source: str) -> list[tuple[str, str, str | None, float | None, float]]:
    async with sm() as session:
        result = await session.execute(
            select(Benchmark.raw_model, Benchmark.metric, Model.name, Benchmark.match_confidence, Benchmark.score)
            .outerjoin(Model, Model.id == Benchmark.model_id)
            .where(Benchmark.source == source)
        )
        return [tuple(r) for r in result.all()]  # type: ignore[misc]


async def test_a_source_run_stores_scores_matched_with_confidence(
    sources_server: SourcesServer, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(sources_server)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.catalog_changed)
    result = await sync_source(
        opts.build()["hf_leaderboard"], http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts
    )
    assert result.outcome == "ok" and result.published
    assert result.rows == 6 * 7 - 1 and result.skipped == 3  # phi-3 has no IFEval
    stored = {(r[0], r[1]): r for r in await rows(sessionmaker, "hf_leaderboard")}
    llama = stored[("meta-llama/Llama-3.1-8B-Instruct", "ifeval")]
    assert llama[2] == "llama3.1:8b" and llama[3] == 1.0 and llama[4] == 0.4922
    assert stored[("Qwen/Qwen2.5-7B-Instruct", "mmlu_pro")][2] == "qwen2.5:7b"
    assert stored[("google/gemma-2-9b-it", "bbh")][2] == "gemma2:9b"
    assert stored[("meta-llama/Llama-3.1-70B-Instruct", "ifeval")][2] is None  # never across sizes
    assert result.matched == 4 * 7 + 6  # llama-8b, qwen, mistral, gemma, phi-3 (no 70B)
    msg = None
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg:
            break
    assert msg is not None and orjson.loads(msg["data"])["source"] == "sync:hf_leaderboard"
    await pubsub.aclose()


async def test_a_rerun_changes_nothing(
    sources_server: SourcesServer, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(sources_server)
    src = opts.build()["lmarena"]
    first = await sync_source(src, http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts)
    again = await sync_source(src, http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts)
    assert first.changed == first.rows > 0
    assert again.changed == 0 and not again.published
    matched = {r[0]: r[2] for r in await rows(sessionmaker, "lmarena") if r[1] == "elo_overall"}
    assert matched["llama-3.1-8b-instruct"] == "llama3.1:8b"
    assert matched["gpt-4o-2024-08-06"] is None


async def test_a_failing_source_keeps_the_previous_data_and_says_so(
    sources_server: SourcesServer, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(sources_server)
    src = opts.build()["openrouter"]
    await sync_source(src, http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts)
    before = await rows(sessionmaker, "openrouter")
    sources_server.fail = [503] * 5
    with pytest.raises(SourceUnavailable):
        await sync_source(src, http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts)
    assert sorted(await rows(sessionmaker, "openrouter")) == sorted(before)
    status = (await read_status(redis, keys, ["openrouter"]))["openrouter"]
    assert status["outcome"] == "error" and "503" in status["error"]
    assert status["last_ok"]["outcome"] == "ok" and status["last_ok"]["rows"] == len(before)


async def test_overrides_and_threshold_apply(
    sources_server: SourcesServer, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(
        sources_server,
        overrides={"Llama 3.1 Instruct 8B": "llama3.1:8b-instruct-q8_0", "Qwen2.5 Instruct 72B": None},
    )
    await sync_source(
        opts.build()["artificial_analysis"], http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts
    )
    stored = {(r[0], r[1]): r for r in await rows(sessionmaker, "artificial_analysis")}
    llama = stored[("Llama 3.1 Instruct 8B", "mmlu_pro")]
    assert (llama[2], llama[3]) == ("llama3.1:8b-instruct-q8_0", 1.0)


async def test_the_worker_runs_every_source_as_its_own_job(
    sources_server: SourcesServer, db: str, sessionmaker: Any, redis_url: str, redis: Redis, key_prefix: str
) -> None:
    opts = options(sources_server)
    dead_url = f"http://127.0.0.1:{free_port()}/api/v1/models"  # nothing listens: openrouter keeps failing
    public = opts.model_dump(mode="json")
    public["sources"]["openrouter"]["url"] = dead_url
    public["sources"]["artificial_analysis"]["api_key"] = "test-key"  # model_dump masks secrets
    settings = SyncSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        sync={
            "benchmarks_on_schedule": False,
            "benchmarks_at_startup": False,
            "consume_events": False,
            "max_tries": 2,
            "retry_base_s": 0.05,
            "public": {**public, "on_schedule": False},
        },
    )
    pool = await create_job_pool(redis_url, settings.keys.sync_queue)
    await pool.enqueue_job(SYNC_ALL_BENCHMARKS)
    await pool.aclose()
    worker = build_worker(settings, registry=CollectorRegistry(), burst=True, poll_delay=0.05)
    try:
        await asyncio.wait_for(worker.async_run(), 60)
        wctx = worker.ctx[CTX_KEY]
        assert isinstance(wctx, SyncContext)
        status = await read_status(redis, settings.keys, list(wctx.sources))
    finally:
        await close_worker(worker)
    outcomes = {k: (v or {}).get("outcome") for k, v in status.items()}
    assert sorted(outcomes) == ["artificial_analysis", "hf_leaderboard", "lmarena", "openrouter"]
    assert outcomes["openrouter"] == "error"
    assert [o for k, o in outcomes.items() if k != "openrouter"] == ["ok", "ok", "ok"]
    async with sessionmaker() as session:
        dead = (await session.execute(select(DeadLetter.job, DeadLetter.payload))).all()
    assert len(dead) == 1 and dead[0][0] == "sync_benchmarks" and dead[0][1]["args"] == ["openrouter"]
    assert len(await rows(sessionmaker, "lmarena")) > 0


async def test_only_quality_scores_reach_the_catalog(
    sources_server: SourcesServer, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(sources_server)
    for name in ("hf_leaderboard", "openrouter"):
        await sync_source(
            opts.build()[name], http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts
        )
    async with sessionmaker() as session:
        snapshot = await load_snapshot(session)
        quality = (
            (
                await session.execute(
                    select(Benchmark.score)
                    .join(Model, Model.id == Benchmark.model_id)
                    .where(Model.name == "llama3.1:8b", Benchmark.source == "hf_leaderboard")
                )
            )
            .scalars()
            .all()
        )
    assert any(
        r[1] == "price_prompt_usd_per_mtok" for r in await rows(sessionmaker, "openrouter") if r[2] == "llama3.1:8b"
    )
    llama = next(m for m in snapshot.models if m.name == "llama3.1:8b")
    assert llama.benchmark == pytest.approx(sum(quality) / len(quality), abs=1e-4)


def admin_app(redis: Redis, keys: Keys, engine: Any) -> FastAPI:
    app = FastAPI()
    register_error_handlers(app)
    gw = SimpleNamespace(
        settings=SimpleNamespace(keys=keys, admin_key=SecretStr("admin-secret")),
        admin_guard=AdminGuard(SecretStr("admin-secret")),
        redis=redis,
        engine=engine,
    )

    @app.middleware("http")
    async def state(request: Request, call_next: Any) -> Any:
        request.state.gw = gw
        return await call_next(request)

    app.include_router(admin_catalog.router)
    return app


async def test_admin_benchmarks_shows_matches_with_confidence_and_sync_runs(
    sources_server: SourcesServer, db: str, sessionmaker: Any, http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    opts = options(sources_server)
    await sync_source(
        opts.build()["lmarena"], http=http, sessionmaker=sessionmaker, redis=redis, keys=keys, options=opts
    )
    async with engine_scope(db) as engine:
        transport = httpx.ASGITransport(app=admin_app(redis, keys, engine))
        auth = {"Authorization": "Bearer admin-secret"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/admin/benchmarks")).status_code == 401
            doc = (await client.get("/admin/benchmarks", params={"matched": "true"}, headers=auth)).json()
            assert doc["sources"]["lmarena"]["outcome"] == "ok"
            llama = [b for b in doc["benchmarks"] if b["model"] == "llama3.1:8b"]
            assert {b["metric"] for b in llama} == {"elo_overall", "elo_coding", "elo_math"}
            assert all(b["match_confidence"] == 1.0 and b["match_method"] == "exact" for b in llama)
            one = (await client.get("/admin/benchmarks", params={"model": "gemma2:9b"}, headers=auth)).json()
            assert one["count"] == 0  # the arena lists gemma-2-27b, not the local 9B
            r = await client.post("/admin/sync-benchmarks", params={"source": "lmarena"}, headers=auth, json={})
            assert r.status_code == 202 and r.json()["enqueued"] is True
            r = await client.post("/admin/sync-benchmarks", headers=auth, json={})
            assert r.status_code == 202 and r.json() == {
                "source": None,
                "enqueued": True,
                "job_id": f"{keys.sync_queue}:sync_all_benchmarks",
            }
    queued = [j.decode() for j in await redis.zrange(keys.sync_queue, 0, -1)]
    # ids carry the queue (and so the stack's key prefix): another stack on this Redis that left a
    # sync_all_benchmarks job behind does not make this one a duplicate
    assert sorted(queued) == [f"{keys.sync_queue}:sync_all_benchmarks", f"{keys.sync_queue}:sync_benchmarks:lmarena"]
