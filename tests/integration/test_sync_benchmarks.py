"""Benchmark file import: parsing, normalisation, name matching, upserts, catalog_changed,
retries and dead letters — against a real Postgres and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from arq import Retry
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import select

from switchyard.common.arq import CTX_KEY, IMPORT_BENCHMARKS_FILE, close_worker, create_job_pool
from switchyard.common.db.migrate import upgrade
from switchyard.common.db.models import Backend, Benchmark, DeadLetter, Deployment, Model
from switchyard.common.db.session import engine_scope, make_sessionmaker
from switchyard.sync.benchmarks import ModelMatcher, RowError, normalise, parse_row
from switchyard.sync.settings import SyncSettings
from switchyard.sync.worker import SyncContext, build_context, build_worker, import_benchmarks_file

pytestmark = pytest.mark.integration

LOCAL_MODELS = {
    "llama3.1:8b": "llama3.1:8b",
    "llama3.1:8b-instruct-q8_0": "llama3.1:8b-instruct-q8_0",
    "llama3.3:70b": "llama3.3:70b",
    "qwen2.5-coder:7b": "qwen2.5-coder:7b",
    "cloud/gpt-4o-mini": "gpt-4o-mini",
}

CSV = """model,metric,value,scale_min,scale_max,source
meta-llama/Llama-3.1-8B-Instruct,mmlu,68.4,0,100,leaderboard
Llama-3.3-70B-Instruct,mmlu,86.0,0,100,leaderboard
qwen2.5-coder:7b,humaneval,0.884,,,my-evals
gpt-4o-mini,arena_elo,1270,1000,1400,arena
Meta-Llama-3.1-70B,mmlu,0.8,,,leaderboard
totally-unknown-model-3b,mmlu,0.5,,,leaderboard
llama3.1:8b,latency_ms,200,1000,0,my-evals
llama3.1:8b,mmlu,120,0,100,leaderboard
no-value-here,mmlu,,,,leaderboard
,mmlu,0.5,,,leaderboard
Qwen2.5-Coder-7B,mmlu,0.6,,,leaderboard
qwen2.5-coder:7b,humaneval,0.9,,,my-evals
"""


@pytest.fixture
def db(pg_admin_url: str) -> Iterator[str]:
    name = f"sy_sync_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    try:
        asyncio.run(upgrade(url))
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


def test_scores_are_normalised_to_0_1_with_the_raw_value_kept():
    assert normalise(68.4, 0, 100) == pytest.approx(0.684)
    assert normalise(200, 1000, 0) == pytest.approx(0.8)  # lower is better: swapped scale
    assert normalise(0.7, None, None) == 0.7
    for bad in ((1.5, None, None), (5, 0, None), (5, 3, 3), (120, 0, 100)):
        with pytest.raises(RowError):
            normalise(*bad)
    row = parse_row({"Model": " x:1b ", "METRIC": "mmlu", "value": "50", "scale_min": "0", "scale_max": "100"}, "d")
    assert (row.raw_model, row.metric, row.raw_value, row.score, row.source) == ("x:1b", "mmlu", 50.0, 0.5, "d")


def test_names_match_exactly_then_by_family_and_size_then_fuzzily_within_one_size():
    matcher = ModelMatcher(
        [(1, "llama3.1:8b", ["llama3.1:8b"]), (2, "llama3.1:8b-instruct-q8_0", []), (3, "mistral-nemo:12b", [])],
        threshold=80,
    )
    assert matcher.match("LLAMA3.1:8B") == matcher.match("llama3.1:8b")
    assert (matcher.match("llama3.1:8b").model_id, matcher.match("llama3.1:8b").how) == (1, "exact")
    m = matcher.match("meta-llama/Llama-3.1-8B-Instruct")
    assert (m.model_id, m.confidence, m.how) == (1, 0.9, "family+size")
    fuzzy = matcher.match("mistral-nemo-inst-12b")
    assert (fuzzy.model_id, fuzzy.how) == (3, "fuzzy")
    assert matcher.match("llama3.1:70b").model_id is None  # never across sizes
    assert matcher.match("mistral-nemo:7b").model_id is None


async def test_a_csv_import_upserts_normalised_scores_matched_to_local_models(ctx, db, tmp_path, redis, keys):
    ids = await seed(db)
    (tmp_path / "bench.csv").write_text(CSV)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.catalog_changed)

    result = await import_benchmarks_file(ctx)
    assert (result.rows, result.matched, result.unmatched, result.invalid, result.duplicate, result.changed) == (
        8,
        6,
        2,
        3,
        1,
        8,
    )
    assert result.published
    assert result.errors == [
        "row 9: value 120 is outside its scale 0..100",
        "row 10: value is required",
        "row 11: model and metric are required",
    ]
    stored = await rows(db)
    llama = stored[("leaderboard", "mmlu", "meta-llama/Llama-3.1-8B-Instruct")]
    assert (llama.model_id, llama.raw_value, llama.score, llama.match_confidence) == (
        ids["llama3.1:8b"],
        68.4,
        0.684,
        0.9,
    )
    assert llama.details == {"scale_min": 0.0, "scale_max": 100.0, "match": "family+size"}
    assert stored[("leaderboard", "mmlu", "Llama-3.3-70B-Instruct")].model_id == ids["llama3.3:70b"]
    assert stored[("arena", "arena_elo", "gpt-4o-mini")].model_id == ids["cloud/gpt-4o-mini"]
    assert stored[("arena", "arena_elo", "gpt-4o-mini")].score == pytest.approx(0.675)
    assert stored[("my-evals", "latency_ms", "llama3.1:8b")].score == pytest.approx(0.8)
    assert stored[("my-evals", "humaneval", "qwen2.5-coder:7b")].score == 0.9  # the later duplicate won
    assert stored[("leaderboard", "mmlu", "Meta-Llama-3.1-70B")].model_id is None  # no local 70B llama3.1
    assert stored[("leaderboard", "mmlu", "totally-unknown-model-3b")].model_id is None

    deadline = asyncio.get_running_loop().time() + 3
    message = None
    while message is None and asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
    await pubsub.aclose()
    assert message is not None and orjson.loads(message["data"]) == {"source": "sync"}

    again = await import_benchmarks_file(ctx)
    assert (again.changed, again.published) == (0, False)  # idempotent

    (tmp_path / "bench.csv").write_text(CSV.replace("68.4", "70.1"))
    changed = await import_benchmarks_file(ctx)
    assert changed.changed == 1
    assert (await rows(db))[("leaderboard", "mmlu", "meta-llama/Llama-3.1-8B-Instruct")].score == pytest.approx(0.701)


async def test_a_json_file_and_an_explicit_path_work_too(ctx, db, tmp_path):
    ids = await seed(db)
    path = tmp_path / "scores.json"
    doc = {
        "source": "hf",
        "rows": [
            {
                "model": "Qwen/Qwen2.5-Coder-7B-Instruct",
                "metric": "mbpp",
                "value": 72,
                "scale_min": 0,
                "scale_max": 100,
            },
            {"model": "llama3.1:8b", "metric": "gsm8k", "value": 0.84, "source": "other"},
            "not an object",
        ],
    }
    path.write_bytes(orjson.dumps(doc))
    result = await import_benchmarks_file(ctx, path=str(path))
    assert (result.rows, result.matched, result.invalid) == (2, 2, 1)
    stored = await rows(db)
    assert stored[("hf", "mbpp", "Qwen/Qwen2.5-Coder-7B-Instruct")].model_id == ids["qwen2.5-coder:7b"]
    assert stored[("other", "gsm8k", "llama3.1:8b")].score == 0.84


async def test_no_file_configured_is_a_no_op(redis_url, db, key_prefix):
    redis = Redis.from_url(redis_url)
    wctx = await build_context(settings_for(redis_url, db, key_prefix), redis, registry=CollectorRegistry())
    try:
        result = await import_benchmarks_file({CTX_KEY: wctx, "job_try": 1})
    finally:
        await wctx.exit_stack.aclose()
        await redis.aclose()
    assert result.skipped


async def test_a_missing_file_retries_with_backoff_then_ends_in_dead_letters(ctx, db):
    with pytest.raises(Retry) as retry:
        await import_benchmarks_file(ctx)
    assert retry.value.defer_score == 2000  # base 2 s on the first try
    ctx["job_try"] = 2
    with pytest.raises(Retry) as retry:
        await import_benchmarks_file(ctx)
    assert retry.value.defer_score == 4000
    ctx["job_try"] = 3  # max_tries
    with pytest.raises(FileNotFoundError):
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
    assert dead[0].error.startswith("FileNotFoundError:")


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
