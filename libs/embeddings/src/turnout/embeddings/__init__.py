"""Sentence embeddings for routing: cheap enough for the request path.

Two embedders behind one :class:`Embedder` protocol:

* :class:`StaticEmbedder` (default): a model2vec-style static model distilled from
  all-MiniLM-L6-v2 — each WordPiece token's contextual output vector, PCA-reduced to 128 dims,
  a sentence is the mean of its tokens' rows. ~25 µs a sentence, 7.8 MB, numpy + tokenizers
  only. The artifact ships in ``data/`` (made by ``scripts/distill_static_embeddings.py``).
* :class:`MiniLMEncoder`: the full 6-layer MiniLM transformer in numpy (~15 ms a sentence),
  the teacher of the static model; used offline and in the benchmark, never on the hot path.
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
