"""Micro-benchmark of one routing decision as the scorer's ``scorer.route`` handler makes it
(``Scorer.route`` itself, called in-process): prompt analysis + static embedding + learned-term
lookup + filters/scoring over a catalog of ``--models`` models (two replicas each on ``--hosts``
hosts, every tenth model loaded) + the handler's bookkeeping (in-flight note, counters) + the VRAM
planner's step, and the reply's JSON bytes as the RPC server sends them (a bytes reply as it is,
a model by ``model_dump_json``). The learned index holds ``--learned`` embedded prompts written
from the same vocabulary as the requests (so the k-NN search finds neighbours above its floor,
as real graded prompts do).

Each prompt kind runs with the **VRAM planner off** (no planner: the reply as ranked) and **on**
(as in the real stack: a planner that knows every host, its GPUs, budget and loaded models, as
its refresh reads them from the gpu-agents; it re-orders the candidates and sets their load and
wait estimates; no orders are carried out, there is no Redis), in alternating blocks of
``BLOCK`` decisions, so that the two rows are paired. Before each block the state is as last
read: the gateways' in-flight counts (none) replace the decisions noted since, and the planner
starts from the agents' view without the loads it reserved. The planner's decisions are counted
by kind and printed.

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
from collections import Counter
from types import MappingProxyType

import numpy as np
from hostinfo import host_line
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from turnout.common.backends.names import parse_model_name
from turnout.common.catalog import derive_capabilities
from turnout.common.keys import Keys
from turnout.common.rpc import RpcContext
from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.common.schemas.route import RequestKind, RouteRequestV1
from turnout.embeddings.static import default_embedder
from turnout.scorer.app import Scorer
from turnout.scorer.engine import RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex
from turnout.scorer.metrics import ScorerMetrics
from turnout.scorer.settings import ScorerSettings
from turnout.scorer.vram import VramOptions, host_vram, measured_sizes
from turnout.scorer.vram_routing import VramCoordinator, VramView

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
BLOCK = 100
"""Decisions per block; the planner-off and planner-on blocks alternate."""
GiB = 1024**3
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


def host_states(snap: CatalogSnapshotV1, hosts: int, spare_gb: float) -> list[HostStateV1]:
    """What each host's gpu-agent reports: every tenth model loaded on both its replicas' hosts
    (measured at ~0.6 GiB per billion parameters, a 4-bit quantisation), on as many GPUs as
    ``max_loaded_per_gpu`` (3) needs plus one, with ``spare_gb`` free on the host."""
    loaded: dict[int, list[LoadedModelV1]] = {j: [] for j in range(hosts)}
    for m in snap.models[::10]:
        size = int((m.params_b or 7.0) * 0.6 * GiB) + GiB // 2
        for r in m.replicas:
            host = int(r.host.removeprefix("host"))
            loaded[host].append(LoadedModelV1(name=m.name, size_bytes=size, vram_bytes=size))
    states = []
    for j, models in loaded.items():
        gpus = len(models) // 3 + 1
        used = sum(m.vram_bytes for m in models)
        total = used + int(spare_gb * GiB)
        states.append(
            HostStateV1(
                host=f"host{j}",
                backend=f"gpu{j}",
                gpus=[
                    GpuStateV1(
                        index=k,
                        memory_total_bytes=total // gpus,
                        memory_used_bytes=used // gpus,
                        memory_free_bytes=(total - used) // gpus,
                    )
                    for k in range(gpus)
                ],
                loaded_models=models,
            )
        )
    return states


class ReadClock:
    """The engine's clock here: the wall clock, an hour later after each :meth:`read`, so that
    the read of the gateways' counts (``set_load``) before a block holds every decision noted
    before it (``scorer/notes.py``: a read holds the notes ``inflight_lag_s`` older than it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def read(self, engine: RoutingEngine) -> None:
        self.offset += 3600.0
        engine.set_load({})


def planner(scorer: Scorer, states: list[HostStateV1]) -> VramCoordinator:
    """A VRAM planner that knows every host (the view its refresh builds from the agents' states;
    no orders carried out: no Redis)."""
    coord = VramCoordinator(VramOptions(), redis=scorer._redis, keys=Keys(), actions=None)
    coord.update_catalog(scorer.engine.table)
    hosts = {s.host: h for s in states if (h := host_vram(s, coord.cfg)) is not None}
    coord.view = VramView(
        hosts=MappingProxyType(hosts),
        backend_host=MappingProxyType({s.backend: s.host for s in states if s.backend}),
        measured=MappingProxyType(measured_sizes(states)),
        states=tuple(states),
    )
    return coord


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--learned", type=int, default=5000, help="graded prompts in the learned index")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--distinct", type=int, default=50, help="distinct prompts per kind in the repeat pass")
    ap.add_argument("--spare-gb", type=float, default=24.0, help="free GPU memory per host beside its loaded models")
    ap.add_argument("--kinds", default=",".join(PROMPTS), help="prompt kinds to run, comma-separated")
    args = ap.parse_args()
    snap = snapshot(args.models, args.hosts)
    print(host_line())
    embedder = default_embedder()
    learned = LearnedIndex(embedder.dims)
    rng = np.random.default_rng(0)
    if args.learned:
        texts = [" ".join(rng.choice(VOCAB, int(rng.integers(3, 30)))) for _ in range(args.learned)]
        emb = embedder.encode(texts)
        names = [m.name for m in snap.models[:10]]
        learned.add_batch(emb, names, rng.integers(0, 2, size=(args.learned, len(names))).astype(float))
    clock = ReadClock()
    engine = RoutingEngine(embedder=embedder, learned=learned, clock=clock)
    engine.set_catalog(snap)
    states = host_states(snap, args.hosts, args.spare_gb)
    engine.set_fleet(FleetState.from_hosts(states))
    scorer = Scorer(
        ScorerSettings(),
        redis=Redis(),  # never called on the route path
        sessionmaker=async_sessionmaker(),
        metrics=ScorerMetrics.create(CollectorRegistry()),
        engine=engine,
    )
    print(
        f"{args.models} models, {2 * args.models} replicas on {args.hosts} hosts "
        f"({sum(len(s.loaded_models) for s in states)} loaded), learned index {args.learned} prompts"
    )
    cols = f"{'wall p50':>9}{'p99':>7}{'p99/p50':>8}{'cpu p50':>9}{'p99':>7}{'p99/p50':>8}"
    print(f"{'prompt':<18}{'pass':<8}{'planner':<9}{cols}  µs")
    hits = misses = 0
    decided: Counter[str] = Counter()
    for label in args.kinds.split(","):
        base = PROMPTS[label]
        for mode in ("miss", "repeat"):
            before = (engine.memo.hits, engine.memo.misses)
            times = await run(scorer, clock, states, base, args.n, args.distinct if mode == "repeat" else None, decided)
            if mode == "repeat":
                hits += engine.memo.hits - before[0]
                misses += engine.memo.misses - before[1]
            for on, (wall, cpu) in zip(("off", "on"), times, strict=True):
                print(f"{label:<18}{mode:<8}{on:<9}{fmt(wall)}{fmt(cpu)}")
    print(f"decision memo, repeat passes: hit rate {hits / max(hits + misses, 1):.1%} ({hits} hits, {misses} misses)")
    shares = (f"{k} {v / max(decided.total(), 1):.0%}" for k, v in decided.most_common())
    print("VRAM planner decisions:", ", ".join(shares))


