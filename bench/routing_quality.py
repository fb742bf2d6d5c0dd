"""How good is the routing? Held-out prompts of outcome data sets through the scorer's real
analysis and scoring, measured the way RouteLLM measures, in three protocols.

    python bench/routing_quality.py                     # mmlu, llmrouter, arena; 2 seeds (~11 min, shared 2 cores)
    python bench/routing_quality.py --quick             # 1 seed, ≤ 3,000 prompts a set, 30 resamples (~30 s)
    python bench/routing_quality.py --csv outcomes.csv --models models.csv   # + a set of your own
    python bench/routing_quality.py --dump decisions.csv                      # per-prompt decisions

**Protocols** (the held-out half is the same in all; split per seed, stratified by group):

* ``in-dist`` — everything learned comes from the other half of the same set: per-category
  profiles, the k-NN index, and the prior (fitted on that half plus all the other sets);
  blending weights chosen on a validation split of that half (``--tune``).
* ``lodo`` (leave one data set out): the prior is fitted on the other sets only; the
  deployment's own data is a profiling run of ``--profile-n`` (31) prompts per model from the
  training half (per-category profiles and the k-NN index come from those alone); blending
  weights are the shipped defaults. Its profiling prompts come from the held-out set's own
  distribution, which a real profiler suite's do not, so its k-NN index is a prompt-level part
  learned on the held-out set.
* ``lodo+profile`` — the honest fresh-deployment analogue. When a model joins, the profiler
  grades it on its suite (~31 prompts) and the catalog may carry public benchmark scores: a
  deployment knows each model's *overall standing*, not how its own traffic splits by prompt.
  So the same ``--profile-n`` calibration sample (training half only, never the test half)
  sets each model's overall profile — nothing per category, no k-NN index — and every
  prompt-level part (the prior) is trained on the other sets only; the blend is chosen by
  running this protocol on each *other* set (its prior fitted on the sets that are neither)
  and taking the best mean APGR, so nothing is tuned on the held-out set. The prompt-blind mix
  reference knows every model's quality on the test prompts themselves; a router that knows
  each model's standing from 31 prompts is its fair counterpart, and ``prompt-blind mix,
  calibrated`` (the mix chosen from that same 31-prompt standing) shows what the standing
  alone is worth.

**Routers** — the scorer's ``model_terms`` for every held-out prompt (checked against
``scoring.rank`` on a sample): ``heuristics only`` (analysis + catalog + profiles); ``+ kNN``
(the learned index); ``+ prior`` (the shipped prior, ``learned_prior.py``); ``heuristics +
learned`` (both, blended); ``learned only`` (the learned share at ~1). Every term is linear in
the quality preference ``q``, so each prompt's choice at any ``q`` follows from two evaluations;
with two models the crossover ``q*`` ranks the prompts (RouteLLM's threshold sweep).

**Metrics** (``routing_metrics.py``): APGR, CPT(50 %), CPT(80 %) by call share (two-model sets,
RouteLLM's definition) and by cost (all sets; q ∈ [0, 1] on 101 settings, concave hull), plus
the cost at which quality reaches 95 % of the strong model's. Bands: mean ± sd over seeds ×
bootstrap resamples of the held-out prompts, and the 2.5–97.5 % range. References are measured
the same way: random, the best prompt-blind mix of models, the best single model, the oracle.
Every figure is one line: ``<set> <protocol> <router> <measure> by <definition> <mean> ± <sd>``.

**Classifier value** (``--classifier``, protocol ``classifier``): in-distribution, heuristics
only and heuristics + learned under the heuristic analysis's categories, under the set's own
labels (MMLU subject, LLMRouter cluster: a perfect classifier with a finer vocabulary than the
LLM classifier's) and under those labels 25 % / 50 % wrong. No LLM runs here.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import routing_data
from routing_metrics import bootstrap_weights, cost_metrics, crossing, points_metrics, share_curves

from turnout.common.schemas.route import RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.learned import LearnedConfig, LearnedIndex
from turnout.scorer.learned_prior import (
    OutcomeGroup,
    RouterPrior,
    blend,
    fit_prior,
    model_features,
    prompt_features_batch,
)
from turnout.scorer.prompt_analysis import Analyzer, PromptAnalysis, PromptFeatures
from turnout.scorer.scoring import (
    OVERALL,
    Constraints,
    Learned,
    ModelSpec,
    ModelTable,
    ReplicaTable,
    ScoringConfig,
    model_terms,
    rank,
    select,
)

F = npt.NDArray[np.float64]
OUTPUT_TOKENS = 200
QS = np.round(np.linspace(0.0, 1.0, 101), 3)

# Quoted, not measured: RouteLLM (Ong et al. 2024, arXiv 2406.18665 v4), GPT-4 vs Mixtral-8x7B,
# APGR / CPT(50 %) / CPT(80 %) by share of strong-model calls.
PUBLISHED = [
    ("routellm-mmlu", "random (paper)", 0.500, 0.5007, 0.7993),
    ("routellm-mmlu", "best, Arena data only: matrix factorization (paper)", 0.524, 0.4500, 0.7686),
    ("routellm-mmlu", "best, Arena + golden labels: SW ranking (paper)", 0.603, 0.3540, 0.7155),
    ("routellm-mmlu", "best CPT(80%), Arena + golden labels: causal LLM (paper)", float("nan"), float("nan"), 0.7031),
    ("mt-bench", "best: matrix factorization, Arena + judge data (paper)", 0.802, 0.1340, 0.3131),
]


@dataclass(frozen=True)
class Blend:
    learned_k: float = 4.0
    prior_mass: float = 4.0
    knn_k: int = 48
    floor: float = 0.5


DEFAULT_BLEND = Blend()


@dataclass
class Prepared:
    ds: routing_data.OutcomeSet
    analyses: list[PromptAnalysis]
    emb: F
    x: F  # prior features
    tokens: F
    cost: F

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.ds.models]


@dataclass
class Result:
    """Metric name -> values over seeds × resamples (row 0 of each seed: the test set itself)."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, v: F) -> None:
        self.values.setdefault(name, []).extend(float(a) for a in v)


