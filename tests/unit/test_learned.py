import sys
from dataclasses import replace

import numpy as np
import pytest

from turnout.scorer.learned import LearnedConfig, LearnedIndex, prompt_key


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_empty_index_estimates_nothing():
    idx = LearnedIndex(3)
    assert idx.estimate(unit(1, 0, 0)) == {}
    p, n = idx.estimate_batch(unit(1, 0, 0))
    assert p.shape == (1, 0) and n.shape == (1, 0)


def test_close_neighbours_predict_each_model():
    idx = LearnedIndex(3, LearnedConfig(k=8, floor=0.5, prior_mass=0.0, full_at=1.0))
    for i in range(5):  # maths-like prompts: the big model wins
        e = unit(1, 0.01 * i, 0)
        idx.add(e, "big", 1.0, key=f"m{i}")
        idx.add(e, "small", 0.0, key=f"m{i}")
    for i in range(5):  # chit-chat-like prompts: both fine
        e = unit(0, 1, 0.01 * i)
        idx.add(e, "big", 1.0, key=f"c{i}")
        idx.add(e, "small", 1.0, key=f"c{i}")
    maths = idx.estimate(unit(1, 0.02, 0))
    chat = idx.estimate(unit(0, 1, 0.02))
    assert maths["big"][0] == pytest.approx(1.0) and maths["small"][0] == pytest.approx(0.0)
    assert chat["small"][0] == pytest.approx(1.0)
    assert maths["big"][1] == pytest.approx(5.0, rel=0.01)  # five near-identical neighbours


def test_far_neighbours_count_nothing_and_fall_back_to_the_model_mean():
    idx = LearnedIndex(3, LearnedConfig(floor=0.5, prior_mass=1.0))
    idx.add(unit(1, 0, 0), "m", 1.0)
    idx.add(unit(0.9, 0.1, 0), "m", 0.0)
    p, n_eff = idx.estimate(unit(0, 0, 1))["m"]
    assert n_eff == 0.0
    assert p == pytest.approx(0.5)  # the model's overall mean


def test_neighbour_mass_grows_with_closeness():
    idx = LearnedIndex(2, LearnedConfig(floor=0.0))
    idx.add(unit(1, 0), "m", 1.0)
    near = idx.estimate(unit(1, 0.1))["m"][1]
    far = idx.estimate(unit(1, 1))["m"][1]
    assert near > far > 0


def test_same_key_shares_a_row_and_sources_are_weighted():
    idx = LearnedIndex(2, LearnedConfig(prior_mass=0.0))
    idx.add(unit(1, 0), "m", 1.0, key=prompt_key("q"), source="profile")
    idx.add(unit(1, 0), "m", 0.0, key=prompt_key("q"), source="feedback")
    assert len(idx) == 1
    p, _ = idx.estimate(unit(1, 0))["m"]
    assert p == pytest.approx(1.0 / 1.6)  # profile weight 1.0, feedback 0.6


def test_capacity_is_a_ring_buffer():
    idx = LearnedIndex(2, LearnedConfig(capacity=3))
    for i in range(5):
        idx.add(unit(1, i), "m", 1.0, key=str(i))
    assert len(idx) == 3


def test_batch_add_skips_ungraded_cells_and_aligns_to_a_table():
    idx = LearnedIndex(2, LearnedConfig(prior_mass=0.0))
    idx.add_batch(np.stack([unit(1, 0), unit(0, 1)]), ["a", "b"], np.array([[1.0, np.nan], [0.0, 1.0]]))
    p, n = idx.aligned(unit(0, 1), ["b", "zzz", "a"])
    assert p[0] == pytest.approx(1.0)
    assert np.isnan(p[1]) and n[1] == 0.0
    assert p[2] == pytest.approx(0.0)


def test_version_bumps_on_change_and_bad_input_is_rejected():
    idx = LearnedIndex(2)
    v = idx.version
    idx.add(unit(1, 0), "m", 0.5)
    assert idx.version > v
    with pytest.raises(ValueError):
        idx.add(unit(1, 0), "m", 1.5)
    with pytest.raises(ValueError):
        idx.add(unit(1, 0, 0), "m", 0.5)


def test_a_small_index_counts_its_neighbours_in_proportion():
    """Fewer stored prompts than ``full_at · k``: the neighbour mass is scaled by rows / (full_at · k)."""
    cfg = LearnedConfig(k=8, floor=0.5, prior_mass=0.0, full_at=4.0)
    idx = LearnedIndex(3, cfg)
    for i in range(10):
        idx.add(unit(1, 0.01 * i, 0), "big", 1.0, key=f"m{i}")
    p, n = idx.estimate(unit(1, 0.02, 0))["big"]
    full = LearnedIndex(3, LearnedConfig(k=8, floor=0.5, prior_mass=0.0, full_at=1.0))
    for i in range(10):
        full.add(unit(1, 0.01 * i, 0), "big", 1.0, key=f"m{i}")
    p_full, n_full = full.estimate(unit(1, 0.02, 0))["big"]
    assert p == pytest.approx(p_full) == pytest.approx(1.0)
    assert n == pytest.approx(n_full * 10 / 32)


def test_a_screened_lookup_leaves_the_reference_count_of_none_as_it_was():
    """simsimd 6.5's ``cdist(..., out=...)`` returned ``None`` without a reference: each screened
    lookup took one from ``None``, and a Python 3.11 scorer aborted after some thousands of them.
    The screen's kernel is NumKong's now; the regression check stays."""
    rng = np.random.default_rng(5)
    index = LearnedIndex(16, LearnedConfig(capacity=256, screen_from=64))
    index.add_batch(rng.standard_normal((200, 16)), ["a", "b"], rng.random((200, 2)))
    q = rng.standard_normal(16).astype(np.float32)
    index.estimate_one(q)
    before = sys.getrefcount(None)
    for _ in range(500):
        index.estimate_one(q)
    assert sys.getrefcount(None) - before > -50  # a leak of one per lookup would be −500


def test_a_screened_lookup_sees_the_rows_written_since_the_last_one():
    """The screen's packed int8 rows are built once per write: a row written after a lookup (a
    new prompt, and one overwritten in the ring) is found by the next lookup, as the unscreened
    product finds it."""
    rng = np.random.default_rng(11)
    far = -np.abs(rng.standard_normal((299, 16)))
    q = np.abs(rng.standard_normal(16)).astype(np.float32)
    q /= np.linalg.norm(q)
    cfg = LearnedConfig(capacity=300, screen_from=64, k=4, floor=0.5, prior_mass=0.0, full_at=0.0)
    screened, unscreened = LearnedIndex(16, cfg), LearnedIndex(16, replace(cfg, screen_from=0))
    for index in (screened, unscreened):
        index.add_batch(far, ["a"], np.zeros((299, 1)))
    screened.prepare()
    assert screened.estimate_one(q)[1][0] == 0.0  # every stored prompt points away from q
    steps = [(q, 1.0, "new"), (-q, 0.0, "far"), (q, 0.5, "new2")]  # the 300th row, then rows 0 and 1 overwritten
    for i, (e, score, key) in enumerate(steps):
        for index in (screened, unscreened):
            index.add(e, "a", score, key=key)
        p, n = screened.estimate_one(q)
        assert (p[0], n[0]) == tuple(v[0] for v in unscreened.estimate_one(q))
        assert n[0] > 0 and p[0] == pytest.approx(1.0 if i < 2 else 0.75)
