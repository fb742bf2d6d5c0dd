"""What the gateway adds: latency and throughput, direct vs a bare pass-through proxy vs the gateway.

``make bench`` (or ``python bench/overhead.py``) starts, each as its own process:

* a zero-delay **upstream**: an aiohttp OpenAI-compatible server answering
  ``/v1/chat/completions`` with a fixed reply, or a fixed SSE stream (role chunk, 8 content
  chunks, finish chunk, usage chunk, ``[DONE]``, each written separately, no delay);
* a **baseline** proxy: the reference the issue's targets name — a FastAPI pass-through on
  uvicorn (uvloop, httptools, one worker) whose upstream client is one aiohttp session: reads the
  body, forwards it, returns the reply or relays the stream chunk by chunk, no parsing;
* an **aiohttp** proxy: the same forwarding on a bare aiohttp server (the floor a Python
  pass-through can reach; reported for comparison, no target);
* a **scorer stand-in**: a real :class:`RpcServer` on the ``scorer.route`` v1 queue answering a
  fixed one-candidate reply (a minimal RPC responder: the real scorer needs its Postgres catalog;
  this keeps the full RPC round trip through Redis — push, BLPOP, reply, BLPOP — in the loop,
  without the scorer's own analysis time);
* the **gateway**: ``python -m turnout.gateway`` (uvicorn + uvloop, one worker), on a private
  ``redis-server`` (``turnout.devstack.infra.start_redis``), with the upstream as its only
  backend; every request asks the scorer stand-in (virtual model), is forwarded, and publishes
  its request event.

Load comes from this process with one aiohttp session at concurrency 1 and 16, non-streaming
and streaming, a bounded number of requests each (after a warm-up), in ``--rounds`` rounds that
visit every target in turn (the dev box's speed drifts; a round compares targets measured
moments apart). Printed, as medians over the rounds: p50/p99 latency
(to the last byte) for direct / baseline / gateway, the latency each proxy adds over direct,
throughput and the ratios gateway/direct and gateway/baseline, and the gateway's RSS.
Targets (issue 2): added p50 at c=1 within 1 ms of the baseline's; throughput at c=16 at least
70 % of the baseline's. The ratios against the bare aiohttp proxy are printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handler's annotations here
from fastapi.responses import Response, StreamingResponse

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench-model"

# --- the fixed upstream replies ----------------------------------------------------------------

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
)


def _sse(delta: dict[str, object] | None, finish: str | None = None, usage: bool = False) -> bytes:
    chunk: dict[str, object] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    if usage:
        chunk["choices"] = []
        chunk["usage"] = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    else:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STREAM = [
    _sse({"role": "assistant", "content": ""}),
    *(_sse({"content": f" word{i}"}) for i in range(8)),
    _sse({}, "stop"),
    _sse(None, usage=True),
    b"data: [DONE]\n\n",
]
REQUEST = {"model": "turnout/auto", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
BODY = orjson.dumps(REQUEST)
STREAM_BODY = orjson.dumps({**REQUEST, "stream": True})


# --- roles run in child processes --------------------------------------------------------------


def _serve(app: web.Application, port: int) -> None:
    import uvloop

    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


def run_upstream(port: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body and b'"stream": true' not in body:
            return web.Response(body=REPLY, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in STREAM:
            await resp.write(event)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    _serve(app, port)


def run_proxy(port: int, upstream: str) -> None:
    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512, limit_per_host=256))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(upstream, data=body, headers={"Content-Type": "application/json"}) as r:
            if r.content_type != "text/event-stream":
                return web.Response(body=await r.read(), status=r.status, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for data in r.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/chat/completions", chat)
    _serve(app, port)


def run_fastapi_proxy(port: int, upstream: str) -> None:
    """The issue's reference pass-through: FastAPI on uvicorn, one aiohttp session upstream."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    import uvicorn

    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512, limit_per_host=256))
        yield
        await session.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        r = await session.post(upstream, data=body, headers={"Content-Type": "application/json"})
        if r.content_type != "text/event-stream":
            data = await r.read()
            r.release()
            return Response(content=data, status_code=r.status, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for data in r.content.iter_any():
                    yield data
            finally:
                r.release()

        return StreamingResponse(relay(), media_type="text/event-stream")

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


def run_scorer(redis_url: str, prefix: str) -> None:
    import uvloop

    from turnout.common.keys import Keys
    from turnout.common.rpc import ROUTE_V1, RpcContext, RpcServer
    from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1

    reply = RouteReplyV1(candidates=[CandidateV1(model=MODEL, backend="bench", upstream_model=MODEL, score=1.0)])

    async def handle(_: RouteRequestV1, __: RpcContext) -> RouteReplyV1:
        return reply

    async def main() -> None:
        server = RpcServer(redis_url, Keys(prefix), replica_id="bench-scorer")
        server.register(ROUTE_V1, handle)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.stop()))
        await server.serve()

    uvloop.run(main())


# --- the load driver -----------------------------------------------------------------------------


