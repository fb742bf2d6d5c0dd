"""Does the garbage collector make a scorer decision's p99? An in-process paired A/B of the GC
setting on ``scorer.route`` decisions, with the fixtures of ``scorer_decision.py`` (its catalog,
learned index, hosts and VRAM planner):

* **default** — CPython's thresholds (700, 10, 10), nothing frozen: what the scorer runs with;
* **tuned** — what the gateway does at start (``turnout.gateway.serving.tune_gc``): everything
  alive frozen out of the collector's walks (``gc.freeze``), young collections every 10,000 net
  container allocations.

The two settings alternate every ``BLOCK`` decisions (the order flips every block), with the
planner off and on, miss and repeat passes. Per setting: CPU p50 / p99 / p99/p50; the
collections that ran inside a timed decision, per 1,000 decisions and generation (a
``gc.callbacks`` hook); the share of decisions during which the thread was switched out
(``ru_nivcsw``, involuntary context switches) and p99/p50 without those.

    .venv/bin/python bench/scorer_gc.py [--models 100] [--hosts 4] [--n 2000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import gc
import resource
import statistics
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from scorer_decision import PROMPTS, VOCAB, WARMUP, ReadClock, host_states, planner, snapshot
from sqlalchemy.ext.asyncio import async_sessionmaker

from turnout.common.rpc import RpcContext
from turnout.embeddings.static import default_embedder
from turnout.scorer.app import Scorer
from turnout.scorer.engine import RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex
from turnout.scorer.metrics import ScorerMetrics
from turnout.scorer.settings import ScorerSettings

BLOCK = 100
DEFAULT = gc.get_threshold()
KINDS = ("greeting", "named model", "hard-code+tools")


def setting(tuned: bool) -> None:
    if tuned:
        gc.freeze()
        gc.set_threshold(10_000, *DEFAULT[1:])
    else:
        gc.unfreeze()
        gc.set_threshold(*DEFAULT)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    snap = snapshot(args.models, args.hosts)
    emb = default_embedder()
    learned = LearnedIndex(emb.dims)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(VOCAB, int(rng.integers(3, 30)))) for _ in range(5000)]
    names = [m.name for m in snap.models[:10]]
    learned.add_batch(emb.encode(texts), names, rng.integers(0, 2, size=(5000, len(names))).astype(float))
    clock = ReadClock()
    engine = RoutingEngine(embedder=emb, learned=learned, clock=clock)
    engine.set_catalog(snap)
    states = host_states(snap, args.hosts, 24.0)
    engine.set_fleet(FleetState.from_hosts(states))
    scorer = Scorer(
        ScorerSettings(),
        redis=Redis(),
        sessionmaker=async_sessionmaker(),
        metrics=ScorerMetrics.create(CollectorRegistry()),
        engine=engine,
    )
    ctx = RpcContext(call_id="bench", request_id=None, deadline=time.monotonic() + 1e9)
    gc.collect()
    print(f"{args.models} models / {args.hosts} hosts; objects the collector tracks: {len(gc.get_objects())}")
    ran: list[int] = []

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            ran.append(info["generation"])

    gc.callbacks.append(hook)
    total = args.n + WARMUP
    for label in KINDS:
        base = PROMPTS[label]
        for on in (False, True):
            for mode in ("miss", "repeat"):
                cpu: dict[bool, list[int]] = {False: [], True: []}
                quiet: dict[bool, list[int]] = {False: [], True: []}
                gens: dict[bool, list[int]] = {False: [0, 0, 0], True: [0, 0, 0]}
                reqs = {
                    t: [
                        base.model_copy(update={"text": f"{base.text} {'t' if t else 'd'}{on}{i}"})
                        for i in range(50 if mode == "repeat" else total)
                    ]
                    for t in (False, True)
                }
                for start in range(0, total, BLOCK):
                    for tuned in (False, True) if (start // BLOCK) % 2 == 0 else (True, False):
                        setting(tuned)
                        clock.read(engine)
                        scorer.vram = planner(scorer, states) if on else None
                        for i in range(start, min(start + BLOCK, total)):
                            req = reqs[tuned][i % len(reqs[tuned])]
                            ran.clear()
                            sw0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
                            c0 = time.thread_time_ns()
                            reply = await scorer.route(req, ctx)
                            reply if isinstance(reply, bytes) else reply.model_dump_json().encode()
                            c1 = time.thread_time_ns()
                            sw1 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
                            if i >= WARMUP:
                                cpu[tuned].append(c1 - c0)
                                if sw1 == sw0:
                                    quiet[tuned].append(c1 - c0)
                                for g in ran:
                                    gens[tuned][g] += 1
                cols = []
                for tuned in (False, True):
                    p50, p99 = pcts(cpu[tuned])
                    q50, q99 = pcts(quiet[tuned])
                    per_k = "/".join(f"{1000 * c / len(cpu[tuned]):.1f}" for c in gens[tuned])
                    switched = 1 - len(quiet[tuned]) / len(cpu[tuned])
                    cols.append(
                        f"{'tuned' if tuned else 'default'} {p50:.0f} {p99:.0f} {p99 / p50:.2f}x "
                        f"gc0/1/2 {per_k} switched {switched:.0%} {q99 / q50:.2f}x"
                    )
                print(f"{label:<16}{'on ' if on else 'off'} {mode:<7}", " | ".join(cols), flush=True)
    setting(False)


def pcts(ns: list[int]) -> tuple[float, float]:
    s = sorted(ns)
    return statistics.median(s) / 1000, s[int(len(s) * 0.99)] / 1000


if __name__ == "__main__":
    asyncio.run(main())
