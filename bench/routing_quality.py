"""How good is the routing? Replays held-out prompts of an outcome data set through the scorer's
real analysis and scoring functions and traces the cost/quality curve.

    python bench/routing_quality.py                     # mmlu, llmrouter, arena
    python bench/routing_quality.py mmlu --minilm 1500  # + MiniLM vs static embeddings on a subsample
    python bench/routing_quality.py --csv outcomes.csv --models models.csv

Per data set: a seeded train/held-out split (stratified by group where the data set has one);
a catalog from the data set's models (parameters, price); per-category profile scores from the
TRAIN split only (category by the scorer's analysis); the learned index filled with TRAIN prompt
embeddings and outcomes; then every held-out prompt goes through analysis → filters → scoring
(``scoring.rank`` for a sample, checked against the vectorised ``scoring.choose`` used for the
sweep) at quality preferences 0..1. Cost of a call = price × (prompt tokens + 200 output tokens),
or parameters where the data set has no prices. Metrics are RouteLLM's (``routing_metrics.py``):
weak = cheapest model, strong = best model on the training split; PGR over normalised cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import routing_data
from routing_metrics import Point, apgr, cpt, pgr

from turnout.common.schemas.route import RouteRequestV1
from turnout.embeddings import StaticEmbedder
from turnout.embeddings.static import default_embedder
from turnout.scorer.learned import LearnedConfig, LearnedIndex
from turnout.scorer.prompt_analysis import Analyzer, PromptAnalysis, PromptFeatures
from turnout.scorer.scoring import (
    OVERALL,
    Constraints,
    Learned,
    ModelSpec,
    ModelTable,
    ReplicaTable,
    ScoringConfig,
    choose,
    rank,
    select,
)

OUTPUT_TOKENS = 200
QS = np.round(np.linspace(0.0, 1.0, 51), 3)

# Quoted, not measured here: RouteLLM (Ong et al. 2024, arXiv 2406.18665), MMLU, GPT-4 vs
# Mixtral-8x7B. Figures as recalled from the paper's MMLU table — check against the paper.
ROUTELLM_MMLU = [
    ("random (paper)", 0.500, 0.500, 0.800),
    ("best router, Arena data only (paper, approx.)", 0.50, 0.50, 0.80),
    ("best router, Arena + MMLU golden labels (paper, approx.)", 0.60, 0.35, 0.65),
]


@dataclass
class Curve:
    name: str
    points: list[Point]
    shares: dict[float, np.ndarray]

    @property
    def apgr(self) -> float:
        return apgr(self.points)

    def cpt(self, t: float) -> float:
        return cpt(self.points, t)


def split(ds: routing_data.OutcomeSet, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(ds.prompts)
    groups = ds.groups or [""] * n
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
    return np.array(sorted(train)), np.array(sorted(test))


def costs(ds: routing_data.OutcomeSet, tokens: np.ndarray) -> np.ndarray:
    """(prompts × models) cost of each call."""
    price = np.array([m.price_per_mtok for m in ds.models], dtype=np.float64)
    if np.isnan(price).all():
        price = np.array([m.params_b for m in ds.models], dtype=np.float64)
    price = np.where(np.isnan(price), np.nanmedian(price), price)
    return (tokens[:, None] + OUTPUT_TOKENS) * price[None, :] / 1e6


def build_specs(ds: routing_data.OutcomeSet, analyses: list[PromptAnalysis], train: np.ndarray) -> list[ModelSpec]:
    cats = np.array([a.category for a in analyses])
    specs = []
    for j, m in enumerate(ds.models):
        prof: dict[str, tuple[float, float]] = {OVERALL: (float(ds.outcomes[train, j].mean()), float(len(train)))}
        for c in sorted(set(cats[train])):
            rows = train[cats[train] == c]
            prof[c] = (float(ds.outcomes[rows, j].mean()), float(len(rows)))
        params = m.params_b if not np.isnan(m.params_b) else None
        active = 12.9 if "mixtral" in m.name.lower() else None  # MoE: Mixtral-8x7B ~12.9B active
        specs.append(
            ModelSpec(
                m.name,
                params_b=params,
                active_params_b=active,
                price_per_mtok=None if np.isnan(m.price_per_mtok) else m.price_per_mtok,
                profile=prof,
            )
        )
    return specs


def sweep(
    name: str,
    analyses: list[PromptAnalysis],
    test: np.ndarray,
    table: ModelTable,
    cfg: ScoringConfig,
    learned: tuple[np.ndarray, np.ndarray] | None,
    outcomes: np.ndarray,
    cost: np.ndarray,
    weak: int,
    strong: int,
) -> Curve:
    mask = np.ones(table.size, dtype=bool)
    choice = np.zeros((len(QS), len(test)), dtype=np.intp)
    for t, i in enumerate(test):
        lp = Learned(learned[0][t], learned[1][t]) if learned is not None else None
        for k, q in enumerate(QS):
            choice[k, t] = choose(analyses[i], float(q), table, mask, cfg, lp)
    return curve(name, choice, test, outcomes, cost, weak, strong, table.size)


def curve(
    name: str,
    choice: np.ndarray,
    test: np.ndarray,
    outcomes: np.ndarray,
    cost: np.ndarray,
    weak: int,
    strong: int,
    n_models: int,
) -> Curve:
    qw, qs = outcomes[test, weak].mean(), outcomes[test, strong].mean()
    cw, cs = cost[test, weak].mean(), cost[test, strong].mean()
    points, shares = [], {}
    for k, q in enumerate(QS):
        ch = choice[k]
        quality = float(outcomes[test, ch].mean())
        c = float(cost[test, ch].mean())
        points.append(Point((c - cw) / (cs - cw), pgr(quality, qw, qs), quality, c))
        shares[float(q)] = np.bincount(ch, minlength=n_models) / len(ch)
    return Curve(name, points, shares)


def point(label: str, quality: float, c: float, q_ref: tuple[float, float], c_ref: tuple[float, float]) -> str:
    x = (c - c_ref[0]) / (c_ref[1] - c_ref[0])
    return (
        f"  {label:<34} quality {quality:.4f}  cost/call {c:.3e}  norm.cost {x:6.3f}  PGR {pgr(quality, *q_ref):6.3f}"
    )


def check_real_path(
    analyses: list[PromptAnalysis],
    test: np.ndarray,
    table: ModelTable,
    cfg: ScoringConfig,
    learned: tuple[np.ndarray, np.ndarray] | None,
    n: int = 200,
) -> int:
    """The sweep uses ``choose``; make sure ``rank`` (filters, replicas, reasons) agrees."""
    reps = ReplicaTable.from_specs(table)
    bad = 0
    for t in range(min(n, len(test))):
        a = analyses[test[t]]
        lp = Learned(learned[0][t], learned[1][t]) if learned is not None else None
        for q in (0.0, 0.3, 0.6, 1.0):
            req = RouteRequestV1(text="", quality=q, est_prompt_tokens=a.tokens)
            sel = select(req.kind, False, False, a.tokens, table, Constraints(), cfg)
            r = rank(req, a, table, reps, cfg, learned=lp, limit=1)
            bad += int(r.chosen != choose(a, q, table, sel.mask, cfg, lp))
    return bad


def run_dataset(ds: routing_data.OutcomeSet, args: argparse.Namespace) -> dict[str, Curve]:
    t0 = time.perf_counter()
    if args.limit and len(ds.prompts) > args.limit:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(ds.prompts), args.limit, replace=False))
        ds = ds.subset(keep)
    analyzer = Analyzer()
    analyses = [analyzer.analyze(PromptFeatures(p)) for p in ds.prompts]
    t_an = time.perf_counter() - t0
    train, test = split(ds, args.train_frac, args.seed)
    tokens = np.array([a.tokens for a in analyses], dtype=np.float64)
    cost = costs(ds, tokens)
    names = [m.name for m in ds.models]
    mean_train = ds.outcomes[train].mean(axis=0)
    mean_cost = cost[train].mean(axis=0)
    weak = int(np.lexsort((-mean_train, mean_cost))[0])  # cheapest (ties: better)
    strong = int(np.lexsort((mean_cost, -mean_train))[0])  # best on train (ties: cheaper)
    cfg = ScoringConfig()
    specs = build_specs(ds, analyses, train)
    table = ModelTable.build(specs, cfg, version=ds.name)

    t1 = time.perf_counter()
    emb = embed(default_embedder(), ds.prompts)
    t_emb = time.perf_counter() - t1
    lcfg = LearnedConfig()
    if args.tune:
        lcfg = tune_learned(emb, ds, analyses, train, names, table, cfg, cost, weak, strong, args.seed)
    est = learned_estimates(emb, ds, train, test, names, lcfg)

    print(
        f"\n=== {ds.name}: {len(ds.prompts)} prompts ({len(train)} train / {len(test)} held out), "
        f"{len(names)} models{' (graded scores)' if ds.graded else ' (0/1)'}"
    )
    cats, counts = np.unique([analyses[i].category for i in test], return_counts=True)
    print("  held-out categories: " + ", ".join(f"{c} {n}" for c, n in zip(cats, counts, strict=True)))
    print(
        f"  weak = {names[weak]}, strong = {names[strong]}; analysis {1e6 * t_an / len(ds.prompts):.0f} µs/prompt, "
        f"static embeddings {1e6 * t_emb / len(ds.prompts):.0f} µs/prompt"
    )
    print(
        f"  learned index: k={lcfg.k}, floor={lcfg.floor}"
        + (" (chosen on a validation split of TRAIN)" if args.tune else "")
    )
    bad = check_real_path(analyses, test, table, cfg, est)
    print(
        f"  scoring.rank agrees with the sweep's scoring.choose on {4 * min(200, len(test)) - bad}/"
        f"{4 * min(200, len(test))} decisions"
    )

    out = ds.outcomes
    q_ref = (float(out[test, weak].mean()), float(out[test, strong].mean()))
    c_ref = (float(cost[test, weak].mean()), float(cost[test, strong].mean()))
    print("  baselines (held out):")
    params = np.array([m.params_b if not np.isnan(m.params_b) else -1 for m in ds.models])
    small, large = int(np.argmin(np.where(params < 0, np.inf, params))), int(np.argmax(params))
    for label, j in (
        ("always-smallest " + names[small], small),
        ("always-largest " + names[large], large),
        ("always-weak (cheapest) " + names[weak], weak),
        ("always-strong " + names[strong], strong),
    ):
        print(point(label, float(out[test, j].mean()), float(cost[test, j].mean()), q_ref, c_ref))
    rng = np.random.default_rng(args.seed)
    rnd = rng.integers(0, len(names), len(test))
    print(point("random over all models", float(out[test, rnd].mean()), float(cost[test, rnd].mean()), q_ref, c_ref))
    best = out[test].max(axis=1, keepdims=True)
    oracle = np.where(out[test] >= best - 1e-9, cost[test], np.inf).argmin(axis=1)
    print(
        point(
            "oracle (cheapest best model)",
            float(out[test, oracle].mean()),
            float(cost[test, oracle].mean()),
            q_ref,
            c_ref,
        )
    )
    ow = np.where(out[test, weak] >= out[test, strong], weak, strong)
    print(
        point("oracle weak/strong only", float(out[test, ow].mean()), float(cost[test, ow].mean()), q_ref, c_ref)
        + f"  strong share {float((ow == strong).mean()):.3f}"
    )

    curves = {
        "heuristics only": sweep("heuristics only", analyses, test, table, cfg, None, out, cost, weak, strong),
        "heuristics + learned (static emb.)": sweep(
            "heuristics + learned (static emb.)", analyses, test, table, cfg, est, out, cost, weak, strong
        ),
    }
    flat = replace(cfg, learned_k=1e-9)
    curves["learned only (static emb.)"] = sweep(
        "learned only (static emb.)", analyses, test, table, flat, est, out, cost, weak, strong
    )
    if args.minilm and args.minilm > 0:
        curves.update(minilm_ablation(ds, analyses, table, cfg, cost, weak, strong, args))
    report(curves, names)
    print(f"  ({time.perf_counter() - t0:.1f}s)")
    return curves


def tune_learned(
    emb: np.ndarray,
    ds: routing_data.OutcomeSet,
    analyses: list[PromptAnalysis],
    train: np.ndarray,
    names: list[str],
    table: ModelTable,
    cfg: ScoringConfig,
    cost: np.ndarray,
    weak: int,
    strong: int,
    seed: int,
) -> LearnedConfig:
    """Pick k and floor by APGR on an 80/20 split of the TRAIN prompts (held-out prompts unseen)."""
    rng = np.random.default_rng(seed + 7)
    perm = rng.permutation(train)
    cut = int(0.8 * len(perm))
    inner, val = np.sort(perm[:cut]), np.sort(perm[cut:])
    best: tuple[float, LearnedConfig] | None = None
    for k in (16, 48, 128):
        for floor in (0.3, 0.5, 0.7):
            lc = LearnedConfig(k=k, floor=floor)
            est = learned_estimates(emb, ds, inner, val, names, lc)
            a = sweep("val", analyses, val, table, cfg, est, ds.outcomes, cost, weak, strong).apgr
            if best is None or a > best[0] + 1e-9:
                best = (a, lc)
    assert best is not None
    return best[1]


def embed(embedder: object, texts: list[str], batch: int = 512) -> np.ndarray:
    enc = embedder.encode  # type: ignore[attr-defined]
    return np.vstack([enc(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def learned_estimates(
    emb: np.ndarray,
    ds: routing_data.OutcomeSet,
    train: np.ndarray,
    test: np.ndarray,
    names: list[str],
    lcfg: LearnedConfig,
) -> tuple[np.ndarray, np.ndarray]:
    index = LearnedIndex(emb.shape[1], replace(lcfg, capacity=max(len(train), 1)))
    index.add_batch(emb[train], names, ds.outcomes[train], source="profile")
    ps, ns = [], []
    for i in range(0, len(test), 1000):
        p, n = index.estimate_batch(emb[test[i : i + 1000]])
        ps.append(p)
        ns.append(n)
    order = [index.models.index(n) for n in names]
    return np.vstack(ps)[:, order], np.vstack(ns)[:, order]


def minilm_ablation(
    ds: routing_data.OutcomeSet,
    analyses: list[PromptAnalysis],
    table: ModelTable,
    cfg: ScoringConfig,
    cost: np.ndarray,
    weak: int,
    strong: int,
    args: argparse.Namespace,
) -> dict[str, Curve]:
    from turnout.embeddings.minilm import MiniLMEncoder

    n = min(args.minilm, len(ds.prompts))
    keep = np.sort(np.random.default_rng(args.seed + 1).choice(len(ds.prompts), n, replace=False))
    sub = ds.subset(keep)
    sub_an = [analyses[i] for i in keep]
    train, test = split(sub, args.train_frac, args.seed)
    names = [m.name for m in sub.models]
    out: dict[str, Curve] = {}
    t0 = time.perf_counter()
    e_static = embed(default_embedder(), sub.prompts)
    e_minilm = embed(MiniLMEncoder(max_tokens=256), sub.prompts, batch=32)
    print(f"  MiniLM subsample: {n} prompts, MiniLM {1e3 * (time.perf_counter() - t0) / n:.1f} ms/prompt")
    sub_cost = cost[keep]
    for label, e in (("static", e_static), ("MiniLM", e_minilm)):
        est = learned_estimates(e, sub, train, test, names, LearnedConfig())
        name = f"subsample {n}: heuristics + learned ({label})"
        out[name] = sweep(name, sub_an, test, table, cfg, est, sub.outcomes, sub_cost, weak, strong)
    name = f"subsample {n}: heuristics only"
    out[name] = sweep(name, sub_an, test, table, cfg, None, sub.outcomes, sub_cost, weak, strong)
    return out


def report(curves: dict[str, Curve], names: list[str]) -> None:
    print(f"  {'router':<52} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}   quality@q=0/0.5/1")
    print(f"  {'random weak/strong mix (diagonal)':<52} {0.5:6.3f} {0.5:9.3f} {0.8:9.3f}")
    for c in curves.values():
        qs = [c.points[int(np.argmin(np.abs(QS - v)))].quality for v in (0.0, 0.5, 1.0)]
        print(
            f"  {c.name:<52} {c.apgr:6.3f} {fmt(c.cpt(0.5)):>9} {fmt(c.cpt(0.8)):>9}   "
            + "/".join(f"{v:.4f}" for v in qs)
        )
    main = curves.get("heuristics + learned (static emb.)")
    if main is not None:
        print("  operating points of heuristics + learned (share of calls per model):")
        for q in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0):
            k = int(np.argmin(np.abs(QS - q)))
            p = main.points[k]
            share = main.shares[float(QS[k])]
            top = sorted(((s, names[j]) for j, s in enumerate(share) if s > 0), reverse=True)[:4]
            print(
                f"    q={q:.1f}: quality {p.quality:.4f}, cost/call {p.cost:.3e}, norm.cost {p.x:6.3f}, "
                f"PGR {p.pgr:6.3f}; " + ", ".join(f"{n} {s:.0%}" for s, n in top)
            )


def fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=list(routing_data.LOADERS), help="names from routing_data.LOADERS")
    ap.add_argument("--csv", type=Path, help="generic outcomes CSV: prompt,<model>,<model>,...")
    ap.add_argument("--models", type=Path, help="model table CSV for --csv: name,params_b,price_per_mtok")
    ap.add_argument("--train-frac", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="at most this many prompts per data set (0 = all)")
    ap.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="choose the learned index's k/floor on a validation split of the training prompts",
    )
    ap.add_argument("--minilm", type=int, default=0, help="also compare MiniLM vs static embeddings on N prompts")
    args = ap.parse_args(argv)
    sets: list[routing_data.OutcomeSet] = []
    if args.csv:
        if not args.models:
            ap.error("--csv needs --models")
        sets.append(routing_data.load_generic(args.csv, args.models))
    else:
        for name in args.datasets:
            if name not in routing_data.LOADERS:
                ap.error(f"unknown data set {name!r}; known: {', '.join(routing_data.LOADERS)}")
            sets.append(routing_data.LOADERS[name]())
    results = {ds.name: run_dataset(ds, args) for ds in sets}
    if "routellm-mmlu" in results:
        print("\n=== RouteLLM's published MMLU figures (QUOTED from the paper, not measured here)")
        print(f"  {'router':<58} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}")
        for label, a, c5, c8 in ROUTELLM_MMLU:
            print(f"  {label:<58} {a:6.3f} {c5:9.3f} {c8:9.3f}")
        print("  (RouteLLM trains on Chatbot Arena preferences, optionally + golden MMLU labels; we learn from a")
        print("   held-apart half of MMLU itself, which is closest to their golden-label-augmented setting.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["StaticEmbedder", "main"]
