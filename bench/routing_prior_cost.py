"""What the router prior adds to one decision: ``RoutingEngine.route`` with and without it,
interleaved in the same run (same catalog, fleet and learned index as ``scorer_decision.py``).
Prints p50 / p99 µs per decision for both and the ratio; single-threaded BLAS as in the scorer.

    .venv/bin/python bench/routing_prior_cost.py [--models 100] [--learned 5000] [--n 2000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import statistics
import time

import numpy as np
from scorer_decision import PROMPTS, snapshot

from turnout.embeddings.static import default_embedder
from turnout.scorer.engine import RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex
from turnout.scorer.learned_prior import load_prior


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--learned", type=int, default=5000)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    snap = snapshot(args.models)
    embedder = default_embedder()
    learned = LearnedIndex(embedder.dims)
    rng = np.random.default_rng(0)
    if args.learned:
        emb = rng.normal(size=(args.learned, embedder.dims)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        names = [m.name for m in snap.models[:10]]
        learned.add_batch(emb, names, rng.integers(0, 2, size=(args.learned, len(names))).astype(float))
    resident = frozenset((r.backend, r.upstream_model) for m in snap.models[::10] for r in m.replicas)
    engines = {
        "without prior": RoutingEngine(embedder=embedder, learned=learned),
        "with prior": RoutingEngine(embedder=embedder, learned=learned, prior=load_prior()),
    }
    for e in engines.values():
        e.set_catalog(snap)
        e.set_fleet(FleetState(resident=resident))
    print(f"{args.models} models, learned index {args.learned} prompts; interleaved, same requests")
    print(f"{'prompt':<18}{'engine':<15}{'p50 µs':>10}{'p99 µs':>10}")
    for label, base in PROMPTS.items():
        times: dict[str, list[float]] = {k: [] for k in engines}
        for i in range(args.n + 200):
            req = base.model_copy(update={"text": f"{base.text} #{i}"})
            for name, e in engines.items():
                t0 = time.perf_counter()
                await e.route(req)
                if i >= 200:
                    times[name].append(time.perf_counter() - t0)
        p50 = {k: statistics.median(v) for k, v in times.items()}
        for name, v in times.items():
            v.sort()
            print(f"{label:<18}{name:<15}{p50[name] * 1e6:>10.0f}{v[int(len(v) * 0.99)] * 1e6:>10.0f}")
        print(f"{label:<18}{'ratio':<15}{p50['with prior'] / p50['without prior']:>10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
