"""Micro-benchmark of response shaping on the stream path: the per-chunk cost of the gateway's
``Shaper`` (reasoning split + JSON fence scrub) against passing chunks through untouched, on a
reply of ``--tokens`` one-token chunks that opens with a ``<think>`` block. Rounds interleave the
modes; prints µs per chunk (median and best of rounds: on a loaded machine the best is the
steadier estimate) and the ratios. No assertions.

    .venv/bin/python bench/shaping.py [--tokens 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from typing import Any

import orjson

from turnout.gateway.shaping import ReasoningMode, RequestShaping, ShapingOptions


def stream(tokens: int) -> list[dict[str, Any]]:
    words = ["<think>", "\n", *(["hmm", " ok"] * 20), "\n", "</think>", "\n\n"]
    words += [" word"] * max(0, tokens - len(words))
    return [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
        }
        for w in words
    ] + [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    ]


def run(chunks: list[dict[str, Any]], mode: str) -> float:
    work = copy.deepcopy(chunks)
    shaper = None
    if mode != "pass-through":
        reasoning = ReasoningMode.SEPARATE if mode == "separate" else ReasoningMode.STRIP
        shaper = ShapingOptions(reasoning=reasoning).resolve(RequestShaping(json=True), model="m", backend="b")
    gc.collect()  # the deep copy's garbage is not the mode's cost
    gc.disable()
    try:
        t0 = time.perf_counter()
        for c in work:
            out = shaper.chunk(c) if shaper is not None else c
            if out is not None:
                orjson.dumps(out)  # the SSE encoding every chunk gets anyway
        return (time.perf_counter() - t0) / len(work) * 1e6
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    chunks = stream(args.tokens)
    modes = ("pass-through", "separate", "strip")
    results: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for m in modes:
            results[m].append(run(chunks, m))
    base, base_min = statistics.median(results["pass-through"]), min(results["pass-through"])
    for m in modes:
        med, low = statistics.median(results[m]), min(results[m])
        print(
            f"{m:13s} median {med:6.2f} µs/chunk (x{med / base:.1f}), best {low:6.2f} µs/chunk (x{low / base_min:.1f})"
            " of pass-through, orjson encode included"
        )


if __name__ == "__main__":
    main()
