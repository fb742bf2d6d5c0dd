"""Runtime profiling end to end against the simulated fleet (tools/fakefleet as a real process):
the profiler's arq worker discovers the fleet, profiles every model and stores scores and speeds
in Postgres that match what the fleet was configured to do; a model that times out or errors is
recorded as such (no zero scores); forced reprofiling and dead-letter retry work through the
gateway's admin endpoints."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select

from tests.conftest import migrated_database
from turnout.common.arq import DISCOVER_MODELS, create_job_pool
from turnout.common.arq_running import close_worker
from turnout.common.catalog import load_snapshot
from turnout.common.db.models import DeadLetter, Model, Profile
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.gateway.auth import AdminGuard
from turnout.gateway.errors import register_error_handlers
from turnout.gateway.routes import admin_catalog
from turnout.profiler.settings import ProfilerSettings
from turnout.profiler.worker import build_worker
from turnout.scorer.catalog import ModelTable
from turnout.scorer.scoring_config import ScoringConfig
from turnout.scorer.terms import expected_ttft_s

pytestmark = pytest.mark.integration

# 30 arithmetic prompts in the form the fleet answers with its configured accuracy
# ("... The answer is N. ..."): each is right or wrong by a fixed per-(model, prompt) coin.
PAIRS = [(17 + 3 * i, 25 + 7 * i) for i in range(30)]
SUITE = {
    "suite_version": "fleet-test-1",
    "prompts": [
        {
            "id": f"math.add{i}",
            "category": "math",
            "prompt": f"What is {a} + {b}?",
            "max_tokens": 64,
            "checks": [{"type": "numeric", "answer": a + b}],
            "reference": f"The answer is {a + b}.",
        }
        for i, (a, b) in enumerate(PAIRS)
    ],
}
FLEET = {
    "seed": 1,
    "listeners": [
        {
            "name": "ollama",
            "dialect": "ollama",
            "host_label": "fleet-gpu-0",
            "keep_alive": "5m",
            "models": [
                {"name": "good:7b", "params": "7B", "accuracy": 0.8, "tokens_per_s": 400, "ttft_ms": 20,
                 "prefill_tokens_per_s": 2000, "capabilities": ["completion", "tools"], "vram_bytes": "4GiB"},
                {"name": "poor:7b", "params": "7B", "accuracy": 0.2, "tokens_per_s": 150, "ttft_ms": 20,
                 "capabilities": ["completion"], "vram_bytes": "4GiB"},
                {"name": "sleepy:1b", "params": "1B", "ttft_ms": 3000, "capabilities": ["completion"],
                 "vram_bytes": "1GiB"},
                {"name": "broken:1b", "params": "1B", "capabilities": ["completion"], "vram_bytes": "1GiB"},
                {"name": "embed:latest", "params": "137M", "capabilities": ["embedding"], "vram_bytes": "512MiB"},
            ],
        },
        {
            "name": "openai",
            "dialect": "openai",
            "host_label": "fleet-gpu-1",
            "models": [{"name": "Perfect-3B", "params": "3B", "accuracy": 1.0, "tokens_per_s": 300,
                        "prefill_tokens_per_s": 2000, "capabilities": ["completion", "tools"], "vram_bytes": "2GiB"}],
        },
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    cfg.write_text(yaml.safe_dump(FLEET))
    argv = [
        sys.executable,
        "-m",
        "turnout.fakefleet",
        "--config",
        str(cfg),
        "--port",
        "ollama=0",
        "--port",
        "openai=0",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: line.update(v=proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(20)
    if not line.get("v"):
        proc.kill()
        raise RuntimeError(f"fakefleet did not start: {proc.communicate(timeout=5)[1].decode()}")
    try:
        yield orjson.loads(line["v"])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reads and closes both pipes


@pytest.fixture(scope="module")
def db(pg_admin_url: str) -> Iterator[str]:
    """A database of this module's own: its code reads whole tables."""
    with migrated_database(pg_admin_url, "prof") as url:
        yield url


def settings_for(fleet: dict[str, Any], redis_url: str, db: str, key_prefix: str, suite: Path) -> ProfilerSettings:
    urls = fleet["urls"]
    return ProfilerSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        backends=f"fleet:ollama={urls['ollama']},cloud:openai={urls['openai']}",
        profiler={
            "discover_on_schedule": False,
            "discover_at_startup": False,
            "max_jobs": 4,
            "profiling": {
                "suite_path": str(suite),
                "max_tries": 1,
                "per_backend": 2,
                "per_host": 2,
                "runner": {
                    "warmup_timeout_floor_s": 10,
                    "prompt_timeout_floor_s": 1.0,
                    "prompt_timeout_ceiling_s": 1.5,
                    "max_consecutive_failures": 3,
                    "probe_timeout_s": 5,
                },
            },
        },
    )