# --------------------------------------------------------------------------- preparation


def prepare(ds: routing_data.OutcomeSet) -> Prepared:
    analyzer = Analyzer()
    analyses = [analyzer.analyze(PromptFeatures(p)) for p in ds.prompts]
    emb = embed(ds.prompts)
    tokens = np.array([a.tokens for a in analyses], dtype=np.float64)
    x = prompt_features_batch(emb, [a.complexity for a in analyses], tokens)
    return Prepared(ds, analyses, emb, x, tokens, costs(ds, tokens))


def embed(texts: list[str], batch: int = 512) -> F:
    enc = default_embedder().encode
    return np.vstack([enc(texts[i : i + batch]) for i in range(0, len(texts), batch)]).astype(np.float64)


def costs(ds: routing_data.OutcomeSet, tokens: F) -> F:
    """(prompts × models) cost of each call: price × (prompt + 200 output tokens); parameters
    stand in for price where a set has none."""
    price = np.array([m.price_per_mtok for m in ds.models], dtype=np.float64)
    if np.isnan(price).all():
        price = np.array([m.params_b for m in ds.models], dtype=np.float64)
    price = np.where(np.isnan(price), np.nanmedian(price), price)
    return (tokens[:, None] + OUTPUT_TOKENS) * price[None, :] / 1e6  # type: ignore[no-any-return]


