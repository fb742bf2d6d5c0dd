"""What the shared Redis routing cache (``scorer/caches.py``: exact + semantic) earns now that
a local decision costs ~0.4 ms and each replica has its own decision memo.

Two scorer replicas — two :class:`RoutingEngine`\\ s, as ``scorer/app.py`` wires them (the
decision memo, and in the ``exact`` / ``exact+semantic`` modes a :class:`RoutingCache`) — share one
private ``redis-server`` and answer one trace in turn (alternating, as two replicas popping one RPC
queue do), ``bench/scorer_decision.py``'s catalog (``--models`` models on ``--hosts`` hosts) and
learned index (``--learned`` prompts). The trace: ``--n`` requests drawn from ``--distinct``
prompts by a Zipf law (``--zipf``), a share (``--near``) of them with a trivial change (a word
appended: the same request to a semantic lookup, a new one to the memo and the exact key).

Modes, interleaved over ``--rounds`` rounds (each with a fresh Redis database and fresh
engines): ``off`` (memo only), ``exact`` and ``exact+semantic`` (the shipped default). Per mode,
medians over rounds: CPU per request of the process (both replicas, the cache's background
writer included: ``time.process_time``), of Redis (``INFO cpu``), Redis commands per request,
wall p50/p99 per request, the memo's hit rate and the Redis cache's exact/semantic hit rates,
and how many requests got a different first choice than with the cache off (a semantic hit
reuses another prompt's decision; the diversity term makes a few differ by itself).

    .venv/bin/python bench/route_cache_value.py [--n 4000] [--distinct 1500] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scorer_decision import VOCAB, snapshot

from turnout.common.keys import Keys
from turnout.common.schemas.route import RouteRequestV1
from turnout.devstack.infra import start_redis
from turnout.embeddings.static import default_embedder
from turnout.scorer.caches import RouteCacheConfig, RoutingCache
from turnout.scorer.engine import RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex

MODES = ("off", "exact", "exact+semantic")


@dataclass
class Result:
    cpu_us: float
    redis_cpu_us: float
    redis_ops: float
    wall_p50_us: float
    wall_p99_us: float
    memo_hit: float
    exact_hit: float
    semantic_hit: float
    firsts: list[str]


def trace(args: argparse.Namespace) -> list[RouteRequestV1]:
    rng = np.random.default_rng(args.seed)
    base = [" ".join(rng.choice(VOCAB, int(rng.integers(4, 40)))) for _ in range(args.distinct)]
    ranks = np.minimum(rng.zipf(args.zipf, size=args.n), args.distinct) - 1
    out = []
    for r in ranks:
        text = base[int(r)]
        if rng.random() < args.near:
            text = f"{text} {rng.choice(['please', 'thanks', 'now', 'ok'])}"
        out.append(RouteRequestV1(text=text))
    return out


def counter_sum(counter: object, **labels: str) -> float:
    total = 0.0
    for metric in counter.collect():  # type: ignore[attr-defined]
        for s in metric.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def redis_figures(r: Redis) -> tuple[float, int]:
    cpu = await r.info("cpu")
    stats = await r.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_client|setinfo"))
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls


async def run_mode(mode: str, reqs: list[RouteRequestV1], snap, embedder, learned, url: str) -> Result:  # type: ignore[no-untyped-def]
    redis = Redis.from_url(url)
    await redis.flushdb()  # this bench's private server
    keys = Keys(prefix=f"rcv{time.monotonic_ns()}")
    engines: list[RoutingEngine] = []
    caches: list[RoutingCache] = []
    resident = frozenset((r.backend, r.upstream_model) for m in snap.models[::10] for r in m.replicas)
    for _ in range(2):
        cache = None
        if mode != "off":
            cfg = RouteCacheConfig(semantic=mode == "exact+semantic")
            cache = RoutingCache(redis, keys, cfg, registry=CollectorRegistry())
            caches.append(cache)
        e = RoutingEngine(embedder=embedder, learned=learned, cache=cache)
        e.set_catalog(snap)
        e.set_fleet(FleetState(resident=resident))
        engines.append(e)
    for i, req in enumerate(reqs[:100]):  # warm-up: connections, word caches (then forgotten)
        await engines[i % 2].route(req.model_copy(update={"text": f"warm {i}"}))
    for c in caches:
        await c.flush()
    rcpu0, calls0 = await redis_figures(redis)
    walls: list[int] = []
    firsts: list[str] = []
    memo0 = [(e.memo.hits, e.memo.misses) for e in engines]
    c0 = time.process_time_ns()
    for i, req in enumerate(reqs):
        t0 = time.perf_counter_ns()
        reply = await engines[i % 2].route(req)
        walls.append(time.perf_counter_ns() - t0)
        firsts.append(reply.candidates[0].model if reply.candidates else "")
    for c in caches:
        await c.flush()
    cpu = (time.process_time_ns() - c0) / len(reqs) / 1000
    rcpu1, calls1 = await redis_figures(redis)
    hits = sum(e.memo.hits - h for e, (h, _) in zip(engines, memo0, strict=True))
    misses = sum(e.memo.misses - m for e, (_, m) in zip(engines, memo0, strict=True))
    exact = sum(counter_sum(c.metrics.lookups, kind="exact", outcome="hit") for c in caches)
    sem = sum(counter_sum(c.metrics.lookups, kind="semantic", outcome="hit") for c in caches)
    await redis.aclose()
    walls.sort()
    n = len(reqs)
    return Result(
        cpu_us=cpu,
        redis_cpu_us=(rcpu1 - rcpu0) / n * 1e6,
        redis_ops=(calls1 - calls0 - 2) / n,  # less the INFO calls between
        wall_p50_us=walls[n // 2] / 1000,
        wall_p99_us=walls[int(n * 0.99)] / 1000,
        memo_hit=hits / max(1, hits + misses),
        exact_hit=exact / n,
        semantic_hit=sem / n,
        firsts=firsts,
    )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--learned", type=int, default=5000)
    ap.add_argument("--n", type=int, default=4000, help="requests per mode and round")
    ap.add_argument("--distinct", type=int, default=1500, help="distinct prompts in the trace")
    ap.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of prompt popularity")
    ap.add_argument("--near", type=float, default=0.2, help="share of requests with a trivial change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    snap = snapshot(args.models, args.hosts)
    embedder = default_embedder()
    learned = LearnedIndex(embedder.dims)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(VOCAB, int(rng.integers(3, 30)))) for _ in range(args.learned)]
    names = [m.name for m in snap.models[:10]]
    learned.add_batch(embedder.encode(texts), names, rng.integers(0, 2, size=(args.learned, 10)).astype(float))
    reqs = trace(args)
    print(
        f"2 replicas, {args.models} models, learned {args.learned}; trace {args.n} requests over "
        f"{args.distinct} prompts (Zipf {args.zipf}, {args.near:.0%} near-duplicates), {args.rounds} rounds"
    )
    results: dict[str, list[Result]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        inst = start_redis(Path(tmp))
        try:
            for _ in range(args.rounds):
                for mode in MODES:
                    results[mode].append(await run_mode(mode, reqs, snap, embedder, learned, inst.url))
        finally:
            inst.stop()
    med = statistics.median
    print(
        f"{'mode':<16}{'CPU µs/req':>11}{'redis CPU':>10}{'redis ops':>10}{'wall p50':>9}{'p99':>7}"
        f"{'memo hit':>9}{'exact hit':>10}{'sem hit':>8}{'1st differs':>12}"
    )
    off = results["off"]
    for mode in MODES:
        rs = results[mode]
        differs = med(
            sum(a != b for a, b in zip(r.firsts, o.firsts, strict=True)) / len(r.firsts)
            for r, o in zip(rs, off, strict=True)
        )
        print(
            f"{mode:<16}{med(r.cpu_us for r in rs):>11.0f}{med(r.redis_cpu_us for r in rs):>10.1f}"
            f"{med(r.redis_ops for r in rs):>10.2f}{med(r.wall_p50_us for r in rs):>9.0f}"
            f"{med(r.wall_p99_us for r in rs):>7.0f}{med(r.memo_hit for r in rs):>9.1%}"
            f"{med(r.exact_hit for r in rs):>10.1%}{med(r.semantic_hit for r in rs):>8.1%}{differs:>12.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
