"""The shipped router prior: how likely each model succeeds on a prompt, from the prompt's
embedding and the model's catalog features — never its name — so it carries over to models and
deployments it was not trained on.

For a prompt with features ``x`` (static embedding, heuristic complexity, log tokens, 1) and a
model with features ``φ = (1, θ − θ̄, s − s̄)`` (``θ`` = logit of its static overall capability,
``s`` = its size on the scorer's 0..1 log scale, both centred over the catalog)::

    logit p(model succeeds) = θ + (W x) · φ

``W`` (3 × features) is all that is learned: per prompt, a general difficulty shift, how much
more an abler model gains on it, and how much more a larger one does. It is fitted by logistic
regression (soft labels: graded scores 0..1) on outcome sets, each weighted equally
(:func:`fit_prior`); ``bench/routing_prior_train.py`` builds the shipped artefact from the public
sets and ``python -m turnout.scorer.router_train`` from a deployment's own grades. At request
time it costs one (3 × 131) matrix-vector product and one (models × 3) product.

The scorer blends the prior with the k-NN index (``learned.py``) into one learned estimate
(:func:`blend`): the prior counts as ``prior_mass`` neighbours, so close graded prompts outweigh
it where a deployment has them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

F = npt.NDArray[np.float64]

FORMAT = "turnout-router-prior/1"
SHIPPED = Path(__file__).with_name("data") / "router_prior.json"
"""Fitted by ``bench/routing_prior_train.py`` on the public outcome sets (see its notes)."""
EXTRA_FEATURES = 3  # complexity, log tokens, bias


def _logit(p: F) -> F:
    q = np.clip(p, 0.02, 0.98)
    return np.log(q / (1.0 - q))  # type: ignore[no-any-return]


def prompt_features(embedding: npt.ArrayLike, complexity: float, tokens: int) -> F:
    """The prompt's feature vector (embedding, complexity, log tokens, bias)."""
    e = np.asarray(embedding, dtype=np.float64).reshape(-1)
    return np.concatenate([e, [complexity, math.log1p(max(tokens, 0)) / 8.0, 1.0]])


def prompt_features_batch(embeddings: npt.ArrayLike, complexity: npt.ArrayLike, tokens: npt.ArrayLike) -> F:
    e = np.asarray(embeddings, dtype=np.float64)
    c = np.asarray(complexity, dtype=np.float64).reshape(-1, 1)
    t = np.log1p(np.maximum(np.asarray(tokens, dtype=np.float64), 0.0)).reshape(-1, 1) / 8.0
    return np.hstack([e, c, t, np.ones((e.shape[0], 1))])


def model_features(capability: npt.ArrayLike, power: npt.ArrayLike) -> tuple[F, F]:
    """``(θ, Φ)`` for a catalog: θ = logit(overall capability), Φ rows ``(1, θ − θ̄, s − s̄)``."""
    theta = _logit(np.asarray(capability, dtype=np.float64))
    s = np.asarray(power, dtype=np.float64)
    if theta.size == 0:
        return theta, np.zeros((0, 3))
    phi = np.stack([np.ones_like(theta), theta - theta.mean(), s - s.mean()], axis=1)
    return theta, phi


@dataclass(frozen=True, slots=True)
class RouterPrior:
    """A fitted ``W`` with its provenance (see the module docstring)."""

    weights: F
    """(3, dims + 3)"""
    embedder: str
    version: str = ""
    created: float = 0.0
    trained_on: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return int(self.weights.shape[1]) - EXTRA_FEATURES

    def estimate(self, x: F, theta: F, phi: F) -> F:
        """Success probability per model for one prompt's features ``x``."""
        logits = theta + phi @ (self.weights @ x)
        return 1.0 / (1.0 + np.exp(-logits))  # type: ignore[no-any-return]

    def estimate_batch(self, x: F, theta: F, phi: F) -> F:
        """(prompts × models) success probabilities."""
        logits = theta[None, :] + (x @ self.weights.T) @ phi.T
        return 1.0 / (1.0 + np.exp(-logits))  # type: ignore[no-any-return]

    # --- serialisation -----------------------------------------------------------------------

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": self.version,
                "embedder": self.embedder,
                "created": self.created,
                "trained_on": list(self.trained_on),
                "notes": self.notes,
                "shape": list(self.weights.shape),
                "weights": [round(float(v), 6) for v in self.weights.reshape(-1)],
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> RouterPrior:
        obj = orjson.loads(data)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} artefact")
        shape = tuple(int(v) for v in obj["shape"])
        if len(shape) != 2 or shape[0] != 3 or shape[1] <= EXTRA_FEATURES:
            raise ValueError(f"bad weight shape {shape}")
        w = np.asarray(obj["weights"], dtype=np.float64)
        if w.size != shape[0] * shape[1] or not np.isfinite(w).all():
            raise ValueError("weights do not match their shape or are not finite")
        return cls(
            weights=w.reshape(shape),
            embedder=str(obj["embedder"]),
            version=str(obj.get("version", "")),
            created=float(obj.get("created", 0.0)),
            trained_on=tuple(str(v) for v in obj.get("trained_on", ())),
            notes=dict(obj.get("notes") or {}),
        )