def split(ds: routing_data.OutcomeSet, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = ds.groups or [""] * len(ds.prompts)
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    train: list[int] = []
    test: list[int] = []
    for g in sorted(by):
        idx = np.array(by[g])
        rng.shuffle(idx)
        cut = int(round(frac * len(idx)))
        train.extend(idx[:cut])
        test.extend(idx[cut:])
    return np.array(sorted(train), dtype=np.intp), np.array(sorted(test), dtype=np.intp)


def build_table(p: Prepared, rows: np.ndarray, categories: bool = True) -> ModelTable:
    """A catalog of the set's models with profiles from ``rows`` only: overall standing, and per
    category unless ``categories`` is off (the profiler's standing only, ``lodo+profile``)."""
    cats = np.array([a.category for a in p.analyses])
    specs = []
    for j, m in enumerate(p.ds.models):
        prof: dict[str, tuple[float, float]] = {OVERALL: (float(p.ds.outcomes[rows, j].mean()), float(len(rows)))}
        for c in sorted(set(cats[rows])) if categories else ():
            sub = rows[cats[rows] == c]
            prof[c] = (float(p.ds.outcomes[sub, j].mean()), float(len(sub)))
        active = 12.9 if "mixtral" in m.name.lower() else None  # MoE: Mixtral-8x7B ~12.9B active
        specs.append(
            ModelSpec(
                m.name,
                params_b=None if np.isnan(m.params_b) else m.params_b,
                active_params_b=active,
                price_per_mtok=None if np.isnan(m.price_per_mtok) else m.price_per_mtok,
                profile=prof,
            )
        )
    return ModelTable.build(specs, ScoringConfig(), version=p.ds.name)


def group_of(p: Prepared, rows: np.ndarray) -> OutcomeGroup:
    table = build_table(p, rows)
    theta, phi = model_features(table.capability[OVERALL], table.power)
    return OutcomeGroup(p.ds.name, p.x[rows], p.ds.outcomes[rows], theta, phi)


# --------------------------------------------------------------------------- routers


def knn(p: Prepared, train: np.ndarray, test: np.ndarray, b: Blend) -> tuple[F, F]:
    index = LearnedIndex(p.emb.shape[1], LearnedConfig(capacity=max(len(train), 1), k=b.knn_k, floor=b.floor))
    index.add_batch(p.emb[train], p.names, p.ds.outcomes[train], source="profile")
    ps, ns = [], []
    for i in range(0, len(test), 1000):
        a, n = index.estimate_batch(p.emb[test[i : i + 1000]])
        ps.append(a)
        ns.append(n)
    order = [index.models.index(n) for n in p.names]
    return np.vstack(ps)[:, order], np.vstack(ns)[:, order]


def learned_for(
    p: Prepared,
    table: ModelTable,
    test: np.ndarray,
    knn_est: tuple[F, F] | None,
    prior: RouterPrior | None,
    b: Blend,
) -> tuple[F, F] | None:
    prior_p = None
    if prior is not None:
        theta, phi = model_features(table.capability[OVERALL], table.power)
        prior_p = prior.estimate_batch(p.x[test], theta, phi)
    return blend(prior_p, *(knn_est if knn_est is not None else (None, None)), b.prior_mass)


def terms01(p: Prepared, test: np.ndarray, table: ModelTable, cfg: ScoringConfig, est: tuple[F, F] | None) -> F:
    """(2, prompts, models): total model score at q = 0 and q = 1 (linear in between)."""
    out = np.empty((2, len(test), table.size))
    for t, i in enumerate(test):
        lp = Learned(est[0][t], est[1][t]) if est is not None else None
        for k, q in enumerate((0.0, 1.0)):
            out[k, t] = model_terms(p.analyses[i], q, table, cfg, None, lp).total
    return out


def choices(t01: F, qs: F = QS) -> npt.NDArray[np.intp]:
    """(settings, prompts) argmax model at each q."""
    s = t01[0][None, :, :] + qs[:, None, None] * (t01[1] - t01[0])[None, :, :]
    return np.argmax(s, axis=2)  # type: ignore[no-any-return]


def crossover(t01: F, weak: int, strong: int) -> F:
    """Two models: a score that ranks prompts by the q at which the strong model starts to win
    (−q*). Prompts it wins at every q rank first, those it wins at none last, each group ordered
    by its quality margin (the slope in q: what a larger q would do in the limit), so the
    threshold sweep covers every share of strong calls, as RouteLLM's does."""
    d0 = t01[0][:, strong] - t01[0][:, weak]
    slope = t01[1][:, strong] - t01[1][:, weak] - d0
    with np.errstate(divide="ignore", invalid="ignore"):
        qstar = np.where(slope > 0, -d0 / slope, 0.0)
    always = (d0 > 0) & (slope >= 0)
    never = slope <= 0
    score = -np.clip(qstar, -1e3, 1e3)
    score = np.where(always, 1e4 + slope, score)
    return np.where(never & ~always, -1e4 + slope, score)  # type: ignore[no-any-return]


def check_real_path(
    p: Prepared, test: np.ndarray, table: ModelTable, cfg: ScoringConfig, est: tuple[F, F] | None, t01: F, n: int = 100
) -> int:
    """The sweep's shortcut (two evaluations, linear in q) must agree with ``scoring.rank``."""
    reps = ReplicaTable.from_specs(table)
    bad = 0
    for t in range(min(n, len(test))):
        a = p.analyses[test[t]]
        lp = Learned(est[0][t], est[1][t]) if est is not None else None
        for q in (0.0, 0.3, 0.7, 1.0):
            req = RouteRequestV1(text="", quality=q, est_prompt_tokens=a.tokens)
            select(req.kind, False, False, a.tokens, table, Constraints(), cfg)
            r = rank(req, a, table, reps, cfg, learned=lp, limit=1)
            bad += int(r.chosen != int(np.argmax(t01[0][t] + q * (t01[1][t] - t01[0][t]))))
    return bad


# --------------------------------------------------------------------------- protocols


@dataclass
class Setting:
    """What a protocol learns from, for one set and seed."""

    profile_rows: np.ndarray
    knn_rows: np.ndarray
    prior: RouterPrior | None
    blend: Blend
    pair: tuple[int, int]
    """(weak, strong) of the evaluation: cheapest and best on the training half."""
    categories: bool = True
    """Per-category profiles from ``profile_rows`` (off: overall standing only)."""


_PRIORS: dict[tuple[str, ...], RouterPrior] = {}


def train_prior(groups: list[OutcomeGroup], quick: bool, cache: bool = False) -> RouterPrior:
    """Fit a prior; ``cache``: the groups are whole sets (lodo), the same for every seed."""
    key = (*(g.name for g in groups), str(quick))
    if cache and key in _PRIORS:
        return _PRIORS[key]
    prior = fit_prior(groups, embedder=default_embedder().name, iterations=150 if quick else 400)
    if cache:
        _PRIORS[key] = prior
    return prior


def evaluate(
    p: Prepared,
    test: np.ndarray,
    s: Setting,
    weights: F,
    res: dict[str, Result],
    dump: Callable[[str, F, npt.NDArray[np.intp]], None] | None,
    checks: list[int],
) -> None:
    table = build_table(p, s.profile_rows, s.categories)
    cfg = ScoringConfig(learned_k=s.blend.learned_k)
    out = p.ds.outcomes[test]
    cost = p.cost[test]
    weak, strong = s.pair
    k_est = knn(p, s.knn_rows, test, s.blend) if len(s.knn_rows) else None
    routers: dict[str, tuple[ScoringConfig, tuple[F, F] | None]] = {
        "heuristics only": (cfg, None),
        "heuristics + kNN": (cfg, learned_for(p, table, test, k_est, None, s.blend)),
        "heuristics + prior": (cfg, learned_for(p, table, test, None, s.prior, s.blend)),
        "heuristics + learned": (cfg, learned_for(p, table, test, k_est, s.prior, s.blend)),
        "learned only": (replace(cfg, learned_k=1e-9), learned_for(p, table, test, k_est, s.prior, s.blend)),
    }
    two = len(p.names) == 2
    for name, (c, est) in routers.items():
        if name == "heuristics + kNN" and k_est is None:
            continue
        t01 = terms01(p, test, table, c, est)
        if name == "heuristics + learned":
            checks.append(check_real_path(p, test, table, c, est, t01))
        ch = choices(t01)
        if two:
            score = crossover(t01, weak, strong)
            add_share(res, name, score, out[:, weak], out[:, strong], weights)
            if dump:
                dump(name, score, ch)
        elif dump:
            dump(name, np.full(len(test), np.nan), ch)
        for k, v in cost_metrics(ch, out, cost, weak, strong, weights).items():
            res.setdefault(name, Result()).add(f"{k} cost", v)
    references(res, out, cost, weak, strong, weights, two)
    calibrated_mix(res, p, s.profile_rows, out, cost, weak, strong, weights)


def calibrated_mix(
    res: dict[str, Result], p: Prepared, rows: np.ndarray, out: F, cost: F, weak: int, strong: int, weights: F
) -> None:
    """The prompt-blind mix a deployment could run on what the router knows: models ranked by
    their standing on the profile rows (the calibration sample), the same model for every prompt
    at each price λ (argmax standing − λ·cost), consecutive settings joined linearly (= mixing
    them), scored on the test prompts. The ``best prompt-blind mix`` reference instead knows each
    model's quality on the test prompts themselves."""
    q_hat = p.ds.outcomes[rows].mean(axis=0)
    c_hat = p.cost[rows].mean(axis=0)
    lam = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 80) / max(float(c_hat.mean()), 1e-12)])
    picks = [int(np.lexsort((c_hat, -(q_hat - l_ * c_hat)))[0]) for l_ in lam]
    ch = np.repeat(np.array(picks, dtype=np.intp)[:, None], len(out), axis=1)
    for k, v in cost_metrics(ch, out, cost, weak, strong, weights).items():
        res.setdefault("prompt-blind mix, calibrated (measured)", Result()).add(f"{k} cost", v)


