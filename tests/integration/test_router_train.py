"""Training the router prior on a deployment's own grades (Postgres, in a rolled-back
transaction), evaluating it, and publishing it as a new active version (Redis)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common import router_priors
from turnout.common.db.models import Backend, Deployment, Feedback, Model, Profile, RoutingDecision
from turnout.common.db.session import engine_scope
from turnout.embeddings.static import default_embedder
from turnout.scorer import router_train
from turnout.scorer.learned import encode_embedding
from turnout.scorer.learned_prior import RouterPrior, load_prior

pytestmark = pytest.mark.integration

MATHS = [f"Prove that {i}^2 + {i + 1}^2 is odd, step by step, with a rigorous argument." for i in range(30)]
CHAT = [f"Say hello to my friend number {i} in a friendly way." for i in range(30)]


async def test_train_evaluate_and_publish_from_profiling_grades(db, redis, keys):
    tag = uuid.uuid4().hex[:8]
    small, big = f"small-{tag}:1b", f"big-{tag}:70b"
    async with engine_scope(db) as engine, engine.connect() as conn:
        trans = await conn.begin()
        try:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            backend = Backend(name=f"b-{tag}", kind="ollama", url="http://127.0.0.1:1")
            ms = Model(name=small, params_b=1, capabilities={"chat": True, "completion": True}, details={})
            mb = Model(name=big, params_b=70, capabilities={"chat": True, "completion": True}, details={})
            session.add_all([backend, ms, mb])
            await session.flush()
            session.add_all([Deployment(model_id=m.id, backend_id=backend.id, upstream_name=m.name) for m in (ms, mb)])

            def graded(texts: list[str], score: float) -> list[dict[str, object]]:
                return [{"id": f"p{i}", "status": "ok", "score": score, "prompt": t} for i, t in enumerate(texts)]

            # the small model fails the proofs and handles the greetings; the big one does both
            for m, maths_score in ((ms, 0.0), (mb, 1.0)):
                session.add_all(
                    [
                        Profile(model_id=m.id, suite_version="1", category="reasoning",
                                details={"prompts": graded(MATHS, maths_score)}),
                        Profile(model_id=m.id, suite_version="1", category="general",
                                details={"prompts": graded(CHAT, 1.0)}),
                    ]
                )  # fmt: skip
            await session.flush()
            data = await router_train.collect(session, default_embedder())
        finally:
            await trans.rollback()
    cols = [data.models.index(small), data.models.index(big)]
    assert data.sources == {"profile": 120, "judge": 0, "feedback": 0}
    assert data.outcomes.shape[0] == 60
    assert np.nansum(data.outcomes[:, cols], axis=0).tolist() == [30.0, 60.0]

    shipped = load_prior()
    trained = router_train.train(data, base=shipped, iterations=200)
    assert trained.trained_on[0] == "deployment" and trained.notes["prompts"] == 60
    assert trained.notes["outcomes"] == {"profile": 120, "judge": 0, "feedback": 0}
    lines = router_train.evaluate(data, {"shipped": shipped, "trained": trained}, bootstrap=20)
    apgr = {line.split("  ")[1].strip(): float(line.split("call share ")[1].split(" ±")[0]) for line in lines}
    assert set(apgr) == {"shipped", "trained", "random"}
    # the deployment's own grades: every proof before any greeting — the most a router can get here
    # (PGR 1 at half the calls: 0.25 + 0.5); random is near the diagonal
    assert apgr["trained"] == pytest.approx(0.75)
    assert apgr["random"] < 0.7

    with pytest.raises(router_train.NotEnoughData, match="at least 20"):
        router_train.train(data.subset(np.arange(len(data.keys)) < 10), base=shipped)

    version = await router_priors.publish(redis, keys, trained.to_json())
    assert await router_priors.active_version(redis, keys) == version == trained.version
    raw = await router_priors.load_active(redis, keys)
    assert raw is not None and RouterPrior.from_json(raw).version == version
    assert await router_priors.rollback(redis, keys) is None  # back to the shipped prior
    assert await router_priors.active_version(redis, keys) is None
    with pytest.raises(router_priors.PriorStoreError, match="no router prior version"):
        await router_priors.set_active(redis, keys, "missing")


async def test_evaluate_replays_recorded_decisions_with_their_grades(db):
    """``evaluate`` replays the routing_decisions rows and their feedback (here paired sampling:
    both models judged on each prompt) against an artefact, with the bench's metrics."""
    tag = uuid.uuid4().hex[:8]
    small, big = f"small-{tag}:1b", f"big-{tag}:70b"
    emb = default_embedder()
    vectors = emb.encode(MATHS[:20] + CHAT[:20])
    now = datetime.now(UTC)
    async with engine_scope(db) as engine, engine.connect() as conn:
        trans = await conn.begin()
        try:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            backend = Backend(name=f"b-{tag}", kind="ollama", url="http://127.0.0.1:1")
            ms = Model(name=small, params_b=1, capabilities={"chat": True, "completion": True}, details={})
            mb = Model(name=big, params_b=70, capabilities={"chat": True, "completion": True}, details={})
            session.add_all([backend, ms, mb])
            await session.flush()
            session.add_all([Deployment(model_id=m.id, backend_id=backend.id, upstream_name=m.name) for m in (ms, mb)])

            def decision(
                i: int, routed: str, scores: dict[str, float], *, embedding: bool = True, source: str = "score"
            ) -> RoutingDecision:
                analysis = {"category": "general", "complexity": 0.5, "tokens": 20}
                if embedding:
                    analysis["embedding"] = encode_embedding(vectors[i % len(vectors)])
                return RoutingDecision(
                    request_id=f"r-{tag}-{i}", response_id=f"resp-{tag}-{i}", kind="chat", model=routed,
                    backend=backend.name, status=200, outcome="ok", route_source=source, latency_ms=10.0,
                    analysis=analysis, candidates=[{"model": m, "score": v} for m, v in scores.items()],
                    requested_at=now,
                )  # fmt: skip

            rows, fb = [], []
            # the deployment sent the proofs to the big model and the greetings to the small one;
            # paired sampling judged both answers: the small model fails the proofs, both greet well
            for i in range(40):
                maths = i < 20
                routed = big if maths else small
                rows.append(decision(i, routed, {big: 0.9, small: 0.1} if maths else {big: 0.2, small: 0.8}))
                for m, s in ((routed, 1.0), (small if maths else big, -1.0 if maths else 1.0)):
                    fb.append(Feedback(response_id=f"resp-{tag}-{i}", model=m, score=s, client="paired-sampling"))
            # a user's thumbs-up on one more decision (only the routed model graded); one decision
            # without an embedding and the paired sample's own row are not replayed
            rows.append(decision(40, small, {small: 0.7, big: 0.3}))
            fb.append(Feedback(response_id=f"resp-{tag}-40", model=None, score=1.0))
            rows.append(decision(41, big, {big: 0.9}, embedding=False))
            fb.append(Feedback(response_id=f"resp-{tag}-41", model=None, score=1.0))
            rows.append(decision(42, big, {big: 0.9}, source="paired"))
            fb.append(Feedback(response_id=f"resp-{tag}-42", model=None, score=-1.0))
            session.add_all(rows + fb)
            await session.flush()
            recorded = await router_train.collect_decisions(session, emb)
            data = await router_train.collect(session, emb)
        finally:
            await trans.rollback()
    cols = [recorded.models.index(small), recorded.models.index(big)]
    assert len(recorded.routed) == 41
    assert (~np.isnan(recorded.grades[:, cols])).sum(axis=0).tolist() == [41, 40]
    assert recorded.routed[:20].tolist() == [cols[1]] * 20 and recorded.routed[20:].tolist() == [cols[0]] * 21

    trained = router_train.train(data, base=load_prior(), iterations=200)
    lines = router_train.replay(recorded, {"trained": trained}, bootstrap=20)
    assert lines[0] == f"replay of 41 graded recorded decisions over {len(recorded.models)} models"
    pair = [line.split(") ", 1)[1].strip() for line in lines if "(40 decisions)" in line]

    def value(router: str, measure: str) -> float:
        (line,) = [p for p in pair if p.split("  ")[0].strip() == router and measure in p]
        return float(line.split(measure)[1].split()[0].rstrip(","))

    # the recorded router put every proof first: the best curve there is (PGR 1 at half the calls)
    assert value("recorded router", "APGR by call share") == pytest.approx(0.75)
    assert value("random", "APGR by call share") < 0.7
    assert value("recorded decisions", "share of strong calls") == pytest.approx(0.5)
    assert value("recorded decisions", ", PGR") == pytest.approx(1.0)
    # the prior trained on those grades orders the proofs first too, so it matches the recorded
    # choices' PGR at the recorded share
    assert value("trained", "APGR by call share") == pytest.approx(0.75)
    assert value("trained", "PGR at the recorded share") == pytest.approx(1.0)
    agree = [line for line in lines if line.startswith("recorded decisions  trained")]
    assert len(agree) == 1 and "of 41" in agree[0]
