"""Scale-out: N gateways and M scorers (``--gateways 2 --scorers 2``) on one private Redis and
Postgres, in front of the simulated fleet at ``time_scale: 0``, with the figures
``docs/capacity.md`` plans from.

Started as real processes by ``bench/realstack.py`` (as ``bench/overhead_stack.py``); the extra
gateways listen on their own free ports, the extra scorers take the same RPC queue (the scorer's
replicas share ``{prefix}:rpc:scorer.route:v1`` and each pops what it can). Load: ``turnout/auto``,
``--requests`` per point, at each ``--concurrency`` spread round-robin over the gateways,
``--rounds`` interleaved rounds with a direct-to-fleet point each. ``--prompts`` picks the texts:

* ``varied`` (default): short prompts of several kinds (greeting, question, code, translation,
  maths …), each request's text its own (a request number appended), so that every decision
  misses the memo and the analysis cache: the whole decision, as varied real traffic needs it;
* ``repeat``: the one short prompt, so every decision after the first is a hit of the scorer's
  decision memo (a client resending the same prompt; the cheapest case);
* ``code``: the 2 KB code prompt, each request's its own (the dearest decision).

Per point:

* throughput (req/s) and p50/p99 latency;
* the scorer's queueing: the gateway's RPC round trip (``turnout_rpc_call_duration_seconds``
  from every gateway's ``/metrics``, mean and share over 50 ms), and the RPC backlog (``LLEN`` of
  the request queue, sampled every 5 ms during the load: mean and max);
* CPU per request of all gateways, all scorers and Redis (``/proc`` schedstat), and Redis commands per
  request (``INFO commandstats`` before/after).

On a shared 2-core machine more processes cannot add cores: read CPU per request and ops per
request (they plan capacity), and the queueing figures, not the absolute req/s.

    .venv/bin/python bench/scaleout.py --gateways 2 --scorers 2 [--rounds 2] [--requests 300]
        [--prompts varied|repeat|code]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from hostinfo import host_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_stack import CODE, SHORT, body, drive, numbered, print_decision_memo
from realstack import RPC_QUEUE, SETTLE_S, calls_between, proc_counters, real_stack, redis_calls

RPC_METRIC = "turnout_rpc_call_duration_seconds"
VARIED = (
    SHORT,
    "Explain why the sky is blue in two sentences.",
    "Write a Python function that reverses a linked list.",
    "Translate 'good morning, how are you?' into French.",
    "List the key risks in a quarterly revenue report.",
    "Prove that the square root of two is irrational.",
    "Write a haiku about the sea.",
    "Fix this bug: for i in range(len(xs)): xs.remove(xs[i])",
)
"""The ``varied`` mix's kinds of short prompt (each request's text is made its own)."""


def prompts(kind: str) -> bytes | Callable[[int], bytes]:
    """The ``turnout/auto`` body, or a body per request, for ``--prompts`` (module docstring)."""
    if kind == "repeat":
        return body("turnout/auto", SHORT)
    texts = VARIED if kind == "varied" else (CODE,)

    def one(i: int) -> bytes:
        return body("turnout/auto", numbered(texts[i % len(texts)]))

    return one


@dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    rpc_mean_ms: float = 0.0
    rpc_over_50ms: float = 0.0
    backlog_mean: float = 0.0
    backlog_max: int = 0
    cpu_us: dict[str, float] = field(default_factory=dict)
    redis_ops: float = 0.0
    redis_by_cmd: dict[str, float] = field(default_factory=dict)


def rpc_histogram(gateways: list[str]) -> tuple[float, float, float]:
    """(count, sum seconds, count ≤ 50 ms) of the route RPC's round trip over every gateway."""
    count = total = under = 0.0
    for url in gateways:
        text = httpx.get(f"{url}/metrics", timeout=5).raise_for_status().text
        for line in text.splitlines():
            if not line.startswith(RPC_METRIC) or 'method="scorer.route.v1"' not in line or 'outcome="ok"' not in line:
                continue
            value = float(line.rsplit(" ", 1)[1])
            if line.startswith(f"{RPC_METRIC}_count"):
                count += value
            elif line.startswith(f"{RPC_METRIC}_sum"):
                total += value
            elif 'le="0.05"' in line:
                under += value
    return count, total, under


