"""The static embedder (the routing path) and the numpy MiniLM (its teacher): shapes, unit norm,
determinism, and that a paraphrase lands closer than an unrelated text."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from turnout.embeddings.minilm import MiniLMEncoder
from turnout.embeddings.static import StaticEmbedder, default_embedder

TEXTS = [
    "How do I reverse a linked list in Python?",
    "Write a Python function that reverses a linked list.",
    "What is the capital of France?",
]


@lru_cache(maxsize=1)
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


@pytest.fixture(params=["static", "minilm"])
def embedder(request: pytest.FixtureRequest) -> StaticEmbedder | MiniLMEncoder:
    return default_embedder() if request.param == "static" else minilm()


def test_shapes_dtype_and_unit_norm(embedder: StaticEmbedder | MiniLMEncoder) -> None:
    v = embedder.encode(TEXTS)
    assert v.shape == (3, embedder.dims)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), [1.0, 1.0, 1.0], atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dims)


def test_dims_are_the_shipped_models() -> None:
    assert (default_embedder().dims, default_embedder().name) == (128, "static-minilm-l6-128")
    assert MiniLMEncoder.dims == 384


def test_deterministic_and_independent_of_the_batch(embedder: StaticEmbedder | MiniLMEncoder) -> None:
    a = embedder.encode(TEXTS)
    b = embedder.encode(TEXTS)
    assert np.array_equal(a, b)
    alone = np.stack([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, a, atol=1e-5)  # MiniLM pads a batch; the mask must hide it


def test_a_paraphrase_is_closer_than_an_unrelated_text(embedder: StaticEmbedder | MiniLMEncoder) -> None:
    q, para, other = embedder.encode(TEXTS)
    assert float(q @ para) > float(q @ other) + 0.2


def test_the_static_model_follows_its_teacher() -> None:
    """Cosine similarities between texts rank the same way under the static model and MiniLM."""
    s = default_embedder().encode(TEXTS)
    m = minilm().encode(TEXTS)
    s_sim, m_sim = s @ s.T, m @ m.T
    pairs = [(0, 1), (0, 2), (1, 2)]
    assert sorted(pairs, key=lambda p: s_sim[p]) == sorted(pairs, key=lambda p: m_sim[p])


def test_no_token_gives_the_zero_vector_not_nan() -> None:
    e = default_embedder()
    assert not e.encode(["", " \n"]).any()
    assert not e.encode_one("").any()


def test_encode_one_equals_encode_and_repeats_weigh_as_often_as_they_occur() -> None:
    e = default_embedder()
    text = "sort sort sort the list"
    np.testing.assert_allclose(e.encode_one(text), e.encode([text])[0], atol=1e-6)
    assert not np.allclose(e.encode_one(text), e.encode_one("sort the list"), atol=1e-3)


def test_the_word_cache_is_bounded() -> None:
    e = StaticEmbedder(default_embedder().matrix, default_embedder()._tok)
    e.word_cache_size = 3
    for w in ["alpha", "beta", "gamma", "delta"]:
        e.encode_one(w)
    assert list(e._word_ids) == ["delta"]
    np.testing.assert_allclose(e.encode_one("alpha beta"), e.encode(["alpha beta"])[0], atol=1e-6)
