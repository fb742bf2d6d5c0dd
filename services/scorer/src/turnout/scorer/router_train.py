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

**Replay** (:func:`collect_decisions`, :func:`replay`; ``evaluate --replay``, the default) — the
deployment's *recorded decisions* (``routing_decisions`` with their feedback and paired-sampling
judgments) against the same priors: APGR by call share of the deployment's own router (its
recorded candidate scores) beside each prior's and random's on every pair graded together, the
deployment's operating point (share of strong calls, PGR) beside each prior's PGR at that share,
and how often each prior would have made the recorded choice. Counterfactuals need grades of
both models of a pair on the same prompt, which paired sampling records; a lone thumbs-up grades
only the routed model and counts for the agreement line only.
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
from turnout.scorer.router_metrics import apgr_by_share, bootstrap_weights, share_curves
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


async def _catalog(session: AsyncSession) -> tuple[tuple[str, ...], F, F, F]:
    """The generating models of the catalog: names, ``(θ, Φ)`` and a cost per model (price per
    Mtok, else parameters) to order a pair cheap → dear."""
    snapshot = await load_snapshot(session)
    specs = [ModelSpec.from_catalog(m) for m in snapshot.models if m.capabilities.chat or m.capabilities.completion]
    table = ModelTable.build(specs, ScoringConfig(), version=snapshot.version)
    theta, phi = model_features(table.capability[OVERALL], table.power)
    cost = np.array(
        [s.price_per_mtok if s.price_per_mtok is not None else float(table.params_b[i]) for i, s in enumerate(specs)]
    )
    return tuple(s.name for s in specs), theta, phi, cost


def _features(analysis: object, dims: int) -> F | None:
    """Prior features of a recorded decision's analysis (None: no usable embedding)."""
    if not isinstance(analysis, dict) or not isinstance(analysis.get("embedding"), str):
        return None
    try:
        e = decode_embedding(analysis["embedding"])
    except ValueError:
        return None
    if e.shape[0] != dims:
        return None
    return prompt_features(e, float(analysis.get("complexity", 0.5)), int(analysis.get("tokens", 0) or 0))


async def collect(session: AsyncSession, embedder: Embedder) -> Collected:
    names, theta, phi, cost = await _catalog(session)
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
        feats = _features(analysis, embedder.dims)
        if feats is None:
            continue
        key = hashlib.blake2b(feats[: embedder.dims].astype(np.float32).tobytes(), digest_size=16).digest()
        add(key, feats, fb_model or routed or "", (float(score) + 1.0) / 2.0, "feedback")
    keys = tuple(sorted(rows))
    dims = embedder.dims + 3
    x = np.zeros((len(keys), dims))
    out = np.full((len(keys), len(names)), np.nan)
    for i, k in enumerate(keys):
        feats, graded = rows[k]
        x[i] = feats
        for j, scores in graded.items():
            out[i, j] = float(np.mean(scores))
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


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class Recorded:
    """The deployment's recorded decisions that were graded: one row per decision."""

    models: tuple[str, ...]
    x: F
    """(decisions, features) prior features from the recorded analysis."""
    routed: npt.NDArray[np.intp]
    """The model each decision sent the request to (column index)."""
    scores: F
    """(decisions, models) the recorded candidates' scores, NaN where a model was no candidate."""
    grades: F
    """(decisions, models) 0..1 from feedback and paired-sampling judgments, NaN = not graded."""
    theta: F
    phi: F
    cost: F


async def collect_decisions(session: AsyncSession, embedder: Embedder) -> Recorded:
    """Every routed decision with its analysis embedding and at least one grade: the user's
    feedback (for the model it names, else the routed one) and paired sampling's two judgments
    (the routed model's and the second model's, under the original response id); scores −1..1
    become (s + 1) / 2, several grades of one model are averaged."""
    names, theta, phi, cost = await _catalog(session)
    col = {n: j for j, n in enumerate(names)}
    q = (
        select(RoutingDecision.id, RoutingDecision.model, RoutingDecision.analysis, RoutingDecision.candidates,
               Feedback.model, Feedback.score)
        .join(Feedback, Feedback.response_id == RoutingDecision.response_id)
        .where(RoutingDecision.route_source != "paired")
        .order_by(RoutingDecision.id)
    )  # fmt: skip
    rows: dict[int, tuple[F, int, dict[int, float], dict[int, list[float]]]] = {}
    for did, routed, analysis, candidates, fb_model, score in (await session.execute(q)).all():
        r = col.get(routed or "")
        if r is None:
            continue
        if did not in rows:
            feats = _features(analysis, embedder.dims)
            if feats is None:
                continue
            cand = {
                col[c["model"]]: float(c["score"])
                for c in (candidates or [])
                if isinstance(c, dict) and c.get("model") in col and isinstance(c.get("score"), int | float)
            }
            rows[did] = (feats, r, cand, {})
        j = col.get(fb_model or routed or "")
        if j is not None:
            rows[did][3].setdefault(j, []).append(min(1.0, max(0.0, (float(score) + 1.0) / 2.0)))
    ids = sorted(rows)
    n, m = len(ids), len(names)
    x = np.zeros((n, embedder.dims + 3))
    routed_i = np.zeros(n, dtype=np.intp)
    scores = np.full((n, m), np.nan)
    grades = np.full((n, m), np.nan)
    for i, did in enumerate(ids):
        feats, r, cand, graded = rows[did]
        x[i], routed_i[i] = feats, r
        for j, v in cand.items():
            scores[i, j] = v
        for j, g in graded.items():
            grades[i, j] = float(np.mean(g))
    return Recorded(names, x, routed_i, scores, grades, theta, phi, cost)