async def point(
    urls: list[str],
    payload: bytes | Callable[[int], bytes],
    *,
    concurrency: int,
    requests: int,
    r: aioredis.Redis,
    redis_url: str,
    pids: dict,  # type: ignore[type-arg]
) -> Point:
    backlog: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            backlog.append(int(await r.llen(RPC_QUEUE)))  # type: ignore[misc]
            await asyncio.sleep(0.005)

    cpu0 = {k: proc_counters(ps) for k, ps in pids.items()}
    ops0 = redis_calls(redis_url)
    sampler = asyncio.create_task(sample())
    share = [concurrency // len(urls) + (i < concurrency % len(urls)) for i in range(len(urls))]
    per = [requests * s // concurrency for s in share]
    t0 = time.perf_counter()
    runs = await asyncio.gather(
        *(drive(u, payload, concurrency=s, requests=n) for u, s, n in zip(urls, share, per, strict=True) if s)
    )
    wall = time.perf_counter() - t0
    stop.set()
    await sampler
    await asyncio.sleep(SETTLE_S)
    lat = sorted(x for run in runs for x in run[0])
    n = len(lat)
    errors = sum(run[2] for run in runs)
    if errors:
        print(f"  {errors} errors at c={concurrency}")
    by_cmd = calls_between(ops0, redis_calls(redis_url))
    by_cmd["llen"] = by_cmd.get("llen", 0) - len(backlog)  # less this bench's LLEN samples
    per_req = {k: v / max(1, n) for k, v in by_cmd.items() if v > 0}
    return Point(
        rps=n / wall,
        p50_ms=lat[n // 2] * 1000,
        p99_ms=lat[min(n - 1, int(n * 0.99))] * 1000,
        backlog_mean=statistics.fmean(backlog) if backlog else 0.0,
        backlog_max=max(backlog, default=0),
        cpu_us={k: (proc_counters(ps) - cpu0[k]).cpu_s / n * 1e6 for k, ps in pids.items()},
        redis_ops=sum(per_req.values()),
        redis_by_cmd=per_req,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--scorers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=300, help="requests per point and round")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    ap.add_argument(
        "--prompts",
        choices=("varied", "repeat", "code"),
        default="varied",
        help="varied: short prompts of several kinds, each its own (every decision made anew); "
        "repeat: one short prompt (decision memo hits); code: the 2 KB code prompt, each its own",
    )
    args = ap.parse_args()
    print(host_line(), flush=True)
    with real_stack("bench-scale") as rs:
        for _ in range(2, args.gateways + 1):
            rs.add_gateway()
        for _ in range(2, args.scorers + 1):
            rs.add_scorer()
        time.sleep(3)  # the extra scorers load the catalog and the learned index before popping
        pids = {
            "gateway": rs.pids("gateway"),
            "scorer": rs.pids("scorer"),
            "redis": [rs.redis.proc.pid] if rs.redis.proc else [],
        }
        rc = asyncio.run(measure(args, rs.gateways, rs.direct, rs.named, rs.redis.url, pids))
        print_decision_memo(rs.urls.ops.get("scorer"), *rs.scorer_ops)
        return rc


async def measure(
    args: argparse.Namespace, gateways: list[str], direct: str, named: str, redis_url: str, pids: dict
) -> int:  # type: ignore[type-arg]
    r = aioredis.from_url(redis_url)
    auto = prompts(args.prompts)
    for g in gateways:  # warm-up: connections, analysis and embedding caches (the word cache, for varied texts)
        await drive(f"{g}/v1/chat/completions", auto, concurrency=4, requests=100)
    via = [f"{g}/v1/chat/completions" for g in gateways]
    results: dict[tuple[str, int], list[Point]] = {}
    for _ in range(args.rounds):
        for c in args.concurrency:
            kw = {"concurrency": c, "requests": args.requests, "r": r, "redis_url": redis_url}
            p = await point([direct], body(named, SHORT), **kw, pids={})
            results.setdefault(("direct", c), []).append(p)
            h0 = rpc_histogram(gateways)
            p = await point(via, auto, **kw, pids=pids)
            h1 = rpc_histogram(gateways)
            calls = h1[0] - h0[0]
            if calls:
                p.rpc_mean_ms = (h1[1] - h0[1]) / calls * 1000
                p.rpc_over_50ms = 1 - (h1[2] - h0[2]) / calls
            results.setdefault(("turnout", c), []).append(p)
    await r.aclose()
    med = statistics.median
    print(
        f"\n{len(gateways)} gateway(s) + {len(pids['scorer'])} scorer(s), turnout/auto, prompts: {args.prompts}, "
        f"{args.rounds} rounds x {args.requests} requests; medians over rounds"
    )
    print(
        f"{'c':>4}{'direct r/s':>11}{'r/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'RPC ms':>8}{'>50ms':>7}"
        f"{'backlog':>8}{'max':>5}{'gw µs':>7}{'sc µs':>7}{'redis µs':>9}{'redis ops':>10}"
    )
    for c in args.concurrency:
        d, t = results[("direct", c)], results[("turnout", c)]
        print(
            f"{c:>4}{med(x.rps for x in d):>11.0f}{med(x.rps for x in t):>7.0f}{med(x.p50_ms for x in t):>8.2f}"
            f"{med(x.p99_ms for x in t):>8.2f}{med(x.rpc_mean_ms for x in t):>8.2f}"
            f"{med(x.rpc_over_50ms for x in t):>7.1%}{med(x.backlog_mean for x in t):>8.2f}"
            f"{max(x.backlog_max for x in t):>5}{med(x.cpu_us['gateway'] for x in t):>7.0f}"
            f"{med(x.cpu_us['scorer'] for x in t):>7.0f}{med(x.cpu_us['redis'] for x in t):>9.0f}"
            f"{med(x.redis_ops for x in t):>10.1f}"
        )
    last = results[("turnout", args.concurrency[-1])][-1].redis_by_cmd
    print(
        "Redis commands per request:", ", ".join(f"{k} {v:.2f}" for k, v in sorted(last.items(), key=lambda x: -x[1]))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