async def run_burst(settings: ProfilerSettings, *jobs: tuple[str, dict[str, Any]]) -> None:
    pool = await create_job_pool(settings.redis_url, settings.keys.profiler_queue)
    for name, kwargs in jobs:
        await pool.enqueue_job(name, **kwargs)
    await pool.aclose()
    worker = build_worker(settings, registry=CollectorRegistry(), burst=True, poll_delay=0.05)
    try:
        await asyncio.wait_for(worker.async_run(), 120)
    finally:
        await close_worker(worker)


async def profiles(db: str) -> dict[str, dict[str, Any]]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        rows = (
            await session.execute(
                select(Model.name, Profile.category, Profile.score, Profile.n_prompts, Profile.tokens_per_s,
                       Profile.ttft_ms, Profile.prefill_tokens_per_s, Profile.errors, Profile.timeouts,
                       Profile.grader, Profile.details,
                       Profile.suite_version, Profile.updated_at)
                .join(Model, Model.id == Profile.model_id)
            )
        ).all()  # fmt: skip
    return {r[0]: r._asdict() for r in rows}


@pytest.fixture(scope="module")
async def profiled(
    fleet: dict[str, Any], redis_url: str, db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ProfilerSettings, dict[str, dict[str, Any]]]]:
    """Discovery and profiling of the whole fleet, once for the module (the tests read it in order)."""
    key_prefix = f"sytest-{uuid.uuid4().hex[:10]}"
    suite = tmp_path_factory.mktemp("suite") / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    httpx.post(f"{fleet['urls']['admin']}/_fleet/reset").raise_for_status()
    httpx.post(f"{fleet['urls']['admin']}/_fleet/fail", json={"model": "broken:1b", "mode": "500"}).raise_for_status()
    settings = settings_for(fleet, redis_url, db, key_prefix, suite)
    await run_burst(settings, (DISCOVER_MODELS, {}))
    yield settings, await profiles(db)
    httpx.post(f"{fleet['urls']['admin']}/_fleet/reset").raise_for_status()


async def test_scores_and_speeds_match_the_fleet_configuration(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]],
) -> None:
    _, got = profiled
    assert set(got) == {"good:7b", "poor:7b", "sleepy:1b", "broken:1b", "Perfect-3B"}  # not the embedding model
    good, poor, perfect = got["good:7b"], got["poor:7b"], got["Perfect-3B"]
    assert good["suite_version"] == "fleet-test-1"
    assert good["n_prompts"] == 30 and good["grader"] == "numeric"
    assert good["score"] == pytest.approx(0.8, abs=0.15)
    assert poor["score"] == pytest.approx(0.2, abs=0.15)
    assert perfect["score"] == 1.0
    assert good["tokens_per_s"] == pytest.approx(400, rel=0.25)
    assert poor["tokens_per_s"] == pytest.approx(150, rel=0.25)
    assert perfect["tokens_per_s"] == pytest.approx(300, rel=0.5)  # client-side timing over the OpenAI dialect
    assert good["details"]["status"] == "ok" and good["details"]["speed_source"] == "backend"
    assert good["details"]["capabilities"]["tools"]["confirmed"] is True
    assert good["details"]["digest"] and good["details"]["size_bytes"]


async def test_prefill_speed_is_measured_from_counters_or_by_timing(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]],
) -> None:
    got = profiled[1]
    good, poor, perfect = got["good:7b"], got["poor:7b"], got["Perfect-3B"]
    # Ollama's prompt_eval counters: the fleet's prefill_tokens_per_s (2000) between ~17 and ~1,050 tokens
    assert good["prefill_tokens_per_s"] == pytest.approx(2000, rel=0.15)
    assert good["details"]["prefill_source"] == "backend"
    assert 1000 <= good["details"]["prefill_probe_tokens"] <= 1100
    # no prefill model configured: the prompt's length costs nothing, measured as very fast
    assert poor["prefill_tokens_per_s"] > 10_000
    # the OpenAI dialect has no counters: usage's prompt tokens over the client's times to first token
    assert perfect["prefill_tokens_per_s"] == pytest.approx(2000, rel=0.3)
    assert perfect["details"]["prefill_source"] == "timing"
    assert got["sleepy:1b"]["prefill_tokens_per_s"] is None  # no prompt answered: no long prompt sent