async def run(
    scorer: Scorer,
    clock: ReadClock,
    states: list[HostStateV1],
    base: RouteRequestV1,
    n: int,
    distinct: int | None,
    decided: Counter[str],
) -> list[tuple[list[int], list[int]]]:
    """``n`` decisions with the planner off and ``n`` with it on, in alternating blocks of
    ``BLOCK``; before each block the fleet is as last read (the gateways' in-flight counts
    replace the decisions noted since; the planner's view without the loads it reserved)."""
    engine = scorer.engine
    out: list[tuple[list[int], list[int]]] = [([], []), ([], [])]
    reqs = [
        [base.model_copy(update={"text": f"{base.text} {mark}{i}"}) for i in range(distinct or n + WARMUP)]
        for mark in (("@", "%") if distinct else ("#", "&"))  # the passes do not reuse each other's texts
    ]
    ctx = RpcContext(call_id="bench", request_id=None, deadline=time.monotonic() + 1e9)
    for start in range(0, n + WARMUP, BLOCK):
        for v, (wall, cpu) in enumerate(out):
            clock.read(engine)
            coord = planner(scorer, states) if v else None
            scorer.vram = coord
            for i in range(start, min(start + BLOCK, n + WARMUP)):
                req = reqs[v][i % len(reqs[v])]
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                reply = await scorer.route(req, ctx)
                reply if isinstance(reply, bytes) else reply.model_dump_json().encode()  # as the RPC server sends it
                c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
                if i >= WARMUP:
                    wall.append(t1 - t0)
                    cpu.append(c1 - c0)
            if coord is not None:
                decided.update(coord.decisions)
    return out


def fmt(ns: list[int]) -> str:
    ns = sorted(ns)
    p50, p99 = statistics.median(ns) / 1000, ns[int(len(ns) * 0.99)] / 1000
    return f"{p50:>9.0f}{p99:>7.0f}{p99 / p50:>8.1f}"


if __name__ == "__main__":
    asyncio.run(main())
