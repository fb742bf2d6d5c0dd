"""The benchmark file import job (``sync.benchmarks_file``): the ``local`` source's parser and
the public sources' run (name matching, upserts, catalog_changed, status), retries and dead
letters — against a real Postgres and Redis. Parsing details: tests/unit/test_sources_local_files.py;
matching: tests/unit/test_name_match.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from arq import Retry
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select

from turnout.common.arq import CTX_KEY, IMPORT_BENCHMARKS_FILE, create_job_pool
from turnout.common.arq_running import close_worker
from turnout.common.db.models import Backend, Benchmark, DeadLetter, Deployment, Model
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.metrics import dead_letters
from turnout.sync.public import read_status
from turnout.sync.settings import SyncSettings
from turnout.sync.sources import SourceError
from turnout.sync.worker import SyncContext, build_context, build_worker, import_benchmarks_file

pytestmark = pytest.mark.integration

LOCAL_MODELS = {
    "llama3.1:8b": "llama3.1:8b",
    "llama3.1:8b-instruct-q8_0": "llama3.1:8b-instruct-q8_0",
    "llama3.3:70b": "llama3.3:70b",
    "qwen2.5-coder:7b": "qwen2.5-coder:7b",
    "cloud/gpt-4o-mini": "gpt-4o-mini",
}

CSV = """model,metric,value,scale_min,scale_max,origin
meta-llama/Llama-3.1-8B-Instruct,mmlu,68.4,0,100,leaderboard
Llama-3.3-70B-Instruct,mmlu,86.0,0,100,leaderboard
qwen2.5-coder:7b,humaneval,0.884,,,my-evals
gpt-4o-mini,arena_elo,1270,1000,1400,arena
Meta-Llama-3.1-70B,mmlu,0.8,,,leaderboard
totally-unknown-model-3b,mmlu,0.5,,,leaderboard
llama3.1:8b,latency_ms,200,1000,0,my-evals
meta-llama/Llama-3.1-8B-Instruct,gsm8k_x,0.5,,,leaderboard
llama3.1:8b,mmlu,120,0,100,leaderboard
no-value-here,mmlu,,,,leaderboard
,mmlu,0.5,,,leaderboard
Qwen2.5-Coder-7B,mmlu,0.6,,,leaderboard
qwen2.5-coder:7b,humaneval,0.9,,,my-evals
"""


async def seed(db: str) -> dict[str, int]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session, session.begin():
        backend = Backend(name="b1", kind="ollama", url="http://b1:11434")
        session.add(backend)
        models = {}
        for name, upstream in LOCAL_MODELS.items():
            models[name] = m = Model(name=name, capabilities={}, details={})
            session.add(m)
            session.add(Deployment(model=m, backend=backend, upstream_name=upstream))
        await session.flush()
        return {n: m.id for n, m in models.items()}


def settings_for(redis_url: str, db: str, key_prefix: str, **sync: Any) -> SyncSettings:
    return SyncSettings.load(
        environment="test",
        redis_url=redis_url,
        database_url=db,
        key_prefix=key_prefix,
        backends=[],
        sync={"benchmarks_on_schedule": False, "benchmarks_at_startup": False, "consume_events": False, **sync},
    )


@pytest.fixture
async def ctx(redis_url, db, key_prefix, tmp_path) -> AsyncIterator[dict[str, Any]]:
    redis = Redis.from_url(redis_url)
    settings = settings_for(redis_url, db, key_prefix, benchmarks_file=str(tmp_path / "bench.csv"), max_tries=3)
    wctx = await build_context(settings, redis, registry=CollectorRegistry())
    try:
        yield {CTX_KEY: wctx, "job_try": 1, "job_id": "test"}
    finally:
        await wctx.exit_stack.aclose()
        await redis.aclose()


async def rows(db: str) -> dict[tuple[str, str, str], Benchmark]:
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        return {(b.source, b.metric, b.raw_model): b for b in (await session.execute(select(Benchmark))).scalars()}


async def test_a_csv_import_upserts_normalised_scores_matched_to_local_models(ctx, db, tmp_path, redis, keys):
    ids = await seed(db)
    (tmp_path / "bench.csv").write_text(CSV)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.catalog_changed)

    result = await import_benchmarks_file(ctx)
    # 13 rows: 2 malformed (no value, no model), one duplicate merged (the better score kept);
    # two rows name llama3.1:8b's mmlu: the one spelling the local name is linked, the other not
    assert (result.source, result.rows, result.matched, result.unmatched, result.skipped, result.changed) == (
        "local-file",
        10,
        7,
        3,
        2,
        10,
    )
    assert result.published
    assert result.notes == ["1 duplicate row(s) merged (best kept)"]
    assert [r.split(": ", 1)[1] for r in result.skip_reasons] == [
        "value '' is not a number",
        "model and metric are required",
    ]
    stored = {(metric, model): b for (_, metric, model), b in (await rows(db)).items()}
    llama = stored[("mmlu", "meta-llama/Llama-3.1-8B-Instruct")]
    assert (llama.model_id, llama.raw_value, llama.score) == (None, 68.4, 0.684)
    assert llama.details["origin"] == "leaderboard"
    own = stored[("mmlu", "llama3.1:8b")]
    assert (own.model_id, own.match_confidence, own.details["match"]["method"]) == (ids["llama3.1:8b"], 1.0, "exact")
    assert stored[("latency_ms", "llama3.1:8b")].model_id == ids["llama3.1:8b"]
    assert stored[("gsm8k_x", "meta-llama/Llama-3.1-8B-Instruct")].model_id == ids["llama3.1:8b"]
    assert stored[("mmlu", "Llama-3.3-70B-Instruct")].model_id == ids["llama3.3:70b"]
    assert stored[("arena_elo", "gpt-4o-mini")].model_id == ids["cloud/gpt-4o-mini"]
    assert stored[("arena_elo", "gpt-4o-mini")].score == pytest.approx(0.675)
    assert stored[("latency_ms", "llama3.1:8b")].score == pytest.approx(0.8)  # swapped scale: lower is better
    assert own.score == 1.0  # 120 on 0..100 is clamped
    assert stored[("humaneval", "qwen2.5-coder:7b")].score == 0.9  # the better duplicate
    assert stored[("mmlu", "Meta-Llama-3.1-70B")].model_id is None  # no local 70B llama3.1: never across sizes
    assert stored[("mmlu", "totally-unknown-model-3b")].model_id is None

    deadline = asyncio.get_running_loop().time() + 3
    message = None
    while message is None and asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
    await pubsub.aclose()
    assert message is not None and orjson.loads(message["data"])["source"] == "sync:local-file"
    status = await read_status(redis, keys, ["local-file"])
    assert status["local-file"]["outcome"] == "ok" and status["local-file"]["rows"] == 10

    again = await import_benchmarks_file(ctx)
    assert (again.changed, again.published) == (0, False)  # idempotent

    (tmp_path / "bench.csv").write_text(CSV.replace("68.4", "70.1"))
    changed = await import_benchmarks_file(ctx)
    assert changed.changed == 1
    assert (await rows(db))[("local-file", "mmlu", "meta-llama/Llama-3.1-8B-Instruct")].score == pytest.approx(0.701)


async def test_a_json_file_and_an_explicit_path_work_too(ctx, db, tmp_path):
    ids = await seed(db)
    path = tmp_path / "scores.json"
    doc = {
        "rows": [
            {"Model": "Qwen/Qwen2.5-Coder-7B-Instruct", "metric": "mbpp", "value": 72, "min": 0, "max": 100},
            {"model": "llama3.1:8b", "metric": "gsm8k", "value": 0.84},
            "not an object",
        ],
    }
    path.write_bytes(orjson.dumps(doc))
    result = await import_benchmarks_file(ctx, path=str(path))
    assert (result.rows, result.matched, result.skipped) == (2, 2, 1)
    stored = await rows(db)
    assert stored[("local-file", "mbpp", "Qwen/Qwen2.5-Coder-7B-Instruct")].model_id == ids["qwen2.5-coder:7b"]
    assert stored[("local-file", "gsm8k", "llama3.1:8b")].score == 0.84


async def test_a_failed_import_keeps_the_previous_rows(ctx, db, tmp_path):
    await seed(db)
    (tmp_path / "bench.csv").write_text("model,metric,value\nllama3.1:8b,mmlu,0.66\n")
    assert (await import_benchmarks_file(ctx)).changed == 1
    (tmp_path / "bench.csv").write_text("name,score\nllama3.1:8b,0.1\n")  # no model/metric/value header
    with pytest.raises(Retry):
        await import_benchmarks_file(ctx)
    assert (await rows(db))[("local-file", "mmlu", "llama3.1:8b")].score == 0.66


async def test_no_file_configured_is_a_no_op(redis_url, db, key_prefix):
    redis = Redis.from_url(redis_url)
    wctx = await build_context(settings_for(redis_url, db, key_prefix), redis, registry=CollectorRegistry())
    try:
        result = await import_benchmarks_file({CTX_KEY: wctx, "job_try": 1})
    finally:
        await wctx.exit_stack.aclose()
        await redis.aclose()
    assert (result.outcome, result.rows) == ("skipped", 0)


async def test_a_missing_file_retries_with_backoff_then_ends_in_dead_letters(ctx, db):
    with pytest.raises(Retry) as retry:
        await import_benchmarks_file(ctx)
    assert retry.value.defer_score == 2000  # base 2 s on the first try
    ctx["job_try"] = 2
    with pytest.raises(Retry) as retry:
        await import_benchmarks_file(ctx)
    assert retry.value.defer_score == 4000
    ctx["job_try"] = 3  # max_tries

    def counted() -> float:  # turnout_jobs_dead_letters_total{task}, what the dead-letter alert reads
        dead_letters()  # registered on first use
        return REGISTRY.get_sample_value("turnout_jobs_dead_letters_total", {"task": IMPORT_BENCHMARKS_FILE}) or 0.0

    before = counted()
    with pytest.raises(SourceError, match="does not exist"):
        await import_benchmarks_file(ctx, path="/nonexistent/bench.csv")
    async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
        dead = (await session.execute(select(DeadLetter))).scalars().all()
    wctx: SyncContext = ctx[CTX_KEY]
    assert [(d.queue, d.job, d.attempts, d.payload) for d in dead] == [
        (
            wctx.settings.keys.sync_queue,
            IMPORT_BENCHMARKS_FILE,
            3,
            {"args": [], "kwargs": {"path": "/nonexistent/bench.csv"}, "job_id": "test"},
        )
    ]
    assert dead[0].error.startswith("SourceError:")
    assert counted() - before == 1


async def test_an_enqueued_import_runs_on_a_burst_worker(redis_url, db, key_prefix, tmp_path):
    await seed(db)
    path = tmp_path / "b.csv"
    path.write_text("model,metric,value\nllama3.1:8b,mmlu,0.66\n")
    settings = settings_for(redis_url, db, key_prefix, benchmarks_file=str(path))
    pool = await create_job_pool(redis_url, settings.keys.sync_queue)
    try:
        assert await pool.enqueue_job(IMPORT_BENCHMARKS_FILE, _job_id=IMPORT_BENCHMARKS_FILE) is not None
        worker = build_worker(settings, registry=CollectorRegistry(), burst=True, poll_delay=0.05)
        try:
            assert await worker.run_check() == 1
        finally:
            await close_worker(worker)
    finally:
        await pool.aclose()
    stored = await rows(db)
    assert stored[("local-file", "mmlu", "llama3.1:8b")].score == 0.66