def add_share(res: dict[str, Result], name: str, score: F, w: F, s: F, weights: F) -> None:
    x, y = share_curves(score, w, s, weights)
    r = res.setdefault(name, Result())
    r.add("apgr share", np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0, axis=1))
    r.add("cpt50 share", crossing(x, y, 0.5))
    r.add("cpt80 share", crossing(x, y, 0.8))


def references(res: dict[str, Result], out: F, cost: F, weak: int, strong: int, weights: F, two: bool) -> None:
    rng = np.random.default_rng(len(out))
    gain = out[:, strong] - out[:, weak]
    if two:
        add_share(res, "oracle (measured)", gain, out[:, weak], out[:, strong], weights)
    # random over weak/strong at each share; prompt-blind mixes of all models; single models; oracle
    rnd = np.where(rng.random((len(QS), len(out))) < QS[:, None], strong, weak).astype(np.intp)
    for k, v in cost_metrics(rnd, out, cost, weak, strong, weights).items():
        res.setdefault("random weak/strong (measured)", Result()).add(f"{k} cost", v)
    grid = np.linspace(0.0, 1.0, 1001)
    for r in range(weights.shape[0]):
        w = weights[r] / weights[r].sum()
        q, c = w @ out, w @ cost
        if two:  # a fresh random router per resample
            add_share(res, "random (measured)", rng.random(len(out)), out[:, weak], out[:, strong], weights[r : r + 1])
        scale = len(out) / weights[r].sum()
        mix = points_metrics(q, c, out * weights[r][:, None] * scale, cost * weights[r][:, None] * scale, weak, strong)
        for k, v in mix.items():
            res.setdefault("best prompt-blind mix (measured)", Result()).add(f"{k} cost", np.array([v]))
        # best single model: no mixing — the best model whose cost is within x (a step curve)
        xs = (c - c[weak]) / (c[strong] - c[weak])
        ys = (q - q[weak]) / (q[strong] - q[weak])
        order = np.argsort(xs)
        best = np.maximum(np.maximum.accumulate(ys[order]), 0.0)
        at = np.searchsorted(xs[order], grid + 1e-12, side="right")  # models within each budget
        step = np.where(at > 0, best[np.maximum(at - 1, 0)], 0.0)
        single = res.setdefault("best single model (measured)", Result())
        single.add("apgr cost", np.array([float(np.sum((grid[1:] - grid[:-1]) * (step[1:] + step[:-1]) / 2))]))
        single.add("cpt50 cost", np.array([float(grid[np.argmax(step >= 0.5)]) if (step >= 0.5).any() else np.nan]))
        single.add("cpt80 cost", np.array([float(grid[np.argmax(step >= 0.8)]) if (step >= 0.8).any() else np.nan]))
        good = np.flatnonzero(q >= 0.95 * q[strong] - 1e-12)
        single.add("cost95 cost", np.array([float(c[good].min() / c[strong])]))
    # oracle with prices: per prompt argmax(outcome − λ·cost) over λ
    lam = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 60) / max(float(cost.mean()), 1e-12)])
    tie = 1e-9 * cost / max(float(cost.max()), 1e-12)
    ch = np.stack([np.argmax(out - l_ * cost - tie, axis=1) for l_ in lam]).astype(np.intp)
    for k, v in cost_metrics(ch, out, cost, weak, strong, weights).items():
        res.setdefault("oracle (measured)", Result()).add(f"{k} cost", v)


