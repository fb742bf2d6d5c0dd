"""RouteLLM's routing metrics, by call share (two models, RouteLLM's own definition) and by cost
(any number of models), with bootstrap bands.

PGR (performance gap recovered) = (q − q_weak) / (q_strong − q_weak).

* **By call share** (Ong et al. 2024, arXiv 2406.18665, §5): a router scores every prompt; a
  threshold sends the prompts above it to the strong model. The x axis is the share of calls
  to the strong model, swept over *every* threshold; APGR is the area under PGR(x) on [0, 1]
  (trapezoid, no clipping, no running maximum); CPT(t) is the least share at which PGR ≥ t.
  Tied scores form one segment (linear: ties broken at random). Random routing lies on the
  diagonal (APGR 0.5).
* **By cost**: operating points (normalised cost ``(c − c_weak) / (c_strong − c_weak)``, PGR)
  of a router at its settings, sorted by cost and joined linearly (no hull, no running
  maximum: both would select on the test set's noise — a random router would score above 0.5),
  extended to weak-only (0, 0) and strong-only (1, 1) by mixing with them. APGR is the area
  over [0, 1], CPT(t) the least x with PGR ≥ t. Only the *prompt-blind mix* reference takes
  the upper concave hull of the single models, which is its definition (the best mix).

Bands: :func:`bootstrap_weights` draws multinomial resamples of the test prompts; every metric
is computed per resample with the router's decisions fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from turnout.scorer.router_metrics import area, bootstrap_weights, crossing, share_curves

F = npt.NDArray[np.float64]
__all__ = ["area", "bootstrap_weights", "cost_metrics", "crossing", "points_metrics", "share_curves"]


@dataclass(frozen=True)
class Point:
    x: float  # normalised cost
    pgr: float
    quality: float
    cost: float


def pgr(q: float, q_weak: float, q_strong: float) -> float:
    gap = q_strong - q_weak
    return (q - q_weak) / gap if gap > 0 else float("nan")


# --------------------------------------------------------------------------- by cost


def joined(x: F, y: F) -> tuple[F, F]:
    """Operating points sorted by x (clipped to [0, 1]), extended to (0, 0) and (1, 1)."""
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = np.clip(x[ok], 0.0, 1.0), y[ok]
    order = np.lexsort((ys, xs))
    xs, ys = xs[order], ys[order]
    if xs.size == 0 or xs[0] > 0:
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])
    if xs[-1] < 1:
        xs, ys = np.concatenate([xs, [1.0]]), np.concatenate([ys, [1.0]])
    return xs, ys


def hull(x: F, y: F) -> tuple[F, F]:
    """Upper concave hull of points (x, y) within x ∈ [0, 1], anchored at (0, 0) and (1, 1),
    made monotone (a cheaper point that is as good dominates)."""
    pts = sorted({(0.0, 0.0), (1.0, 1.0), *((float(a), float(b)) for a, b in zip(x, y, strict=True))})
    pts = [(a, b) for a, b in pts if 0.0 <= a <= 1.0 and np.isfinite(b)]
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(upper) >= 2:
            (x1, y1), (x2, y2) = upper[-2], upper[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                upper.pop()
            else:
                break
        upper.append(p)
    hx = np.array([a for a, _ in upper])
    hy = np.maximum.accumulate(np.array([b for _, b in upper]))
    return hx, hy


def cost_metrics(
    choice: npt.NDArray[np.intp], outcomes: F, cost: F, weak: int, strong: int, weights: F
) -> dict[str, F]:
    """APGR / CPT(50 %) / CPT(80 %) by cost, per resample, for decisions ``choice`` (settings ×
    prompts, a model index each); plus the normalised cost at which quality reaches 95 % of the
    strong model's, as a share of the strong model's cost (``cost95``)."""
    rows = np.arange(choice.shape[1])
    qual = outcomes[rows[None, :], choice]  # (settings, prompts)
    cst = cost[rows[None, :], choice]
    total = weights.sum(axis=1)
    q = (qual @ weights.T) / total  # (settings, resamples)
    c = (cst @ weights.T) / total
    qw, qs = (outcomes[:, weak] @ weights.T) / total, (outcomes[:, strong] @ weights.T) / total
    cw, cs = (cost[:, weak] @ weights.T) / total, (cost[:, strong] @ weights.T) / total
    out: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": [], "cost95": []}
    for r in range(weights.shape[0]):
        x = (c[:, r] - cw[r]) / (cs[r] - cw[r])
        y = (q[:, r] - qw[r]) / (qs[r] - qw[r])
        hx, hy = joined(x, y)
        out["apgr"].append(float(area(hx[None, :], hy[None, :])[0]))
        out["cpt50"].append(float(crossing(hx[None, :], hy[None, :], 0.5)[0]))
        out["cpt80"].append(float(crossing(hx[None, :], hy[None, :], 0.8)[0]))
        # 95 % of the strong model's quality, in PGR units on this resample's scale
        target = (0.95 * qs[r] - qw[r]) / (qs[r] - qw[r])
        x95 = float(crossing(hx[None, :], hy[None, :], target)[0]) if target > 0 else 0.0
        out["cost95"].append((cw[r] + x95 * (cs[r] - cw[r])) / cs[r])
    return {k: np.array(v) for k, v in out.items()}


def points_metrics(quality: F, costs: F, outcomes: F, cost: F, weak: int, strong: int) -> dict[str, float]:
    """The same metrics for fixed operating points (e.g. single models mixed prompt-blind)."""
    qw, qs = float(outcomes[:, weak].mean()), float(outcomes[:, strong].mean())
    cw, cs = float(cost[:, weak].mean()), float(cost[:, strong].mean())
    hx, hy = hull((costs - cw) / (cs - cw), (quality - qw) / (qs - qw))
    target = (0.95 * qs - qw) / (qs - qw)
    return {
        "apgr": float(area(hx[None, :], hy[None, :])[0]),
        "cpt50": float(crossing(hx[None, :], hy[None, :], 0.5)[0]),
        "cpt80": float(crossing(hx[None, :], hy[None, :], 0.8)[0]),
        "cost95": (cw + float(crossing(hx[None, :], hy[None, :], target)[0]) * (cs - cw)) / cs,
    }