def load_prior(path: Path | str = SHIPPED) -> RouterPrior:
    return RouterPrior.from_json(Path(path).read_bytes())


@dataclass(frozen=True, slots=True)
class OutcomeGroup:
    """One outcome set for :func:`fit_prior`: prompt features, outcomes (prompts × models, NaN =
    not graded) and the models' features."""

    name: str
    x: F
    outcomes: F
    theta: F
    phi: F


def fit_prior(
    groups: Sequence[OutcomeGroup],
    *,
    embedder: str,
    iterations: int = 400,
    lr: float = 0.05,
    l2: float = 1e-3,
    version: str | None = None,
    init: RouterPrior | None = None,
) -> RouterPrior:
    """Logistic regression of ``W`` by Adam, each group's mean loss weighted equally. With
    ``init`` (e.g. the shipped prior) it starts there and the L2 penalty pulls towards it, so a
    deployment's few hundred grades refine what the public sets taught instead of replacing it."""
    if not groups:
        raise ValueError("no outcome data to train on")
    d = groups[0].x.shape[1]
    if any(g.x.shape[1] != d for g in groups):
        raise ValueError("prompt features differ in width between groups")
    anchor = np.zeros((3, d))
    if init is not None:
        if init.weights.shape != (3, d):
            raise ValueError(f"init has shape {init.weights.shape}, the features need (3, {d})")
        anchor = init.weights.copy()
    w = anchor.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    prepared = []
    for g in groups:
        graded = ~np.isnan(g.outcomes)
        if graded.sum() == 0:
            continue
        prepared.append((g.x, np.nan_to_num(g.outcomes), graded, g.theta, g.phi, float(graded.sum())))
    if not prepared:
        raise ValueError("no graded outcomes to train on")
    for t in range(1, iterations + 1):
        grad = l2 * (w - anchor)
        for x, y, graded, theta, phi, n in prepared:
            logits = theta[None, :] + (x @ w.T) @ phi.T
            p = 1.0 / (1.0 + np.exp(-logits))
            r = np.where(graded, p - y, 0.0) / (n * len(prepared))
            grad = grad + (r @ phi).T @ x
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    names = tuple(g.name for g in groups)
    digest = hashlib.blake2b(w.tobytes(), digest_size=4).hexdigest()
    return RouterPrior(
        weights=w,
        embedder=embedder,
        version=version or f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{digest}",
        created=time.time(),
        trained_on=names,
    )


def blend(prior_p: F | None, knn_p: F | None, knn_n: F | None, prior_mass: float) -> tuple[F, F] | None:
    """One learned estimate ``(p, n_eff)`` from the prior (worth ``prior_mass`` neighbours) and the
    k-NN index (NaN p where a model has no graded neighbours)."""
    if prior_p is None:
        if knn_p is None or knn_n is None:
            return None
        return knn_p, knn_n
    if knn_p is None or knn_n is None:
        return prior_p, np.full_like(prior_p, prior_mass)
    has = ~np.isnan(knn_p)
    n = np.where(has, knn_n, 0.0)
    p = (n * np.nan_to_num(knn_p) + prior_mass * prior_p) / np.maximum(n + prior_mass, 1e-12)
    return p, n + prior_mass