def pick_pair(p: Prepared, rows: np.ndarray) -> tuple[int, int]:
    """weak = the cheapest model (ties: better), strong = the best on ``rows`` (ties: cheaper)."""
    mean = p.ds.outcomes[rows].mean(axis=0)
    c = p.cost[rows].mean(axis=0)
    return int(np.lexsort((-mean, c))[0]), int(np.lexsort((c, -mean))[0])


def tune(p: Prepared, train: np.ndarray, others: list[OutcomeGroup], quick: bool, seed: int) -> Blend:
    """Blending weights by APGR on a validation fifth of the training half (the prior refitted
    without it); heuristics-only stays a candidate, so tuning can switch the learned term off."""
    rng = np.random.default_rng(seed + 7)
    perm = rng.permutation(train)
    cut = int(0.8 * len(perm))
    inner, val = np.sort(perm[:cut]), np.sort(perm[cut:])
    prior = train_prior([*others, group_of(p, inner)], quick)
    table = build_table(p, inner)
    weak, strong = pick_pair(p, inner)
    out = p.ds.outcomes[val]
    ones = np.ones((1, len(val)))
    best: tuple[float, Blend] | None = None
    grid = [Blend(learned_k=k, prior_mass=m) for k in (1.0, 4.0, 16.0) for m in (1.0, 4.0)]
    k_est = knn(p, inner, val, DEFAULT_BLEND)  # the grid varies the blend, not the index
    for b in [Blend(learned_k=1e9), *grid]:
        cfg = ScoringConfig(learned_k=b.learned_k)
        est = learned_for(p, table, val, k_est, prior, b)
        t01 = terms01(p, val, table, cfg, est)
        if len(p.names) == 2:
            x, y = share_curves(crossover(t01, weak, strong), out[:, weak], out[:, strong], ones)
            a = float(np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0))
        else:
            a = float(cost_metrics(choices(t01), out, p.cost[val], weak, strong, ones)["apgr"][0])
        if best is None or a > best[0] + 1e-9:
            best = (a, b)
    assert best is not None
    return best[1]


