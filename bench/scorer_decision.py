"""Micro-benchmark of one routing decision as the scorer's ``scorer.route`` handler makes it:
prompt analysis + static embedding + learned-term lookup + filters/scoring over a catalog of
``--models`` models (two replicas each on ``--hosts`` hosts, some resident) + the reply's JSON
encoding, as ``scorer.route`` sends it (``Answer.wire``: orjson from the plain values, no model
built; a routing cache hit's reply by ``model_dump_json``). The learned index holds
``--learned`` embedded prompts written from the same vocabulary as the requests (so the k-NN
search finds neighbours above its floor, as real graded prompts do).

Two passes per prompt kind, as ``RoutingEngine.route`` runs them:

* **miss** — every request text is unique, so neither the analysis cache nor the decision memo
  hits: the full decision;
* **repeat** — the texts cycle through ``--distinct`` prompts, as a client resending the same
  prompts does: the decision memo serves analysis, embedding and k-NN, the ranking runs anew.
  The memo's hit rate is printed.

Each decision is timed by the wall clock and by the thread's CPU clock: on a loaded machine the
wall clock adds the run queue's waits (p99 most of all), the CPU clock does not. Prints µs per
decision (p50 / p99 of both) and p99/p50. No assertions. Single-threaded BLAS, as the scorer runs.

    .venv/bin/python bench/scorer_decision.py [--models 100] [--hosts 4] [--learned 5000] [--n 3000]
    .venv/bin/python bench/scorer_decision.py --models 1000 --hosts 100
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import statistics
import time

import numpy as np

from turnout.common.backends.names import parse_model_name
from turnout.common.catalog import derive_capabilities
from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.engine import Answer, RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex

FAMILIES = ["llama3.1", "qwen2.5", "mistral", "gemma2", "phi3", "qwen2.5-coder", "llava", "deepseek-r1", "nomic-embed"]
SIZES = ["0.5b", "1b", "3b", "7b", "8b", "14b", "32b", "70b"]
PROMPTS = {
    "greeting": RouteRequestV1(text="Hi there!"),
    "medium": RouteRequestV1(text="Analyze this quarterly report and list the key risks. " * 20, quality=0.7),
    "hard-code+tools": RouteRequestV1(
        text="Implement a lock-free queue in Rust and optimize it.\n```rust\n"
        + "fn f() { let x = 1; }\n" * 100
        + "```",
        has_tools=True,
    ),
    "vision": RouteRequestV1(text="What is in this picture?", has_images=True),
    "embedding": RouteRequestV1(kind=RequestKind.EMBEDDING, text="embed me"),
    "named model": RouteRequestV1(text="Hi there!", requested_model="phi3:8b-v40"),
}
WARMUP = 200
VOCAB = (
    "write a story poem about the sea explain why the sky is blue implement function in python rust "
    "fix this bug optimize the query prove that lemma translate into french summarise report list risks "
    "quarterly revenue analyze compare sort array lock free queue thread safe cache hello thanks please"
).split()


def snapshot(n: int, hosts: int = 4) -> CatalogSnapshotV1:
    models = []
    for i in range(n):
        fam, size = FAMILIES[i % len(FAMILIES)], SIZES[(i // len(FAMILIES)) % len(SIZES)]
        name = f"{fam}:{size}-v{i}"
        info = parse_model_name(name)
        models.append(
            CatalogModelV1(
                name=name,
                family=info.family,
                params_b=info.params_b,
                active_params_b=info.active_params_b,
                context_length=32768,
                capabilities=derive_capabilities(name),
                coder=info.coder,
                replicas=[
                    ReplicaV1(backend=f"gpu{j}", upstream_model=name, host=f"host{j}")
                    for j in (i % hosts, (i + 1) % hosts)
                ],
                benchmark=0.5 if i % 3 == 0 else None,
                tokens_per_s=200.0 / (1 + i % 8),
            )
        )
    return CatalogSnapshotV1(version="bench", models=models)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--learned", type=int, default=5000, help="graded prompts in the learned index")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--distinct", type=int, default=50, help="distinct prompts per kind in the repeat pass")
    args = ap.parse_args()
    snap = snapshot(args.models, args.hosts)
    embedder = default_embedder()
    learned = LearnedIndex(embedder.dims)
    rng = np.random.default_rng(0)
    if args.learned:
        texts = [" ".join(rng.choice(VOCAB, int(rng.integers(3, 30)))) for _ in range(args.learned)]
        emb = embedder.encode(texts)
        names = [m.name for m in snap.models[:10]]
        learned.add_batch(emb, names, rng.integers(0, 2, size=(args.learned, len(names))).astype(float))
    engine = RoutingEngine(embedder=embedder, learned=learned)
    engine.set_catalog(snap)
    resident = frozenset((r.backend, r.upstream_model) for m in snap.models[::10] for r in m.replicas)
    engine.set_fleet(FleetState(resident=resident))
    print(
        f"{args.models} models, {2 * args.models} replicas on {args.hosts} hosts, learned index {args.learned} prompts"
    )
    print(f"{'prompt':<18}{'pass':<8}{'wall p50':>9}{'p99':>7}{'p99/p50':>8}{'cpu p50':>9}{'p99':>7}{'p99/p50':>8}  µs")
    hits = misses = 0
    for label, base in PROMPTS.items():
        for mode in ("miss", "repeat"):
            before = (engine.memo.hits, engine.memo.misses)
            wall, cpu = await run(engine, base, args.n, args.distinct if mode == "repeat" else None)
            if mode == "repeat":
                hits += engine.memo.hits - before[0]
                misses += engine.memo.misses - before[1]
            print(f"{label:<18}{mode:<8}{fmt(wall)}{fmt(cpu)}")
    print(f"decision memo, repeat passes: hit rate {hits / max(hits + misses, 1):.1%} ({hits} hits, {misses} misses)")


async def run(engine: RoutingEngine, base: RouteRequestV1, n: int, distinct: int | None) -> tuple[list[int], list[int]]:
    wall: list[int] = []
    cpu: list[int] = []
    mark = "@" if distinct else "#"  # the repeat pass does not reuse the miss pass's texts
    reqs = [base.model_copy(update={"text": f"{base.text} {mark}{i}"}) for i in range(distinct or n + WARMUP)]
    for i in range(n + WARMUP):
        req = reqs[i % len(reqs)]
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        out = await engine.route_answer(req)
        out.wire() if isinstance(out, Answer) else out.model_dump_json()
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        if i >= WARMUP:
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
    return wall, cpu


def fmt(ns: list[int]) -> str:
    ns = sorted(ns)
    p50, p99 = statistics.median(ns) / 1000, ns[int(len(ns) * 0.99)] / 1000
    return f"{p50:>9.0f}{p99:>7.0f}{p99 / p50:>8.1f}"


if __name__ == "__main__":
    asyncio.run(main())
