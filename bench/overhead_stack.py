"""What the real stack adds: the gateway with the **real scorer** (catalog from Postgres, found by
the profiler's discovery; prompt analysis, embedding, learned term, scoring, VRAM planning) in
front of the simulated fleet at ``time_scale: 0``, against calling the fleet directly.

``make bench`` runs this first (the primary figures), then ``bench/overhead.py`` (the gateway
against a bare pass-through with a scorer stand-in, the second line). Started as real processes
(``turnout.devstack`` — the same launcher as ``make run`` and the e2e tests): a private
``redis-server`` and PostgreSQL under ``.run/bench-stack``, the simulated fleet (no delays), the
scorer, the profiler (discovery, then idle) and the gateway, one process each.

Load: one aiohttp session from this process, ``--requests`` per point after a warm-up, at
concurrency 1 and 16, for a short prompt and a 2 KB code prompt, each through ``turnout/auto``
(the scorer ranks), through a named model (replica choice only) and directly to the fleet's
OpenAI listener; ``--rounds`` rounds visit every target in turn, and the medians over rounds are
printed with the latency the gateway adds over direct, throughput against direct, and the CPU the
gateway and the scorer spent per request (from ``/proc``, robust to a busy machine). Each round
also streams the short prompt at concurrency 1 through every target (``--requests`` / 2 times;
the fleet sends one SSE event per token, as real servers do) and prints the time to the first
body byte and to the end of the stream, each with what the gateway adds. On a shared
machine read the ratios and the CPU figures, not the absolute latencies.

    .venv/bin/python bench/overhead_stack.py [--rounds 3] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import cpu_s, rss_mib

from turnout.devstack.infra import start_postgres, start_redis
from turnout.devstack.stack import Stack, StackConfig, file_sink

REPO = Path(__file__).resolve().parents[1]
SHORT = "Say hello in one word."
CODE = (
    "Review this function and fix the bug:\n```python\n"
    + "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n" * 26
    + "```"
)


def body(model: str, text: str, *, stream: bool = False) -> bytes:
    req: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    if stream:
        req["stream"] = True
    return orjson.dumps(req)


async def drive_stream(url: str, payload: bytes, *, requests: int) -> tuple[list[float], list[float], int]:
    """Streamed requests one at a time: time to the first body byte and to the end of the stream
    (the fleet sends one SSE event per token, as real servers do)."""
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(requests):
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
                first = True
                async for _chunk, _ in r.content.iter_chunks():
                    if first:
                        ttfb.append(time.perf_counter() - t0)
                        first = False
                errors += r.status != 200 or first
            total.append(time.perf_counter() - t0)
    return ttfb, total, errors


async def drive(url: str, payload: bytes, *, concurrency: int, requests: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300, help="requests per point and round")
    args = ap.parse_args()
    run = REPO / ".run" / f"bench-stack-{uuid.uuid4().hex[:6]}"
    run.mkdir(parents=True)
    redis = start_redis(run)
    pg = start_postgres(run)
    stack = Stack(
        StackConfig(
            redis_url=redis.url,
            database_url=pg.url.replace("postgresql://", "postgresql+asyncpg://", 1),
            key_prefix="bench",
            free_ports=True,
            gateway_port=None,
            ops_host="127.0.0.1",
            environment="test",
            log_level="WARNING",
            inherit_turnout_env=False,
            extra_env={"TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.5"},
            cwd=REPO,
        ),
        sink=file_sink(run / "logs"),
    )
    try:
        fleet = stack.start_fleet(["--time-scale", "0"])
        stack.start_services(("scorer", "profiler", "gateway"))
        urls = stack.wait_ready(timeout=120)
        stack.wait_models(min_models=3, timeout=120)
        config = httpx.get(f"{fleet.admin_url}/_fleet/config", timeout=5).raise_for_status().json()
        named = next(m["name"] for li in config["listeners"] if li["name"] == "openai" for m in li["models"])
        direct = f"{fleet.openai_url}/chat/completions"
        via = f"{urls.gateway}/v1/chat/completions"
        targets = {
            "direct": lambda text, stream=False: (direct, body(named, text, stream=stream)),
            "auto": lambda text, stream=False: (via, body("turnout/auto", text, stream=stream)),
            "named": lambda text, stream=False: (via, body(named, text, stream=stream)),
        }
        gw, sc = stack.procs["gateway"].pid, stack.procs["scorer"].pid
        return asyncio.run(measure(args, targets, gw, sc))
    finally:
        stack.stop()
        pg.stop()
        redis.stop()
        shutil.rmtree(run, ignore_errors=True)


async def measure(args: argparse.Namespace, targets: dict, gw: int, sc: int) -> int:  # type: ignore[type-arg]
    results: dict[tuple[str, str, int], list[tuple[float, float, float, float]]] = {}
    streams: dict[str, list[tuple[float, float]]] = {}
    for text in (SHORT, CODE):  # warm-up: analysis cache, embedding word cache, connections
        for make in targets.values():
            url, payload = make(text)
            await drive(url, payload, concurrency=4, requests=100)
    for rnd in range(args.rounds):
        for label, text in (("short", SHORT), ("2 KB code", CODE)):
            for c in (1, 16):
                for name, make in targets.items():
                    url, payload = make(text)
                    g0, s0 = cpu_s(gw), cpu_s(sc)
                    lat, wall, errors = await drive(url, payload, concurrency=c, requests=args.requests)
                    n = len(lat)
                    if errors:
                        print(f"round {rnd}: {errors} errors on {name} {label} c={c}")
                    results.setdefault((label, name, c), []).append(
                        (
                            statistics.median(lat) * 1000,
                            n / wall,
                            (cpu_s(gw) - g0) / n * 1e6,
                            (cpu_s(sc) - s0) / n * 1e6,
                        )
                    )
        for name, make in targets.items():  # streaming, short prompt, c=1: per-token chunks
            url, payload = make(SHORT, True)
            ttfb, total, errors = await drive_stream(url, payload, requests=max(1, args.requests // 2))
            if errors:
                print(f"round {rnd}: {errors} errors on {name} streaming")
            streams.setdefault(name, []).append((statistics.median(ttfb) * 1000, statistics.median(total) * 1000))
    print(f"\nreal stack, {args.rounds} interleaved rounds x {args.requests} requests; medians over rounds")
    print(
        f"{'prompt':<10}{'target':<8}{'p50@c1 ms':>10}{'added':>8}{'req/s@c16':>10}{'vs direct':>10}"
        f"{'gw CPU µs':>10}{'scorer CPU µs':>14}"
    )
    for label in ("short", "2 KB code"):
        base = results[(label, "direct", 1)]
        base16 = results[(label, "direct", 16)]
        for name in targets:
            r1, r16 = results[(label, name, 1)], results[(label, name, 16)]
            p50 = statistics.median(x[0] for x in r1)
            added = statistics.median(a[0] - b[0] for a, b in zip(r1, base, strict=True))
            rps = statistics.median(x[1] for x in r16)
            ratio = statistics.median(a[1] / b[1] for a, b in zip(r16, base16, strict=True))
            gcpu = statistics.median(x[2] for x in r1 + r16)
            scpu = statistics.median(x[3] for x in r1 + r16)
            cpu = f"{gcpu:>10.0f}{scpu:>14.0f}" if name != "direct" else f"{'':>10}{'':>14}"
            print(f"{label:<10}{name:<8}{p50:>10.2f}{added:>8.2f}{rps:>10.0f}{ratio:>10.2f}{cpu}")
    print("\nstreaming, short prompt @c1, one SSE event per token; medians over rounds")
    print(f"{'target':<8}{'TTFB ms':>10}{'added':>8}{'whole ms':>10}{'added':>8}")
    sbase = streams["direct"]
    for name, rows in streams.items():
        ttfb = statistics.median(x[0] for x in rows)
        whole = statistics.median(x[1] for x in rows)
        added_t = statistics.median(a[0] - b[0] for a, b in zip(rows, sbase, strict=True))
        added_w = statistics.median(a[1] - b[1] for a, b in zip(rows, sbase, strict=True))
        print(f"{name:<8}{ttfb:>10.2f}{added_t:>8.2f}{whole:>10.2f}{added_w:>8.2f}")
    print(f"RSS: gateway {rss_mib(gw):.0f} MiB, scorer {rss_mib(sc):.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