@dataclass
class Result:
    latencies: list[float]
    wall_s: float
    errors: int
    cpu_us: float | None = None
    """CPU time the proxy process (baseline or gateway) spent per request, user + system."""

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99(self) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s


async def drive(url: str, *, stream: bool, concurrency: int, requests: int) -> Result:
    body = STREAM_BODY if stream else BODY
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    data = await r.read()
                    if r.status != 200 or (stream and not data.endswith(b"data: [DONE]\n\n")):
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Result(latencies, wall, errors)


def tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process tree (robust to a busy machine, unlike latency)."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of a process tree, MiB."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


async def fallbacks(url: str) -> float:
    """How many requests the gateway routed without the scorer (its fallback counter)."""
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("turnout_gateway_fallback_routes_total{")
    )


# --- orchestration -------------------------------------------------------------------------------


def _free_port() -> int:
    from turnout.devstack.infra import free_port

    return free_port()


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    from turnout.devstack.infra import wait_port

    proc = subprocess.Popen(args, env=env, cwd=REPO, start_new_session=True)
    try:
        if port is not None:
            wait_port("127.0.0.1", port, timeout=60, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


async def write_snapshot(redis_url: str, prefix: str) -> None:
    """The catalog a scorer would publish, for the diagnostic gateway that runs without one."""
    from redis.asyncio import Redis

    from turnout.common.keys import Keys
    from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1, ReplicaV1

    snap = CatalogSnapshotV1(
        version="bench",
        models=[CatalogModelV1(name=MODEL, params_b=3, replicas=[ReplicaV1(backend="bench", upstream_model=MODEL)])],
    )
    r = Redis.from_url(redis_url)
    try:
        await r.set(Keys(prefix).catalog_snapshot, snap.model_dump_json())
    finally:
        await r.aclose()


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                    if r.status == 200 and r.headers.get("x-turnout-model") == MODEL:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} is not answering through the scorer")
            await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace) -> int:
    from turnout.devstack.infra import start_redis

    run_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    redis = start_redis(run_dir, ephemeral=True)
    prefix = "bench"
    up_port, proxy_port, gw_port, fb_port = _free_port(), _free_port(), _free_port(), _free_port()
    fastapi_port = _free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1/chat/completions"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    env.update(
        TURNOUT_REDIS_URL=redis.url,
        TURNOUT_KEY_PREFIX=prefix,
        TURNOUT_BACKENDS=f"bench:openai=http://127.0.0.1:{up_port}/v1",
        TURNOUT_LOG_LEVEL="WARNING",
        TURNOUT_GATEWAY__HOST="127.0.0.1",
        TURNOUT_GATEWAY__PORT=str(gw_port),
        TURNOUT_GATEWAY__SCHEMA_WAIT_S="0",
        TURNOUT_GATEWAY__WORKERS=str(args.workers),
        TURNOUT_DATABASE_URL="postgresql+asyncpg://bench@127.0.0.1:1/unused",
    )
    fb_env = {**env, "TURNOUT_KEY_PREFIX": "bench-fb", "TURNOUT_GATEWAY__PORT": str(fb_port)}
    await write_snapshot(redis.url, "bench-fb")
    await write_snapshot(redis.url, prefix)  # as the scorer would: a missed deadline falls back cleanly
    try:
        with (
            process(self_cmd("--role", "upstream", "--port", str(up_port)), port=up_port),
            process(
                self_cmd("--role", "proxy", "--port", str(proxy_port), "--upstream", upstream), port=proxy_port
            ) as proxy,
            process(
                self_cmd("--role", "fastapi-proxy", "--port", str(fastapi_port), "--upstream", upstream),
                port=fastapi_port,
            ) as fastapi_proxy,
            process(self_cmd("--role", "scorer", "--redis", redis.url, "--prefix", prefix)),
            process([sys.executable, "-m", "turnout.gateway"], env=env, port=gw_port) as gateway,
            process([sys.executable, "-m", "turnout.gateway"], env=fb_env, port=fb_port) as gateway_fb,
        ):
            targets = {
                "direct": upstream,
                "baseline": f"http://127.0.0.1:{fastapi_port}/v1/chat/completions",
                "aiohttp": f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
                "gateway": f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                "gw-no-rpc": f"http://127.0.0.1:{fb_port}/v1/chat/completions",
            }
            pids = {
                "baseline": fastapi_proxy.pid,
                "aiohttp": proxy.pid,
                "gateway": gateway.pid,
                "gw-no-rpc": gateway_fb.pid,
            }
            await wait_ready(targets["gateway"])
            await wait_ready(targets["gw-no-rpc"])
            rss_idle = rss_mib(gateway.pid)
            print(f"# {os.cpu_count()} CPU(s); {args.rounds} rounds of {args.requests} requests per target at c=1, "
                  f"{args.requests * 2} at c=16")  # fmt: skip
            print(f"# gateway RSS after start: {rss_idle:.1f} MiB ({args.workers} worker(s))")
            ok = True
            for stream in (False, True):
                for conc in (1, 16):
                    n = args.requests if conc == 1 else args.requests * 2
                    for url in targets.values():
                        await drive(url, stream=stream, concurrency=conc, requests=max(n // 10, 50))  # warm-up
                    rounds: list[dict[str, Result]] = []
                    for _ in range(args.rounds):  # targets interleaved, so that a noisy moment hits all
                        results: dict[str, Result] = {}
                        for name, url in targets.items():
                            pid = pids.get(name)
                            before = cpu_s(pid) if pid else 0.0
                            results[name] = await drive(url, stream=stream, concurrency=conc, requests=n)
                            if pid:
                                results[name].cpu_us = (cpu_s(pid) - before) / n * 1e6
                        rounds.append(results)
                    ok &= report(rounds, stream=stream, concurrency=conc)
            print(f"# gateway RSS after the runs: {rss_mib(gateway.pid):.1f} MiB ({args.workers} worker(s))")
            fb = await fallbacks(f"http://127.0.0.1:{gw_port}/metrics")
            print(f"# gateway requests routed by the fallback (scorer missed its deadline): {fb:.0f}")
            return 0 if ok or not args.strict else 1
    finally:
        redis.stop()


def _median_of(rounds: list[dict[str, Result]], name: str, attr: str) -> float:
    return statistics.median(getattr(r[name], attr) for r in rounds)


def report(rounds: list[dict[str, Result]], *, stream: bool, concurrency: int) -> bool:
    """Medians over the rounds; each ratio and gap is taken within a round (same moment), then
    its median is judged against the target and every round's value is printed beside it."""
    kind = "stream" if stream else "non-stream"
    print(f"\n## {kind}, concurrency {concurrency} (medians of {len(rounds)} rounds)")
    print(f"{'target':<16}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'errors':>8}{'proxy CPU us/req':>18}")
    for name in rounds[0]:
        cpus = [r[name].cpu_us for r in rounds]
        cpu = f"{statistics.median(c for c in cpus if c is not None):>18.0f}" if cpus[0] is not None else f"{'-':>18}"
        errors = sum(r[name].errors for r in rounds)
        p50, p99, rps = (_median_of(rounds, name, a) for a in ("p50", "p99", "rps"))
        print(f"{name:<16}{p50:>10.3f}{p99:>10.3f}{rps:>10.0f}{errors:>8}{cpu}")

    def per_round(f: Callable[[dict[str, Result]], float]) -> tuple[float, str]:
        values = [f(r) for r in rounds]
        return statistics.median(values), "/".join(f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}" for v in values)

    b50, _ = per_round(lambda r: r["baseline"].p50 - r["direct"].p50)
    g50, _ = per_round(lambda r: r["gateway"].p50 - r["direct"].p50)
    b99, _ = per_round(lambda r: r["baseline"].p99 - r["direct"].p99)
    g99, _ = per_round(lambda r: r["gateway"].p99 - r["direct"].p99)
    print(f"added over direct: baseline p50 {b50:+.3f} ms p99 {b99:+.3f} ms;"
          f" gateway p50 {g50:+.3f} ms p99 {g99:+.3f} ms")  # fmt: skip
    g_d, _ = per_round(lambda r: r["gateway"].rps / r["direct"].rps)
    g_a, _ = per_round(lambda r: r["gateway"].rps / r["aiohttp"].rps)
    over_a, _ = per_round(lambda r: r["gateway"].p50 - r["aiohttp"].p50)
    print(f"throughput: gateway/direct {g_d:.2f}, gateway/aiohttp {g_a:.2f};"
          f" gateway p50 over aiohttp's {over_a:+.3f} ms")  # fmt: skip
    ok = all(r["gateway"].errors == 0 for r in rounds)
    if concurrency == 1:
        gap, each = per_round(lambda r: (r["gateway"].p50 - r["direct"].p50) - (r["baseline"].p50 - r["direct"].p50))
        met = gap <= 1.0
        print(f"target: gateway added p50 within 1 ms of baseline's: {gap:+.3f} ms (rounds {each}) "
              f"-> {'met' if met else 'MISSED'}")  # fmt: skip
    else:
        ratio, each = per_round(lambda r: r["gateway"].rps / r["baseline"].rps)
        met = ratio >= 0.70
        print(f"target: gateway throughput >= 70% of baseline's: {ratio:.0%} (rounds {each}) "
              f"-> {'met' if met else 'MISSED'}")  # fmt: skip
    return ok and met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per run at c=1 (twice that at c=16)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (baseline: always 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode, targets interleaved (medians)")
    parser.add_argument("--role", choices=["upstream", "proxy", "fastapi-proxy", "scorer"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        run_upstream(args.port)
        return 0
    if args.role == "proxy":
        run_proxy(args.port, args.upstream)
        return 0
    if args.role == "fastapi-proxy":
        run_fastapi_proxy(args.port, args.upstream)
        return 0
    if args.role == "scorer":
        run_scorer(args.redis, args.prefix)
        return 0
    import uvloop

    return uvloop.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
