"""The router prior: fitting, serialisation, blending with the k-NN index, and its use in the engine."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_engine import SNAPSHOT
from turnout.common.schemas.route import RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.engine import EngineConfig, RoutingEngine
from turnout.scorer.learned_prior import (
    SHIPPED,
    OutcomeGroup,
    RouterPrior,
    blend,
    fit_prior,
    load_prior,
    model_features,
    prompt_features,
    prompt_features_batch,
)
from turnout.scorer.router_metrics import apgr_by_share


def synthetic(seed: int, n: int = 600) -> OutcomeGroup:
    """Two models; prompts whose first feature is high are the ones only the larger model solves."""
    rng = np.random.default_rng(seed)
    x = np.hstack([rng.normal(size=(n, 4)), np.ones((n, 1))])
    hard = x[:, 0] > 0
    small = np.where(hard, rng.random(n) < 0.2, rng.random(n) < 0.8).astype(float)
    large = np.where(hard, rng.random(n) < 0.8, rng.random(n) < 0.85).astype(float)
    theta, phi = model_features([0.5, 0.82], [0.3, 0.9])
    return OutcomeGroup(f"synthetic-{seed}", x, np.stack([small, large], axis=1), theta, phi)


def test_fit_learns_which_prompts_need_the_larger_model() -> None:
    prior = fit_prior([synthetic(0)], embedder="test", iterations=300)
    test = synthetic(1)
    p = prior.estimate_batch(test.x, test.theta, test.phi)
    ones = np.ones((1, len(test.x)))
    learned = apgr_by_share(p[:, 1] - p[:, 0], test.outcomes[:, 0], test.outcomes[:, 1], ones)[0]
    random = apgr_by_share(np.zeros(len(test.x)), test.outcomes[:, 0], test.outcomes[:, 1], ones)[0]
    ideal = apgr_by_share((test.x[:, 0] > 0).astype(float), test.outcomes[:, 0], test.outcomes[:, 1], ones)[0]
    assert random == pytest.approx(0.5)  # all tied: the diagonal
    assert ideal > 0.65
    assert learned > ideal - 0.03
    single = prior.estimate(test.x[0], test.theta, test.phi)
    assert single == pytest.approx(p[0])


def test_init_anchors_the_fit() -> None:
    base = fit_prior([synthetic(0)], embedder="test", iterations=300)
    tiny = OutcomeGroup("few", synthetic(2).x[:5], synthetic(2).outcomes[:5], *model_features([0.5, 0.82], [0.3, 0.9]))
    refined = fit_prior([tiny], embedder="test", iterations=50, init=base, lr=0.001)
    assert np.abs(refined.weights - base.weights).max() < 0.06
    with pytest.raises(ValueError, match="init has shape"):
        fit_prior(
            [OutcomeGroup("w", np.ones((3, 2)), np.ones((3, 2)), *model_features([0.5, 0.8], [0, 1]))],
            embedder="t",
            init=base,
        )


def test_json_round_trip_and_malformed_artefacts() -> None:
    prior = fit_prior([synthetic(0)], embedder="test", iterations=20, version="v1")
    back = RouterPrior.from_json(prior.to_json())
    assert back.version == "v1" and back.embedder == "test" and back.trained_on == ("synthetic-0",)
    assert np.abs(back.weights - prior.weights).max() < 1e-6
    with pytest.raises(ValueError, match="not a turnout-router-prior/1 artefact"):
        RouterPrior.from_json(b'{"format": "other"}')
    with pytest.raises(ValueError, match="bad weight shape"):
        RouterPrior.from_json(b'{"format": "turnout-router-prior/1", "shape": [2, 5], "weights": [], "embedder": "e"}')
    with pytest.raises(ValueError, match="do not match"):
        RouterPrior.from_json(b'{"format": "turnout-router-prior/1", "shape": [3, 5], "weights": [1], "embedder": "e"}')


def test_blend_counts_the_prior_as_neighbours() -> None:
    prior = np.array([0.2, 0.8])
    p, n = blend(prior, np.array([0.6, np.nan]), np.array([4.0, 0.0]), 4.0)  # type: ignore[misc]
    assert p == pytest.approx([0.4, 0.8])
    assert n == pytest.approx([8.0, 4.0])
    assert blend(None, None, None, 4.0) is None
    only, mass = blend(prior, None, None, 2.0)  # type: ignore[misc]
    assert only == pytest.approx(prior) and mass == pytest.approx([2.0, 2.0])


def test_shipped_artefact_matches_the_static_embedder() -> None:
    prior = load_prior()
    assert SHIPPED.stat().st_size < 64_000
    assert prior.dims == default_embedder().dims
    assert prior.embedder == default_embedder().name
    assert set(prior.trained_on) == {"routellm-mmlu", "llmrouter", "arena-bench-v1"}
    x = prompt_features(np.zeros(prior.dims), 0.5, 100)
    assert x.shape == (prior.dims + 3,) and x[-1] == 1.0
    batch = prompt_features_batch(np.zeros((2, prior.dims)), [0.5, 0.5], [100, 100])
    assert batch[0] == pytest.approx(x)


async def test_engine_blends_the_prior_into_the_learned_term() -> None:
    emb = default_embedder()
    e = RoutingEngine(EngineConfig(prior_mass=4.0), embedder=emb, prior=load_prior())
    e.set_catalog(SNAPSHOT)
    req = RouteRequestV1(text="Prove that there are infinitely many primes, step by step.", quality=0.7)
    explained = await e.explain(req)
    learned = {c.model: c.terms.get("learned", 0.0) for c in explained.candidates}
    assert all(v != 0.0 for v in learned.values()), learned
    a = e.analyze(req)
    est = e.learned_estimate(a, e.embed(req))
    assert est is not None and est.n_eff == pytest.approx(np.full(e.table.size, 4.0))
    assert e.learned_info() == {"prior": "shipped-1", "prior_mass": 4.0, "knn_prompts": 0, "learned_k": 4.0}
    # a requested model is not scored: no learned term
    pinned = await e.explain(RouteRequestV1(text=req.text, requested_model="llama3.2:1b"))
    assert "learned" not in pinned.candidates[0].terms