PROFILE_GRID = [Blend(learned_k=k) for k in (1e9, 16.0, 4.0, 1.0, 0.25, 1e-9)]
"""``lodo+profile`` blends: heuristics only (1e9) … learned only (1e-9); without a k-NN index the
learned share is ``prior_mass / (prior_mass + learned_k)``, so only the ratio matters."""


def apgr_of(
    p: Prepared, test: np.ndarray, table: ModelTable, b: Blend, prior: RouterPrior, pair: tuple[int, int]
) -> float:
    """APGR of one blend on ``test`` (by call share for two models, else by cost), no resamples."""
    cfg = ScoringConfig(learned_k=b.learned_k)
    t01 = terms01(p, test, table, cfg, learned_for(p, table, test, None, prior, b))
    out, ones = p.ds.outcomes[test], np.ones((1, len(test)))
    weak, strong = pair
    if len(p.names) == 2:
        x, y = share_curves(crossover(t01, weak, strong), out[:, weak], out[:, strong], ones)
        return float(np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0))
    return float(cost_metrics(choices(t01), out, p.cost[test], weak, strong, ones)["apgr"][0])


def tune_on_other_sets(
    held_out: str, prepared: dict[str, Prepared], full: dict[str, OutcomeGroup], args: argparse.Namespace
) -> tuple[Blend, dict[str, dict[float, float]]]:
    """The ``lodo+profile`` blend, chosen without the held-out set: each other set A is run
    through the same protocol (prior fitted on the sets that are neither A nor the held-out one,
    a ``--profile-n`` calibration sample of A's training half, A's test half scored), and the
    blend with the best mean APGR over those sets wins. With one other set (nothing to fit its
    prior on) the shipped default stands."""
    scores: dict[str, dict[float, float]] = {}
    for name, p in prepared.items():
        if name == held_out:
            continue
        rest = [g for n, g in full.items() if n not in (name, held_out)]
        if not rest:
            continue
        prior = train_prior(rest, args.quick, cache=True)
        train, test = split(p.ds, args.train_frac, 0)
        rng = np.random.default_rng(1000)
        prof = np.sort(rng.choice(train, min(args.profile_n, len(train)), replace=False))
        table = build_table(p, prof, categories=False)
        pair = pick_pair(p, train)
        scores[name] = {b.learned_k: apgr_of(p, test, table, b, prior, pair) for b in PROFILE_GRID}
    if not scores:
        return DEFAULT_BLEND, scores
    mean = {b.learned_k: float(np.mean([v[b.learned_k] for v in scores.values()])) for b in PROFILE_GRID}
    best = max(PROFILE_GRID, key=lambda b: mean[b.learned_k])
    return best, scores


# --------------------------------------------------------------------------- classifier value

LABEL_NOISE = (0.0, 0.25, 0.5)


def with_labels(p: Prepared, noise: float, seed: int) -> Prepared:
    """``p`` with every prompt's category replaced by the set's own label (MMLU subject,
    LLMRouter cluster), a share ``noise`` of them by a different label drawn at random: a
    classifier that is perfect (``noise`` 0) or wrong at that rate, over a vocabulary at least as
    fine as the LLM classifier's."""
    assert p.ds.groups is not None
    rng = np.random.default_rng(5000 + seed)
    vocab = sorted(set(p.ds.groups))
    labels = list(p.ds.groups)
    for i in np.flatnonzero(rng.random(len(labels)) < noise):
        labels[i] = vocab[(vocab.index(labels[i]) + 1 + int(rng.integers(len(vocab) - 1))) % len(vocab)]
    analyses = [replace(a, category=f"label:{g}", source="label") for a, g in zip(p.analyses, labels, strict=True)]
    return replace(p, analyses=analyses)