async def test_the_catalog_carries_the_measured_prefill_rate_to_the_scorer(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]], db: str
) -> None:
    got = profiled[1]
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        snapshot = await load_snapshot(session)
    by_name = {m.name: m for m in snapshot.models}
    assert by_name["good:7b"].prefill_tokens_per_s == round(got["good:7b"]["prefill_tokens_per_s"], 3)
    assert by_name["sleepy:1b"].prefill_tokens_per_s is None
    table = ModelTable.from_snapshot(CatalogSnapshotV1.model_validate_json(snapshot.model_dump_json()))
    i = table.index["good:7b"]
    assert table.prefill_tps[i] == by_name["good:7b"].prefill_tokens_per_s
    cfg = ScoringConfig()
    ttft = by_name["good:7b"].ttft_ms / 1000  # type: ignore[operator]
    rate = table.prefill_tps[i]
    expected = max(ttft - cfg.ttft_probe_tokens / rate, 0.0) + 4000 / rate
    assert expected_ttft_s(4000, table, cfg)[i] == pytest.approx(expected)


async def test_a_model_that_times_out_is_recorded_as_timing_out(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]],
) -> None:
    sleepy = profiled[1]["sleepy:1b"]
    assert sleepy["score"] is None and sleepy["n_prompts"] == 0
    assert sleepy["timeouts"] == 3
    assert sleepy["details"]["status"] == "failed"
    assert {p["status"] for p in sleepy["details"]["prompts"]} == {"timeout", "skipped"}


async def test_a_model_that_errors_is_recorded_and_dead_lettered(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]], db: str
) -> None:
    broken = profiled[1]["broken:1b"]
    assert broken["score"] is None and broken["n_prompts"] == 0
    assert broken["details"]["status"] == "failed"
    assert broken["details"]["run_errors"][0].startswith("warm-up: BackendStatusError")
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        dead = (await session.execute(select(DeadLetter.job, DeadLetter.payload))).all()
    assert [(d[0], d[1]["kwargs"]["model"]) for d in dead] == [("profile_model", "broken:1b")]


async def test_models_profiled_with_the_current_suite_are_not_profiled_again(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]], db: str
) -> None:
    settings, before = profiled
    await run_burst(settings, (DISCOVER_MODELS, {}))
    after = await profiles(db)
    assert after["good:7b"]["updated_at"] == before["good:7b"]["updated_at"]


def admin_app(settings: ProfilerSettings, redis: Redis, engine: Any) -> FastAPI:
    """The gateway's admin router over a stand-in for the gateway state (settings, Redis, engine)."""
    app = FastAPI()
    register_error_handlers(app)
    gw = SimpleNamespace(
        settings=SimpleNamespace(keys=settings.keys, admin_key=None),
        admin_guard=AdminGuard(None),
        redis=redis,
        engine=engine,
    )

    @app.middleware("http")
    async def state(request: Request, call_next: Any) -> Any:
        request.state.gw = gw
        return await call_next(request)

    app.include_router(admin_catalog.router)
    return app


async def test_reprofile_and_dead_letter_retry_through_the_admin_api(
    profiled: tuple[ProfilerSettings, dict[str, dict[str, Any]]], fleet: dict[str, Any], db: str, redis: Redis
) -> None:
    settings, before = profiled
    httpx.post(f"{fleet['urls']['admin']}/_fleet/fail", json={"model": "broken:1b", "mode": "ok"}).raise_for_status()
    async with engine_scope(db) as engine:
        transport = httpx.ASGITransport(app=admin_app(settings, redis, engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            r = await client.post("/admin/reprofile", params={"model": "good:7b", "force": "true"}, json={})
            assert r.status_code == 202 and r.json()["enqueued"] is True
            assert (await client.post("/admin/reprofile", params={"model": "nope:1b"}, json={})).status_code == 404
            status = (await client.get("/admin/profiling")).json()
            assert status["queue"] == ["good:7b"] and status["running"] == []
            dlq = (await client.get("/admin/dlq")).json()["dead_letters"]
            assert len(dlq) == 1 and dlq[0]["job"] == "profile_model"
            r = await client.post(f"/admin/dlq/{dlq[0]['id']}/retry", json={})
            assert r.status_code == 202 and r.json()["enqueued"] is True
            assert (await client.post("/admin/dlq/999999/retry")).status_code == 404
        await run_burst(settings)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            dlq = (await client.get("/admin/dlq")).json()["dead_letters"]
            assert dlq[0]["retried_at"] is not None
            assert (await client.get("/admin/profiling")).json()["queued"] == 0
    after = await profiles(db)
    assert after["good:7b"]["updated_at"] > before["good:7b"]["updated_at"]
    assert after["good:7b"]["score"] == before["good:7b"]["score"]  # the fleet is deterministic
    assert after["broken:1b"]["details"]["status"] == "ok"
    assert after["broken:1b"]["n_prompts"] == 30
