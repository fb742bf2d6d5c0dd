"""The routing bench's empirical-Bayes shrinkage strengths (``bench/routing_quality.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from routing_quality import eb_category_strength, eb_strength


def draws(standing: np.ndarray, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, standing.size)) < standing[None, :]).astype(np.float64)


def test_eb_strength_recovers_the_between_model_spread() -> None:
    """Standings that scatter around the size line with sd 0.15 and 0/1 outcomes (variance ~0.24):
    the strength is about 0.24 / 0.15² ≈ 11 pseudo-prompts, averaged over calibration draws."""
    rng = np.random.default_rng(0)
    power = np.linspace(0.2, 0.9, 40)
    standing = np.clip(0.3 + 0.3 * power + rng.normal(0.0, 0.15, power.size), 0.05, 0.95)
    ks = [eb_strength(draws(standing, 200, s), power) for s in range(20)]
    assert 6.0 < float(np.median(ks)) < 20.0


def test_eb_strength_goes_to_the_line_when_models_differ_only_by_size() -> None:
    power = np.linspace(0.2, 0.9, 12)
    standing = 0.3 + 0.4 * power  # exactly on the line: all scatter is sampling noise
    ks = [eb_strength(draws(standing, 31, s), power) for s in range(20)]
    assert float(np.median(ks)) > 50.0


def test_category_strength_is_small_when_categories_really_differ() -> None:
    n = 400
    cats = np.array(["a", "b"] * (n // 2))
    p = np.where(cats[:, None] == "a", 0.9, 0.1) * np.ones((1, 3))
    out = (np.random.default_rng(1).random(p.shape) < p).astype(np.float64)
    same = (np.random.default_rng(2).random(p.shape) < 0.5).astype(np.float64)
    rows = np.arange(n)
    assert eb_category_strength(out, rows, cats) < 2.0
    assert eb_category_strength(same, rows, cats) > 100.0
