"""Loading the learned index and the feedback term from Postgres (inside a rolled-back transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common.db.models import Feedback, Model, Profile, RoutingDecision
from turnout.common.db.session import engine_scope
from turnout.embeddings.static import default_embedder
from turnout.profiler.chat import ChatResult
from turnout.profiler.grading import Grader
from turnout.profiler.runner import ModelUnderTest, ProfileRunner
from turnout.profiler.suite import load_suite
from turnout.scorer.learned import LearnedIndex, encode_embedding
from turnout.scorer.learned_loader import load_feedback, load_profile_outcomes

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, tzinfo=UTC)


async def test_profiles_and_feedback_feed_the_learned_index(db):
    """A database of its own: the loader reads every profile and feedback row."""
    emb = default_embedder()
    tag = uuid.uuid4().hex[:8]
    small, big = f"small-{tag}:1b", f"big-{tag}:70b"
    async with engine_scope(db) as engine, engine.connect() as conn:
        trans = await conn.begin()
        try:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            ms = Model(name=small, params_b=1, capabilities={}, details={})
            mb = Model(name=big, params_b=70, capabilities={}, details={})
            session.add_all([ms, mb])
            await session.flush()
            prompts = [
                {"id": "m1", "category": "reasoning", "status": "ok", "score": 0.0, "grader": "exact"},
                {"id": "m2", "category": "reasoning", "status": "ok", "score": 1.0, "grader": "judge:qwen"},
                {"id": "x", "category": "reasoning", "status": "error"},
                {"id": "unknown-id", "category": "general", "status": "ok", "score": 1.0},
            ]
            session.add_all(
                [
                    Profile(model_id=ms.id, suite_version="1", category="reasoning", details={"prompts": prompts}),
                    Profile(
                        model_id=mb.id,
                        suite_version="1",
                        category="reasoning",
                        details={"prompts": [{"id": "m1", "status": "ok", "score": 1.0, "prompt": "What is 7*8?"}]},
                    ),
                ]
            )
            e = emb.encode(["hello there"])[0]
            for i, (score, age) in enumerate([(1.0, 0), (-1.0, 28), (0.5, 0)]):
                rid = f"resp-{tag}-{i}"
                session.add(Feedback(response_id=rid, score=score, created_at=NOW - timedelta(days=age)))
                session.add(
                    RoutingDecision(
                        request_id=f"req-{tag}-{i}",
                        response_id=rid,
                        kind="chat",
                        model=big if i < 2 else small,
                        status=200,
                        outcome="ok",
                        route_source="scorer",
                        latency_ms=1.0,
                        requested_at=NOW,
                        analysis={"category": "general", "embedding": encode_embedding(e)} if i == 0 else {},
                    )
                )
            await session.flush()

            index = LearnedIndex(emb.dims)
            n = await load_profile_outcomes(session, index, emb, {"m1": "What is 7*8?", "m2": "Prove 2+2=4"})
            assert n == 3  # the errored prompt and the one with no known text are skipped
            assert len(index) == 2  # m1 graded for both models shares one row
            est = index.estimate(emb.encode(["What is 7*8?"])[0])
            assert est[big][0] > est[small][0]

            fb = await load_feedback(session, index, half_life_days=14, now=NOW)
            assert fb.outcomes == 1
            mean, count = fb.by_model[big]
            assert count == pytest.approx(1.25)  # today's 1.0 + a 28-day-old one at weight 0.25
            assert mean == pytest.approx((1.0 - 0.25) / 1.25)
            assert fb.by_model[small] == (0.5, 1.0)
            assert index.estimate(e)[big][1] > 0
        finally:
            await trans.rollback()


async def test_profiler_rows_feed_the_learned_index_without_the_suite_file(db):
    """What the profiler writes (``ProfileResult.profile_rows``) carries each graded prompt's text,
    so the scorer needs no ``prompt_texts`` map (services never read each other's files)."""
    suite = load_suite().select({"math", "reasoning"}, limit_per_category=2)
    refs = {p.prompt: p.reference or "" for p in suite.prompts}

    async def chat(request, *, timeout_s):
        content = request.messages[-1]["content"]
        text = refs.get(content, "OK") if isinstance(content, str) else "red"
        return ChatResult(text=text, completion_tokens=5, total_s=0.1)

    emb = default_embedder()
    name = f"prof-{uuid.uuid4().hex[:8]}:1b"
    result = await ProfileRunner(chat, suite, Grader()).run(ModelUnderTest(name=name, backend="b", upstream=name))
    async with engine_scope(db) as engine, engine.connect() as conn:
        trans = await conn.begin()
        try:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            m = Model(name=name, params_b=1, capabilities={}, details={})
            session.add(m)
            await session.flush()
            session.add_all([Profile(**row) for row in result.profile_rows(model_id=m.id)])
            await session.flush()
            index = LearnedIndex(emb.dims)
            n = await load_profile_outcomes(session, index, emb)  # no prompt_texts
            assert n == len(suite.prompts) == 4
            est = index.estimate(emb.encode([suite.prompts[0].prompt])[0])
            assert name in est
        finally:
            await trans.rollback()