def classifier_value(name: str, p: Prepared, others: list[OutcomeGroup], args: argparse.Namespace) -> None:
    """The most a category label can add, in-distribution: per-category profiles (and every
    category-keyed heuristic) learned from the training half under the heuristic analysis's
    categories, under the set's own labels (a perfect classifier), and under those labels with
    noise. No LLM runs here: the noise rates bracket a small model's topic-labelling errors."""
    if not p.ds.groups:
        return
    res: dict[str, Result] = {}
    for seed in range(args.seeds):
        train, test = split(p.ds, args.train_frac, seed)
        weights = bootstrap_weights(len(test), args.bootstrap, np.random.default_rng(1000 + seed))
        prior = train_prior([*others, group_of(p, train)], args.quick)
        variants = [("heuristic categories", p)] + [
            (f"labels, {n:.0%} wrong" if n else "labels (perfect)", with_labels(p, n, seed)) for n in LABEL_NOISE
        ]
        pair = pick_pair(p, train)
        out, cost = p.ds.outcomes[test], p.cost[test]
        for vname, pv in variants:
            table = build_table(pv, train)
            k_est = knn(pv, train, test, DEFAULT_BLEND)
            for router, est in (
                ("heuristics only", None),
                ("heuristics + learned", learned_for(pv, table, test, k_est, prior, DEFAULT_BLEND)),
            ):
                t01 = terms01(pv, test, table, ScoringConfig(learned_k=DEFAULT_BLEND.learned_k), est)
                key = f"{router}, {vname}"
                if len(p.names) == 2:
                    add_share(res, key, crossover(t01, *pair), out[:, pair[0]], out[:, pair[1]], weights)
                for k, v in cost_metrics(choices(t01), out, cost, *pair, weights).items():
                    res.setdefault(key, Result()).add(f"{k} cost", v)
    keep = {"apgr share", "apgr cost"}
    report(name, "classifier", {k: Result({m: v for m, v in r.values.items() if m in keep}) for k, r in res.items()})


# --------------------------------------------------------------------------- reporting


MEASURES = [
    ("apgr share", "APGR", "call share"),
    ("cpt50 share", "CPT(50%)", "call share"),
    ("cpt80 share", "CPT(80%)", "call share"),
    ("apgr cost", "APGR", "cost"),
    ("cpt50 cost", "CPT(50%)", "cost"),
    ("cpt80 cost", "CPT(80%)", "cost"),
    ("cost95 cost", "cost for 95% of strong model quality (share of its cost)", "cost"),
]


def report(set_name: str, protocol: str, res: dict[str, Result]) -> None:
    for key, label, definition in MEASURES:
        for router, r in res.items():
            v = np.array(r.values.get(key, []), dtype=np.float64)
            if v.size == 0:
                continue
            v = v[~np.isnan(v)]
            if v.size == 0:
                print(f"{set_name:<16} {protocol:<12} {router:<34} {label} by {definition}  n/a")
                continue
            lo, hi = np.percentile(v, [2.5, 97.5])
            print(
                f"{set_name:<16} {protocol:<12} {router:<34} {label} by {definition} "
                f"{v.mean():.3f} ± {v.std():.3f}  [{lo:.3f}, {hi:.3f}]"
            )


def print_published() -> None:
    print("\n=== Published (QUOTED from Ong et al. 2024, RouteLLM, arXiv 2406.18665 v4; by call share)")
    for ds, label, a, c5, c8 in PUBLISHED:
        for m, v in (("APGR", a), ("CPT(50%)", c5), ("CPT(80%)", c8)):
            if not math.isnan(v):
                print(f"{ds:<16} {'paper':<8} {label:<34} {m} by call share {v:.3f}")


