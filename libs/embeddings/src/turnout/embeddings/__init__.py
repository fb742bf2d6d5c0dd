"""Sentence embeddings for routing: cheap enough for the request path.

Two embedders behind one :class:`Embedder` protocol:

* :class:`StaticEmbedder` (default): a model2vec-style static model distilled from
  all-MiniLM-L6-v2 — each WordPiece token's contextual output vector, PCA-reduced to 128 dims,
  a sentence is the mean of its tokens' rows. ~25 µs a sentence, 7.8 MB, numpy + tokenizers
  only. The artifact ships in ``data/`` (made by ``scripts/distill_static_embeddings.py``).
* :class:`MiniLMEncoder`: the full 6-layer MiniLM transformer in numpy (~15 ms a sentence),
  the teacher of the static model; used offline and in the benchmark, never on the hot path.

Why not the ``model2vec`` library for the static model: serving the same matrix and tokenizer it
gives the same vectors, but costs ~8x our word-cached ``encode_one`` per single text (the
scorer's request path; 121 vs 15 µs), though ~1.5x faster on a batch of 64
(``bench/static_vs_model2vec.py``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from turnout.embeddings.static import StaticEmbedder


class Embedder(Protocol):
    name: str
    dims: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 vectors, one row per text."""
        ...


__all__ = ["Embedder", "StaticEmbedder"]
