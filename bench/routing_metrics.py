"""RouteLLM's routing metrics, generalised from two models to many.

PGR (performance gap recovered) of a router = (q - q_weak) / (q_strong - q_weak), where weak
and strong are the cheapest and the most expensive model. With two models the x axis is the
share of calls to the strong model; with more, it is the normalised cost
(c - c_weak) / (c_strong - c_weak), which reduces to the same thing for two models when the
weak model's cost is negligible. CPT(x) is the least x-axis value at which the router's curve
reaches PGR >= x; APGR is the area under PGR over the x axis in [0, 1] (PGR clipped to [0, 1]
and the curve made monotone by its upper envelope; between operating points the curve is
linear, since a router can mix two operating points at random). Random routing between weak and strong lies
on the diagonal: APGR 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    x: float  # normalised cost (or share of strong calls)
    pgr: float
    quality: float
    cost: float


def pgr(q: float, q_weak: float, q_strong: float) -> float:
    gap = q_strong - q_weak
    return (q - q_weak) / gap if gap > 0 else float("nan")


def envelope(points: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    """Upper monotone envelope of (x, pgr), anchored at (0, 0) and (1, 1) (weak-only and strong-only)."""
    pts = sorted([(0.0, 0.0), (1.0, 1.0), *((p.x, p.pgr) for p in points)])
    xs, ys = [], []
    best = -np.inf
    for x, y in pts:
        x = float(np.clip(x, 0.0, 1.0))
        best = max(best, float(np.clip(y, 0.0, 1.0)))
        xs.append(x)
        ys.append(best)
    return np.array(xs), np.array(ys)


def apgr(points: list[Point]) -> float:
    """Area under the PGR curve (trapezoid; linear between operating points, which randomised mixing
    of two operating points achieves)."""
    xs, ys = envelope(points)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def cpt(points: list[Point], target: float) -> float:
    """Least x at which the (linearly interpolated) envelope reaches PGR >= target."""
    xs, ys = envelope(points)
    for i in range(len(xs)):
        if ys[i] >= target - 1e-12:
            if i == 0:
                return float(xs[0])
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return float(x1 if y1 == y0 else x0 + (target - y0) * (x1 - x0) / (y1 - y0))
    return float("nan")
