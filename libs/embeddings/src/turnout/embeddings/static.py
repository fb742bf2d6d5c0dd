"""Static (per-token) embeddings distilled from MiniLM: tokenise, look up rows, mean, normalise."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

DATA = Path(__file__).with_name("data")
DEFAULT_MATRIX = DATA / "static-minilm-l6-128.npy"
DEFAULT_TOKENIZER = DATA / "minilm-tokenizer.json"


class StaticEmbedder:
    def __init__(
        self, matrix: np.ndarray, tokenizer: Tokenizer, *, name: str = "static-minilm-l6-128", max_tokens: int = 512
    ) -> None:
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.dims = int(self.matrix.shape[1])
        self.name = name
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.enable_truncation(max_tokens)

    @classmethod
    def load(cls, matrix_path: Path = DEFAULT_MATRIX, tokenizer_path: Path = DEFAULT_TOKENIZER) -> StaticEmbedder:
        """The static model from its matrix (``.npy``) and tokenizer files."""
        return cls(np.load(matrix_path), Tokenizer.from_file(str(tokenizer_path)), name=matrix_path.stem)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 vectors: the mean of each text's token rows (zeros for no token)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            if enc.ids:
                out[i] = self.matrix[enc.ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """The vector of one text."""
        row: np.ndarray = self.encode([text])[0]
        return row


@lru_cache(maxsize=1)
def default_embedder() -> StaticEmbedder:
    """The shipped static model, loaded once per process (~10 ms)."""
    return StaticEmbedder.load()
