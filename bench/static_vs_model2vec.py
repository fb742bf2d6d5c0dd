"""Our static embedder against the ``model2vec`` library serving the same matrix and tokenizer.

Issue 18 asks whether the static embeddings should be served by ``model2vec`` (PyPI) instead of
:class:`turnout.embeddings.static.StaticEmbedder`. model2vec is not a project dependency; this
is a dev-only measurement. Run it with a Python that has model2vec and sees our package::

    uv venv /tmp/m2v && VIRTUAL_ENV=/tmp/m2v uv pip install model2vec
    PYTHONPATH=libs/embeddings/src /tmp/m2v/bin/python bench/static_vs_model2vec.py

Both load the shipped ``static-minilm-l6-128`` matrix and its WordPiece tokenizer; model2vec's
``StaticModel(vectors, tokenizer, normalize=True)`` mean-pools and normalises as we do. Printed:
the largest difference between the two vectors of each text (they must agree), then the median
time per call over interleaved rounds for one text a call (the scorer's request path:
``encode_one``, which uses the word cache, and ``encode([text])``) and for a batch of 64 texts,
with each ratio against ``encode_one`` / our ``encode`` measured in the same rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from model2vec import StaticModel  # type: ignore[import-not-found]

from turnout.embeddings.static import default_embedder

TEXTS = [
    "How do I reverse a linked list in Python?",
    "Summarise this article about the economy of France in three bullet points.",
    "def f(x):\n    return x ** 2  # why does this overflow for large ints?",
    "Translate 'good morning, how are you' into German and Japanese.",
    "Prove that the square root of two is irrational.",
    "Write a haiku about autumn rain on a tin roof.",
    "What's the difference between TCP and UDP? Give an example of when to use each.",
    "Explain the borrow checker in Rust to a C++ programmer " * 4,
]


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ours = default_embedder()
    m2v = StaticModel(ours.matrix, ours._tok, normalize=True, max_length=ours.max_tokens)
    diff = max(float(np.abs(ours.encode([t])[0] - m2v.encode([t])[0]).max()) for t in TEXTS)
    print(f"max |ours - model2vec| over {len(TEXTS)} texts: {diff:.2e}")
    batch = TEXTS * 8
    cases: dict[str, Callable[[], object]] = {
        "ours encode_one (1 text)": lambda: [ours.encode_one(t) for t in TEXTS],
        "ours encode([t]) (1 text)": lambda: [ours.encode([t]) for t in TEXTS],
        "model2vec encode([t]) (1 text)": lambda: [m2v.encode([t], use_multiprocessing=False) for t in TEXTS],
        "ours encode (64 texts)": lambda: ours.encode(batch),
        "model2vec encode (64 texts)": lambda: m2v.encode(batch, use_multiprocessing=False),
    }
    for fn in cases.values():
        fn()  # warm the word cache and the tokenizer
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(7):
        for name, fn in cases.items():
            us = per_call_us(fn, 200)
            times[name].append(us / (len(TEXTS) if "1 text" in name else 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    one, batch64 = med["ours encode_one (1 text)"], med["ours encode (64 texts)"]
    print(f"{'':34} {'µs/call':>9} {'ratio':>7}")
    for name, us in med.items():
        base = one if "1 text" in name else batch64
        print(f"{name:34} {us:9.1f} {us / base:7.2f}")


if __name__ == "__main__":
    main()