def run_protocol(
    name: str,
    p: Prepared,
    protocol: str,
    others: list[OutcomeGroup],
    args: argparse.Namespace,
    dump_rows: list[list[object]],
    checks: list[int],
    profile_blend: Blend = DEFAULT_BLEND,
) -> None:
    res: dict[str, Result] = {}
    blends = []
    for seed in range(args.seeds):
        train, test = split(p.ds, args.train_frac, seed)
        rng = np.random.default_rng(1000 + seed)
        weights = bootstrap_weights(len(test), args.bootstrap, rng)
        if protocol == "in-dist":
            b = tune(p, train, others, args.quick, seed) if args.tune else DEFAULT_BLEND
            prior = train_prior([*others, group_of(p, train)], args.quick)
            s = Setting(train, train, prior, b, pick_pair(p, train))
        elif protocol == "lodo":
            prof = np.sort(rng.choice(train, min(args.profile_n, len(train)), replace=False))
            s = Setting(prof, prof, train_prior(others, args.quick, cache=True), DEFAULT_BLEND, pick_pair(p, train))
        else:  # lodo+profile: the same calibration sample, for per-model standing only
            prof = np.sort(rng.choice(train, min(args.profile_n, len(train)), replace=False))
            prior = train_prior(others, args.quick, cache=True)
            empty = np.zeros(0, dtype=np.intp)
            s = Setting(prof, empty, prior, profile_blend, pick_pair(p, train), categories=False)
        blends.append(s.blend)

        def dump(router: str, score: F, ch: npt.NDArray[np.intp], seed: int = seed, test: np.ndarray = test) -> None:
            for t, i in enumerate(test):
                picks = (int(ch[k, t]) for k in (0, 25, 50, 75, 100))
                dump_rows.append([name, protocol, seed, router, int(i), float(score[t]), *picks])

        evaluate(p, test, s, weights, res, dump if args.dump else None, checks)
    pair = ", ".join(p.names[j] for j in pick_pair(p, np.arange(len(p.ds.prompts))))
    print(
        f"  [{protocol}] weak/strong: {pair}; "
        f"blend (learned_k, prior_mass) per seed: {[(b.learned_k, b.prior_mass) for b in blends]}"
    )
    report(name, protocol, res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=list(routing_data.LOADERS), help="names from routing_data.LOADERS")
    ap.add_argument("--csv", type=Path, help="generic outcomes CSV: prompt,<model>,<model>,...")
    ap.add_argument("--models", type=Path, help="model table CSV for --csv: name,params_b,price_per_mtok")
    ap.add_argument("--train-frac", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=100, help="resamples of the held-out prompts per seed")
    ap.add_argument("--limit", type=int, default=0, help="at most this many prompts per data set (0 = all)")
    ap.add_argument("--profile-n", type=int, default=31, help="profiling prompts per model (lodo)")
    ap.add_argument("--protocols", default="in-dist,lodo,lodo+profile")
    ap.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--quick", action="store_true", help="1 seed, ≤ 3,000 prompts a set, 30 resamples, no tuning")
    ap.add_argument(
        "--classifier",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure what a category label adds (sets with their own labels)",
    )
    ap.add_argument("--dump", type=Path, help="write per-prompt decisions (CSV)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.bootstrap, args.tune = 1, 30, False
        args.limit = args.limit or 3000
    t0 = time.perf_counter()
    sets: list[routing_data.OutcomeSet] = []
    for name in args.datasets:
        if name not in routing_data.LOADERS:
            ap.error(f"unknown data set {name!r}; known: {', '.join(routing_data.LOADERS)}")
        sets.append(routing_data.LOADERS[name]())
    if args.csv:
        if not args.models:
            ap.error("--csv needs --models")
        sets.append(routing_data.load_generic(args.csv, args.models))
    if args.limit:
        sets = [
            ds.subset(np.sort(np.random.default_rng(0).choice(len(ds.prompts), args.limit, replace=False)))
            if len(ds.prompts) > args.limit
            else ds
            for ds in sets
        ]
    prepared = {ds.name: prepare(ds) for ds in sets}
    print(f"prepared {len(sets)} sets in {time.perf_counter() - t0:.1f}s (analysis + static embeddings)")
    full = {n: group_of(p, np.arange(len(p.ds.prompts))) for n, p in prepared.items()}
    dump_rows: list[list[object]] = []
    protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    checks: list[int] = []
    for name, p in prepared.items():
        others = [g for n, g in full.items() if n != name]
        print(
            f"\n=== {name}: {len(p.ds.prompts)} prompts, {len(p.names)} models"
            f"{' (graded scores)' if p.ds.graded else ' (0/1)'}; held-out half per seed"
        )
        for protocol in protocols:
            if protocol.startswith("lodo") and not others:
                print(f"{name:<16} {protocol:<12} (skipped: no other data set to train on)")
                continue
            if protocol == "lodo+profile":
                b, scores = tune_on_other_sets(name, prepared, full, args)
                for other, v in scores.items():
                    grid = ", ".join(f"{k:g}: {a:.3f}" for k, a in v.items())
                    print(f"  [lodo+profile] blend chosen on {other} (APGR by learned_k): {grid}")
                run_protocol(name, p, protocol, others, args, dump_rows, checks, b)
                continue
            run_protocol(name, p, protocol, others, args, dump_rows, checks)
        if args.classifier:
            classifier_value(name, p, others, args)
    print_published()
    print(
        f"\nscoring.rank agrees with the bench's two-evaluation shortcut on {4 * 100 * len(checks) - sum(checks)}"
        f"/{4 * 100 * len(checks)} sampled decisions"
    )
    if args.dump is not None:
        with open(args.dump, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["set", "protocol", "seed", "router", "prompt_index", "score", "q0", "q0.25", "q0.5", "q0.75", "q1"]
            )
            w.writerows(dump_rows)
        print(f"per-prompt decisions: {args.dump} ({len(dump_rows)} rows; score = −q* for two-model sets)")
    print(f"({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
