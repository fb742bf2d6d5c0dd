"""Profiles and benchmarks change the scorer's choice: what the profiler and the sync worker
store, followed by their ``catalog_changed`` notification, reaches a running scorer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from turnout.common.db.models import Model
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.common.keys import Keys
from turnout.common.rpc import RpcClient
from turnout.profiler.profiling import ProfileTarget, store_profile
from turnout.profiler.runner import CategoryResult, ProfileResult
from turnout.sync.public import upsert_benchmarks

from .test_scorer_service import add_models, call, rpc, scorer, scorer_db, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

PROMPT = "What is {a} * 23 - 19? Show the arithmetic."  # a new number per question: no routing cache hit
MODELS = {"alpha:7b": ["gpu1"], "beta:7b": ["gpu1"]}


@pytest.fixture
async def seeded_pair(scorer_db: str) -> AsyncIterator[dict[str, int]]:  # noqa: F811
    await add_models(scorer_db, MODELS)
    async with engine_scope(scorer_db) as engine, make_sessionmaker(engine)() as session:
        ids = dict((await session.execute(select(Model.name, Model.id).where(Model.name.in_(list(MODELS))))).all())
    yield ids


def profile(model: str, math: float) -> ProfileResult:
    now = datetime.now(UTC)
    return ProfileResult(
        model=model,
        backend="gpu1",
        suite_version="choice-test",
        status="ok",
        started_at=now,
        finished_at=now,
        tokens_per_s=50.0,
        ttft_ms=100.0,
        categories={
            c: CategoryResult(score=math if c == "math" else 0.5, n_prompts=5, total=5) for c in ("math", "general")
        },
    )


_asked = iter(range(17, 100_000))


async def top(rpc: RpcClient) -> str:  # noqa: F811
    reply = await call(rpc, text=PROMPT.format(a=next(_asked)))
    return reply.candidates[0].model


async def test_profiles_then_benchmarks_move_the_choice(
    seeded_pair: dict[str, int],
    scorer_db: str,  # noqa: F811
    scorer,  # noqa: F811
    rpc: RpcClient,  # noqa: F811
    redis: Redis,
    keys: Keys,
) -> None:
    async def changed(source: str) -> None:
        await redis.publish(keys.catalog_changed, orjson.dumps({"source": source, "ts": time.time()}))

    async with engine_scope(scorer_db) as engine:
        sm = make_sessionmaker(engine)
        for better, worse in (("alpha:7b", "beta:7b"), ("beta:7b", "alpha:7b")):
            for model, score in ((better, 0.95), (worse, 0.05)):
                target = ProfileTarget(
                    model_id=seeded_pair[model], model=model, backend="gpu1", host="gpu1", upstream=model,
                    digest=None, size_bytes=None, params_b=7.0, context_length=None, reason="test",
                )  # fmt: skip
                await store_profile(sm, target, profile(model, score))
            await changed("profiler")

            async def chosen(expected: str = better) -> bool:
                return await top(rpc) == expected

            await wait_for(chosen, what=f"{better} to be chosen after its profile")

        # equal profiles: now the public benchmarks decide (beta wins although alpha sorts first)
        for model in MODELS:
            target = ProfileTarget(
                model_id=seeded_pair[model], model=model, backend="gpu1", host="gpu1", upstream=model,
                digest=None, size_bytes=None, params_b=7.0, context_length=None, reason="test",
            )  # fmt: skip
            await store_profile(sm, target, profile(model, 0.5))
        async with sm() as session, session.begin():
            await upsert_benchmarks(
                session,
                [
                    {"source": "test", "metric": "mmlu", "raw_model": f"public/{m}", "raw_value": v, "score": v,
                     "model_id": seeded_pair[m], "match_confidence": 1.0, "details": {"kind": "quality"}}
                    for m, v in (("alpha:7b", 0.1), ("beta:7b", 0.9))
                ],
            )  # fmt: skip
        await changed("sync:test")

        async def beta() -> bool:
            return await top(rpc) == "beta:7b"

        await wait_for(beta, what="beta:7b to be chosen after its benchmark")
