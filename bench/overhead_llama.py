"""What the gateway adds in front of a real llama.cpp stream: TTFT and latency, direct vs gateway.

``python bench/overhead_llama.py [--n 20] [--max-tokens 32] [--fleet default|tiny]`` starts:

* a llama.cpp fleet (:mod:`turnout.llamafleet`; ``default``: SmolLM2-135M-Instruct Q4_1,
  a 6M and a 600M random-weight llama; one ``llama_cpp.server`` process each, one thread);
* a private ``redis-server`` and PostgreSQL cluster (``turnout.devstack.infra``), migrated;
* the real scorer, profiler (model discovery only: runtime profiling is switched off, it would
  load the servers while we measure) and gateway (``turnout.devstack.stack``), with
  ``TURNOUT_BACKENDS`` pointing at the fleet.

For each model it sends ``--n`` streamed chat requests straight to the llama.cpp server and
``--n`` through the gateway (naming the model, so the scorer RPC is in the loop), alternating
direct/gateway so that drift hits both alike, at concurrency 1 (a llama.cpp server runs one
request at a time), each with ``max_tokens`` tokens forced (end-of-sequence tokens get a
-100 logit bias), with a distinct prompt each time. It prints, per model and path, p50/p99
of the time to the first content token (TTFT) and to the last byte, and tokens/s after the
first token; then what the gateway adds (gateway minus direct, p50 and p99). Exits non-zero
only when a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
NO_STOP = {"0": -100, "2": -100}  # SmolLM2 tokenizer: <|endoftext|>, <|im_end|>


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    tps: list[float] = field(default_factory=list)
    errors: int = 0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def one_stream(session: aiohttp.ClientSession, url: str, model: str, prompt: str, max_tokens: int) -> Samples:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "logit_bias": NO_STOP,
    }
    out = Samples()
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    buf = b""
    async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as r:
        if r.status != 200:
            out.errors += 1
            await r.read()
            return out
        async for data in r.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                chunk = orjson.loads(event[6:])
                if "error" in chunk:
                    out.errors += 1
                    continue
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    n += 1
                    first = first or now
                    last = now
    end = time.perf_counter()
    if n < 2:
        out.errors += 1
        return out
    out.ttft.append(first - t0)
    out.total.append(end - t0)
    out.tps.append((n - 1) / (last - first))
    return out


async def bench_model(
    direct_url: str, gateway_url: str, model: str, *, n: int, max_tokens: int
) -> tuple[Samples, Samples]:
    direct, gateway = Samples(), Samples()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(2):  # warm-up, both paths
            await one_stream(session, direct_url, model, f"Warm up {i}.", 4)
            await one_stream(session, gateway_url, model, f"Warm up {i}.", 4)
        for i in range(n):
            prompt = f"Tell me something about the number {uuid.uuid4().int % 100000}."
            pair = [(direct_url, direct), (gateway_url, gateway)]
            if i % 2:
                pair.reverse()
            for url, acc in pair:
                s = await one_stream(session, url, model, prompt, max_tokens)
                acc.ttft += s.ttft
                acc.total += s.total
                acc.tps += s.tps
                acc.errors += s.errors
    return direct, gateway


def report(model: str, direct: Samples, gateway: Samples) -> list[str]:
    def ms(v: float) -> str:
        return f"{v * 1000:8.1f}"

    lines = [f"\n{model}"]
    lines.append(f"  {'path':<8} {'n':>3} {'TTFT p50':>9} {'p99':>8} {'total p50':>10} {'p99':>8} {'tok/s p50':>10}")
    for name, s in (("direct", direct), ("gateway", gateway)):
        if not s.ttft:
            lines.append(f"  {name:<8} no successful request ({s.errors} errors)")
            continue
        lines.append(
            f"  {name:<8} {len(s.ttft):>3} {ms(pct(s.ttft, 0.5))} ms {ms(pct(s.ttft, 0.99))} "
            f"{ms(pct(s.total, 0.5))} ms {ms(pct(s.total, 0.99))} {statistics.median(s.tps):10.1f}"
        )
    if direct.ttft and gateway.ttft:
        lines.append(
            f"  gateway adds: TTFT p50 {ms(pct(gateway.ttft, 0.5) - pct(direct.ttft, 0.5))} ms, "
            f"p99 {ms(pct(gateway.ttft, 0.99) - pct(direct.ttft, 0.99))} ms; "
            f"total p50 {ms(pct(gateway.total, 0.5) - pct(direct.total, 0.5))} ms, "
            f"p99 {ms(pct(gateway.total, 0.99) - pct(direct.total, 0.99))} ms"
        )
    return lines


def main() -> int:
    from turnout.common.db.migrate import upgrade
    from turnout.devstack.infra import free_port, start_postgres, start_redis
    from turnout.devstack.stack import Stack, StackConfig, file_sink
    from turnout.llamafleet.errors import LlamaUnavailable
    from turnout.llamafleet.servers import FLEETS, LlamaFleet

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=20, help="streamed requests per model and path (default 20)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--fleet", default="default", choices=sorted(FLEETS))
    args = p.parse_args()
    n = max(1, min(args.n, 500))

    run_dir = REPO / ".run" / "bench"
    log_dir = run_dir / f"llama-{uuid.uuid4().hex[:8]}"
    print(f"starting the llama.cpp fleet {args.fleet!r}, Redis, PostgreSQL and the services (logs in {log_dir})")
    try:
        fleet = LlamaFleet(FLEETS[args.fleet]).start()
    except LlamaUnavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 3
    redis = pg = None
    stack = None
    try:
        redis = start_redis(run_dir, ephemeral=True)
        pg = start_postgres(run_dir, ephemeral=True)
        db_url = pg.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        asyncio.run(upgrade(db_url))
        stack = Stack(
            StackConfig(
                redis_url=redis.url, database_url=db_url, key_prefix="bench-llama", backends=fleet.backends_value,
                gateway_port=free_port(), free_ports=True, environment="test", log_level="WARNING",
                inherit_turnout_env=False, cwd=REPO,
                # discovery only: runtime profiling would load the servers while we measure
                extra_env={"TURNOUT_MIGRATE_ON_START": "false", "TURNOUT_PROFILER__PROFILING__ENABLED": "false"},
            ),
            sink=file_sink(log_dir),
        )  # fmt: skip
        stack.start_services(("scorer", "profiler", "gateway"))
        urls = stack.wait_ready(timeout=90)
        stack.wait_models(min_models=len({m.model.alias for m in fleet.members}), timeout=90)
        gateway_url = f"{urls.openai_base}/chat/completions"
        print(f"llama-cpp-python {fleet.runtime.version if fleet.runtime else '?'}; n={n} per path, "
              f"max_tokens={args.max_tokens}, concurrency 1, alternating direct/gateway")  # fmt: skip
        failed = 0
        for server in fleet.servers.values():
            direct_url = f"{server.url}/chat/completions"
            direct, gateway = asyncio.run(
                bench_model(direct_url, gateway_url, server.alias, n=n, max_tokens=args.max_tokens)
            )
            failed += direct.errors + gateway.errors
            print("\n".join(report(f"{server.alias} ({server.backend})", direct, gateway)))
        if failed:
            print(f"\n{failed} request(s) failed", file=sys.stderr)
        return 1 if failed else 0
    finally:
        if stack is not None:
            stack.stop()
        fleet.stop()
        for inst in (pg, redis):
            if inst is not None:
                inst.stop()


if __name__ == "__main__":
    raise SystemExit(main())
