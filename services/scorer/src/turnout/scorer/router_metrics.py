"""RouteLLM's routing metrics by share of strong-model calls, with bootstrap bands; shared by
``bench/routing_quality.py`` and ``python -m turnout.scorer.router_train evaluate``.

PGR (performance gap recovered) = (q − q_weak) / (q_strong − q_weak). A router scores every
prompt; a threshold sends the prompts above it to the strong model. The x axis is the share of
calls to the strong model, swept over *every* threshold (Ong et al. 2024, RouteLLM, arXiv
2406.18665, §5); APGR is the area under PGR(x) on [0, 1] (trapezoid, no clipping, no running
maximum); CPT(t) is the least share at which PGR ≥ t. Tied scores form one segment (ties broken
at random). Random routing lies on the diagonal (APGR 0.5). Bands: :func:`bootstrap_weights`
draws multinomial resamples of the test prompts, and every metric is computed per resample.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]


def bootstrap_weights(n: int, b: int, rng: np.random.Generator) -> F:
    """(b + 1, n) resample counts; row 0 is the test set itself (all ones)."""
    rows = [np.ones(n)]
    if b > 0:
        rows.extend(rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64))
    return np.vstack(rows)


def share_curves(score: F, weak: F, strong: F, weights: F) -> tuple[F, F]:
    """(x, PGR) per resample for a router that sends the highest ``score`` first to the strong
    model; arrays (resamples, tie groups + 1)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    gain = (strong - weak)[order]
    w = weights[:, order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1, [len(s)]])
    cw = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)[:, bounds]
    cg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w * gain, axis=1)], axis=1)[:, bounds]
    total = w.sum(axis=1, keepdims=True)
    qw = (w * weak[order]).sum(axis=1, keepdims=True) / total
    qs = (w * strong[order]).sum(axis=1, keepdims=True) / total
    q = qw + cg / total
    gap = np.where(qs - qw > 0, qs - qw, np.nan)
    return cw / total, (q - qw) / gap


def area(x: F, y: F) -> F:
    """Trapezoid area per row."""
    return np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2.0, axis=1)  # type: ignore[no-any-return]


def crossing(x: F, y: F, target: float) -> F:
    """Least x per row at which the piecewise-linear y reaches ``target`` (NaN: never)."""
    out = np.full(x.shape[0], np.nan)
    for r in range(x.shape[0]):
        hit = np.flatnonzero(y[r] >= target - 1e-12)
        if hit.size == 0:
            continue
        i = int(hit[0])
        if i == 0:
            out[r] = x[r, 0]
            continue
        x0, x1, y0, y1 = x[r, i - 1], x[r, i], y[r, i - 1], y[r, i]
        out[r] = x1 if y1 == y0 else x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return out


def apgr_by_share(score: F, weak: F, strong: F, weights: F) -> F:
    """APGR by call share per resample."""
    x, y = share_curves(score, weak, strong, weights)
    return area(x, y)