def _pgr_at(score: F, weak: F, strong: F, share: float) -> float:
    """PGR of a router (scores, strong first) at a given share of strong-model calls."""
    x, y = share_curves(score, weak, strong, np.ones((1, len(score))))
    return float(np.interp(share, x[0], y[0]))


def replay(data: Recorded, priors: dict[str, RouterPrior], *, bootstrap: int = 200, seed: int = 0) -> list[str]:
    """The recorded decisions against each artefact, with the bench's metrics, for every pair of
    models (cheaper, better) graded together on at least ``MIN_PAIR`` decisions (paired sampling
    grades both): APGR by call share of the deployment's own router (its recorded candidate
    scores, strong − weak; the routed model first where a score is missing), of each artefact
    and of random, each ± sd over bootstrap resamples; then the deployment's operating point (its
    share of strong calls among those decisions and the PGR its choices reached) beside each
    artefact's PGR at the same share. Over every graded decision: how often each artefact would
    have chosen the recorded model (among the models the deployment ranked)."""
    lines: list[str] = []
    rng = np.random.default_rng(seed)
    n = len(data.routed)
    lines.append(f"replay of {n} graded recorded decisions over {len(data.models)} models")
    if n == 0:
        return lines
    probs = {name: prior.estimate_batch(data.x, data.theta, data.phi) for name, prior in priors.items()}
    ranked = ~np.isnan(data.scores)
    ranked[np.arange(n), data.routed] = True
    for name, p in probs.items():
        same = float(np.mean(np.argmax(np.where(ranked, p, -np.inf), axis=1) == data.routed))
        lines.append(f"recorded decisions  {name:<24} agrees with the recorded model on {same:.3f} of {n}")
    order = np.argsort(data.cost)
    for a_i, a in enumerate(order):
        for b in order[a_i + 1 :]:
            weak, strong = int(a), int(b)
            both = ~np.isnan(data.grades[:, weak]) & ~np.isnan(data.grades[:, strong])
            k = int(both.sum())
            if k < MIN_PAIR:
                continue
            ow, os_ = data.grades[both, weak], data.grades[both, strong]
            if os_.mean() <= ow.mean():
                continue  # the dearer model is not better here: no gap to recover
            w = bootstrap_weights(k, bootstrap, rng)
            pair = f"{data.models[weak]} → {data.models[strong]} ({k} decisions)"
            to_strong = (data.routed[both] == strong).astype(np.float64)
            rec = data.scores[both][:, strong] - data.scores[both][:, weak]
            rec = np.where(np.isnan(rec), to_strong - 0.5, rec)
            scores = {"recorded router": rec}
            scores.update({name: p[both][:, strong] - p[both][:, weak] for name, p in probs.items()})
            scores["random"] = rng.random(k)
            for name, sc in scores.items():
                v = apgr_by_share(sc, ow, os_, w)
                lines.append(
                    f"{pair}  {name:<24} APGR by call share {v[0]:.3f} ± {v[1:].std() if v.size > 1 else 0.0:.3f}"
                )
            share = float(to_strong.mean())
            got = np.where(to_strong > 0, os_, ow).mean()
            lines.append(
                f"{pair}  {'recorded decisions':<24} share of strong calls {share:.3f}, "
                f"PGR {(got - ow.mean()) / (os_.mean() - ow.mean()):.3f}"
            )
            for name in probs:
                at = _pgr_at(scores[name], ow, os_, share)
                lines.append(f"{pair}  {name:<24} PGR at the recorded share {at:.3f}")
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
        if args.replay:
            engine = make_engine(settings.database_url, pool_size=1)
            try:
                async with make_sessionmaker(engine)() as session:
                    recorded = await collect_decisions(session, default_embedder())
            finally:
                await engine.dispose()
            print("\n".join(replay(recorded, priors, bootstrap=args.bootstrap)))  # noqa: T201
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
    e.add_argument(
        "--replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also replay the recorded routing decisions and their grades against each prior",
    )
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
