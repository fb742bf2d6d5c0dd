"""Training the router prior on a deployment's own grades (Postgres, in a rolled-back
transaction), evaluating it, and publishing it as a new active version (Redis)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common import router_priors
from turnout.common.db.models import Backend, Deployment, Model, Profile
from turnout.common.db.session import engine_scope
from turnout.embeddings.static import default_embedder
from turnout.scorer import router_train
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
