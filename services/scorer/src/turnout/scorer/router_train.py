"""Learning the router prior from the deployment's own data, and measuring it.

    python -m turnout.scorer.router_train train [--no-activate] [--iterations 300]
    python -m turnout.scorer.router_train evaluate [--version V] [--bootstrap 200]
    python -m turnout.scorer.router_train list | activate VERSION | rollback

(settings from the scorer's environment: ``TURNOUT_DATABASE_URL``, ``TURNOUT_REDIS_URL`` …;
``POST /admin/router/train`` asks a scorer replica to do the same in the background.)

**Data** (:func:`collect`) — one outcome row per distinct prompt, one column per catalog model
(NaN where that model was never graded on it):

* profiling grades and judge grades: ``profiles.details["prompts"]`` entries that carry the
  prompt's text and a score (as ``learned_loader.load_profile_outcomes`` reads them);
* user feedback and paired-sampling judgments: ``feedback`` joined to ``routing_decisions`` by
  ``response_id``, for decisions whose analysis carries the prompt embedding; the score −1..1
  becomes (s + 1) / 2 for the model the feedback names (else the routed model).

**Training** (:func:`train`) — ``learned_prior.fit_prior`` on that group, starting from and
pulled towards the shipped prior, over the catalog's features (capability, size): the result is
stored as a new version in Redis (``turnout.common.router_priors``) and activated unless
``--no-activate``; every scorer hot-loads it; ``rollback`` goes back one version.

**Evaluation** (:func:`evaluate`) — replays the recorded outcomes (a fixed hash-split: the
training above never sees the ``eval`` half when ``--holdout`` is on) through a prior and
reports APGR by call share (RouteLLM's definition, ``router_metrics.py``) with a bootstrap band
for every pair of models (cheaper, better) graded together on enough prompts — the shipped
prior, the active one and the candidate side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import orjson
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turnout.common import router_priors
from turnout.common.catalog import load_snapshot
from turnout.common.db.models import Feedback, Model, Profile, RoutingDecision
from turnout.common.db.session import make_engine, make_sessionmaker
from turnout.common.keys import Keys
from turnout.embeddings import Embedder
from turnout.embeddings.static import default_embedder
from turnout.scorer.learned import decode_embedding
from turnout.scorer.learned_prior import (
    OutcomeGroup,
    RouterPrior,
    fit_prior,
    load_prior,
    model_features,
    prompt_features,
)
from turnout.scorer.prompt_analysis import Analyzer, PromptFeatures
from turnout.scorer.router_metrics import apgr_by_share, bootstrap_weights
from turnout.scorer.scoring import OVERALL, ModelSpec, ModelTable, ScoringConfig
from turnout.scorer.settings import ScorerSettings

F = npt.NDArray[np.float64]

MIN_PROMPTS = 20
"""Graded prompts below which training refuses (the prior would learn noise)."""
MIN_PAIR = 20
"""Prompts two models must share to be evaluated as a pair."""


class NotEnoughData(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Collected:
    models: tuple[str, ...]
    x: F
    """(prompts, features) prior features."""
    outcomes: F
    """(prompts, models) 0..1, NaN = not graded."""
    keys: tuple[bytes, ...]
    sources: dict[str, int]
    theta: F
    phi: F
    cost: F
    """Per model: price per Mtok, else parameters (to order a pair cheap → dear)."""

    def subset(self, rows: npt.NDArray[np.bool_]) -> Collected:
        return replace(
            self,
            x=self.x[rows],
            outcomes=self.outcomes[rows],
            keys=tuple(k for k, r in zip(self.keys, rows, strict=True) if r),
        )

    def group(self) -> OutcomeGroup:
        return OutcomeGroup("deployment", self.x, self.outcomes, self.theta, self.phi)


async def collect(session: AsyncSession, embedder: Embedder) -> Collected:
    snapshot = await load_snapshot(session)
    specs = [ModelSpec.from_catalog(m) for m in snapshot.models if m.capabilities.chat or m.capabilities.completion]
    table = ModelTable.build(specs, ScoringConfig(), version=snapshot.version)
    names = tuple(s.name for s in specs)
    col = {n: j for j, n in enumerate(names)}
    analyzer = Analyzer()
    rows: dict[bytes, tuple[F, dict[int, list[float]]]] = {}
    sources = {"profile": 0, "judge": 0, "feedback": 0}

    def add(key: bytes, x: F, model: str, score: float, source: str) -> None:
        j = col.get(model)
        if j is None:
            return
        entry = rows.setdefault(key, (x, {}))
        entry[1].setdefault(j, []).append(min(1.0, max(0.0, score)))
        sources[source] += 1

    profile_rows = (
        await session.execute(select(Model.name, Profile.details).join(Profile, Profile.model_id == Model.id))
    ).all()
    pending: list[tuple[str, str, float, str]] = []
    for name, details in profile_rows:
        for p in (details or {}).get("prompts", []):
            score, text = p.get("score"), p.get("prompt")
            if score is None or not text or p.get("status", "ok") not in ("ok", "graded"):
                continue
            source = "judge" if str(p.get("grader") or "").startswith("judge") else "profile"
            pending.append((str(text), str(name), float(score), source))
    texts = sorted({t for t, *_ in pending})
    if texts:
        emb = dict(zip(texts, embedder.encode(texts), strict=True))
        for text, model, score, source in pending:
            a = analyzer.analyze(PromptFeatures(text))
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            add(key, prompt_features(emb[text], a.complexity, a.tokens), model, score, source)
    q = select(Feedback.score, Feedback.model, RoutingDecision.model, RoutingDecision.analysis).join(
        RoutingDecision, RoutingDecision.response_id == Feedback.response_id
    )
    for score, fb_model, routed, analysis in (await session.execute(q)).all():
        if not isinstance(analysis, dict) or not isinstance(analysis.get("embedding"), str):
            continue
        try:
            e = decode_embedding(analysis["embedding"])
        except ValueError:
            continue
        if e.shape[0] != embedder.dims:
            continue
        complexity = float(analysis.get("complexity", 0.5))
        key = hashlib.blake2b(e.tobytes(), digest_size=16).digest()
        add(
            key,
            prompt_features(e, complexity, int(analysis.get("tokens", 0) or 0)),
            fb_model or routed or "",
            (float(score) + 1.0) / 2.0,
            "feedback",
        )
    keys = tuple(sorted(rows))
    dims = embedder.dims + 3
    x = np.zeros((len(keys), dims))
    out = np.full((len(keys), len(names)), np.nan)
    for i, k in enumerate(keys):
        feats, graded = rows[k]
        x[i] = feats
        for j, scores in graded.items():
            out[i, j] = float(np.mean(scores))
    theta, phi = model_features(table.capability[OVERALL], table.power)
    cost = np.array(
        [s.price_per_mtok if s.price_per_mtok is not None else float(table.params_b[i]) for i, s in enumerate(specs)]
    )
    return Collected(names, x, out, keys, sources, theta, phi, cost)


def holdout_mask(keys: Sequence[bytes], share: float = 0.25) -> npt.NDArray[np.bool_]:
    """A fixed split by prompt hash: True = evaluation."""
    return np.array([k[0] / 256.0 < share for k in keys], dtype=bool)


def train(data: Collected, *, base: RouterPrior, iterations: int = 300, embedder: str = "") -> RouterPrior:
    graded = int((~np.isnan(data.outcomes)).any(axis=1).sum())
    if graded < MIN_PROMPTS:
        raise NotEnoughData(f"{graded} graded prompts; at least {MIN_PROMPTS} are needed to train the router prior")
    prior = fit_prior([data.group()], embedder=embedder or base.embedder, iterations=iterations, init=base)
    return replace(
        prior,
        trained_on=("deployment", *base.trained_on),
        notes={"prompts": graded, "outcomes": data.sources, "base": base.version, "iterations": iterations},
    )


def evaluate(data: Collected, priors: dict[str, RouterPrior], *, bootstrap: int = 200, seed: int = 0) -> list[str]:
    """One line per (pair, prior): APGR by call share ± sd over bootstrap resamples."""
    lines = []
    rng = np.random.default_rng(seed)
    order = np.argsort(data.cost)
    for a_i, a in enumerate(order):
        for b in order[a_i + 1 :]:
            both = ~np.isnan(data.outcomes[:, a]) & ~np.isnan(data.outcomes[:, b])
            if both.sum() < MIN_PAIR:
                continue
            weak, strong = int(a), int(b)
            if np.nanmean(data.outcomes[both, strong]) <= np.nanmean(data.outcomes[both, weak]):
                continue  # the dearer model is not better here: no gap to recover
            w = bootstrap_weights(int(both.sum()), bootstrap, rng)
            ow, os_ = data.outcomes[both, weak], data.outcomes[both, strong]
            pair = f"{data.models[weak]} → {data.models[strong]} ({int(both.sum())} prompts)"
            for name, prior in priors.items():
                p = prior.estimate_batch(data.x[both], data.theta, data.phi)
                v = apgr_by_share(p[:, strong] - p[:, weak], ow, os_, w)
                lines.append(
                    f"{pair}  {name:<24} APGR by call share {v[0]:.3f} ± {v[1:].std() if v.size > 1 else 0.0:.3f}"
                )
            v = apgr_by_share(rng.random(len(ow)), ow, os_, w)
            lines.append(
                f"{pair}  {'random':<24} APGR by call share {v[0]:.3f} ± {v[1:].std() if v.size > 1 else 0.0:.3f}"
            )
    return lines


# --------------------------------------------------------------------------- command line


async def _run(args: argparse.Namespace, settings: ScorerSettings) -> int:
    keys: Keys = settings.keys
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    try:
        if args.cmd == "list":
            for v in await router_priors.versions(redis, keys):
                print(orjson.dumps(v).decode())  # noqa: T201
            return 0
        if args.cmd == "activate":
            await router_priors.set_active(redis, keys, None if args.version == "shipped" else args.version)
            print(f"active router prior: {args.version}")  # noqa: T201
            return 0
        if args.cmd == "rollback":
            back = await router_priors.rollback(redis, keys)
            print(f"active router prior: {back or 'shipped'}")  # noqa: T201
            return 0
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                data = await collect(session, default_embedder())
        finally:
            await engine.dispose()
        shipped = load_prior()
        active_raw = await router_priors.load_active(redis, keys)
        active = RouterPrior.from_json(active_raw) if active_raw is not None else shipped
        print(f"collected {len(data.keys)} prompts over {len(data.models)} models: {data.sources}")  # noqa: T201
        if args.cmd == "train":
            held = holdout_mask(data.keys) if args.holdout else np.zeros(len(data.keys), dtype=bool)
            prior = train(data.subset(~held), base=active, iterations=args.iterations)
            version = await router_priors.publish(redis, keys, prior.to_json(), activate=not args.no_activate)
            print(f"router prior {version}{' (active)' if not args.no_activate else ''}: {prior.notes}")  # noqa: T201
            return 0
        held = holdout_mask(data.keys)
        priors = {"shipped": shipped, f"active {active.version}": active}
        if args.version:
            raw = await redis.hget(keys.router_priors, args.version)  # type: ignore[misc]
            if raw is None:
                print(f"no router prior version {args.version!r}", file=sys.stderr)  # noqa: T201
                return 2
            priors[f"candidate {args.version}"] = RouterPrior.from_json(raw)
        lines = evaluate(data.subset(held), priors, bootstrap=args.bootstrap)
        print("\n".join(lines) if lines else "no pair of models graded together on enough held-out prompts")  # noqa: T201
        return 0
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m turnout.scorer.router_train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit a new router prior on the deployment's grades and feedback")
    t.add_argument("--no-activate", action="store_true")
    t.add_argument("--iterations", type=int, default=300)
    t.add_argument("--holdout", action=argparse.BooleanOptionalAction, default=True, help="keep the eval quarter out")
    e = sub.add_parser("evaluate", help="APGR by call share of the shipped, active and a candidate prior")
    e.add_argument("--version", default=None)
    e.add_argument("--bootstrap", type=int, default=200)
    sub.add_parser("list", help="stored router prior versions")
    a = sub.add_parser("activate", help="make a stored version active ('shipped' for the packaged one)")
    a.add_argument("version")
    sub.add_parser("rollback", help="back to the version active before")
    args = ap.parse_args(argv)
    settings = ScorerSettings.load()
    try:
        return asyncio.run(_run(args, settings))
    except (NotEnoughData, router_priors.PriorStoreError) as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
