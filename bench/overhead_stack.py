"""What the real stack adds: the gateway with the **real scorer** (catalog from Postgres, found by
the profiler's discovery; prompt analysis, embedding, learned term, scoring, VRAM planning) in
front of the simulated fleet at ``time_scale: 0``, against calling the fleet directly.

``make bench`` runs this first (the primary figures), then ``bench/overhead.py`` (the gateway
against a bare pass-through with a scorer stand-in, the second line). Started as real processes
by ``bench/realstack.py`` (``turnout.devstack`` — the same launcher as ``make run`` and the e2e
tests): a private ``redis-server`` and PostgreSQL under ``.run/bench-stack-*``, the simulated
fleet (no delays), the scorer, the profiler (discovery, then idle) and the gateway, one process
each.

Load: one aiohttp session from this process, ``--requests`` per point after a warm-up, at
concurrency 1 and 16, for a short prompt and a 2 KB code prompt, each through ``turnout/auto``
(the scorer ranks), through a named model (replica choice only), through the two pass-throughs
of ``bench/overhead.py`` (``aiohttp``: the bare one; ``fastapi``: FastAPI on uvicorn; each one
process with one aiohttp session, in front of the same fleet) and directly to the fleet's
OpenAI listener; ``--rounds`` rounds visit every target in turn (each round starting one target
further along), and the medians over rounds are
printed with the latency each adds over direct (a pass-through's is the floor a Python proxy
reaches), throughput against direct and against each pass-through (issue 17's c16 target is
judged against the bare aiohttp one), and, per
request, the figures a busy machine does not inflate (``bench/realstack.py``): the CPU the
gateway and the scorer spent (``/proc`` schedstat, ns), the Redis commands run (``INFO
commandstats``), and how often each process woke from waiting (voluntary context switches: for
an asyncio process, wake-ups of its loop; on a loaded box each costs CPU of its own). Each round
also streams the short prompt at concurrency 1 through every target (``--requests`` / 2 times;
the fleet sends one SSE event per token, as real servers do) and prints the time to the first
body byte and to the end of the stream, each with what the gateway adds. On a shared
machine read the ratios and the CPU figures, not the absolute latencies.

``--peers`` (``make bench-peers``) adds LiteLLM's proxy as one more target in the same rounds:
installed from PyPI into ``.run/peers/litellm`` on first use, its defaults, one worker, a random
master key, the fleet's model as ``openai/<model>``; then prints Turnout / LiteLLM ratios.

``--gateway-b PYTHON`` starts a second gateway on the same stack with another checkout's
interpreter (its venv imports that checkout's sources: ``git worktree add`` one at the base) as
target ``auto-b``, and prints an A/B block: per point and round this gateway minus that one,
then medians; ``--ab-only`` leaves out the named-model and pass-through targets for more rounds.
Run an A/A first (``--gateway-b .venv/bin/python``, this checkout twice): on the shared 2-core box
(load 4.5-5) 16 rounds x 200 gave the stack's own gateway against the second one CPU ratios 1.12 /
1.07 at c1 (short / 2 KB), 0.99 / 1.02 at c16, p50 +0.6 / +1.0 ms at c1 — differences of that
size between two versions are noise there.

Every request's text is its own (a request number appended, for every target alike), so each of
the scorer's decisions is made in full: prompt analysis, embedding, the learned term's k-NN,
scoring and the VRAM planner. ``--repeat`` sends each prompt's text unchanged instead, so that
after the first request the decisions are decision-memo hits (a client resending the same
prompt: the scorer's cheapest case). The memo's hit rate is printed at the end.

``--stream-only`` runs only the streaming rounds (for profiling the streaming path, or more rounds
of it in the time). With ``--gateway-b`` each round then also streams alternately through the two
gateways, request by request, and prints the median of the per-pair differences (TTFB, whole
stream) and both gateways' CPU and wake-ups per stream over the same stretch: on the loaded box
the per-target rounds' paired TTFB moved by +-0.2 ms between runs of the same two versions.

    .venv/bin/python bench/overhead_stack.py [--rounds 3] [--requests 300] [--peers]
        [--gateway-b ../base/.venv/bin/python [--ab-only]] [--stream-only] [--repeat]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostinfo import host_line
from overhead import process, rss_mib, self_cmd
from realstack import REPO, SETTLE_S, Counters, RealStack, calls_between, proc_counters, real_stack, redis_calls

from turnout.devstack.infra import free_port, wait_port

T = TypeVar("T")
SHORT = "Say hello in one word."
CODE = (
    "Review this function and fix the bug:\n```python\n"
    + "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n" * 26
    + "```"
)


PEERS_VENV = REPO / ".run" / "peers" / "litellm"
HEADERS: dict[str, dict[str, str]] = {}  # per target URL: the JSON content type, plus a peer's key


def headers(url: str) -> dict[str, str]:
    return {"Content-Type": "application/json", **HEADERS.get(url, {})}


def litellm_bin() -> Path:
    """LiteLLM's proxy from PyPI, in its own venv under ``.run/peers`` (installed on first use)."""
    exe = PEERS_VENV / "bin" / "litellm"
    if not exe.exists():
        uv = subprocess.run(["tools/devstack/bootstrap-uv.sh"], cwd=REPO, capture_output=True, text=True, check=True)
        uv_bin = uv.stdout.strip()
        print(f"installing litellm[proxy] into {PEERS_VENV} ...", flush=True)
        subprocess.run([uv_bin, "venv", "-q", "--python", sys.executable, str(PEERS_VENV)], check=True)
        env = {**os.environ, "VIRTUAL_ENV": str(PEERS_VENV)}
        subprocess.run([uv_bin, "pip", "install", "-q", "litellm[proxy]"], env=env, check=True)
    return exe


def start_litellm(run: Path, model: str, api_base: str) -> tuple[subprocess.Popen[bytes], str]:
    """LiteLLM's proxy with its defaults and one worker, in front of the fleet's OpenAI listener.

    It refuses to start without a master key (1.108+), so the run makes a random one and the
    load sends it, as a deployment would."""
    cfg = run / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {model}\n"
        f"    litellm_params: {{model: openai/{model}, api_base: {api_base}, api_key: none}}\n"
        "litellm_settings: {telemetry: false}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = f"sk-{uuid.uuid4().hex}"
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    log = (run / "litellm.log").open("wb")
    argv = [str(litellm_bin()), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*argv, "--num_workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (run / "litellm.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"litellm exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                HEADERS[f"{url}/v1/chat/completions"] = {"Authorization": f"Bearer {key}"}
                return proc, f"{url}/v1/chat/completions"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("litellm did not become ready in 180 s")


def body(model: str, text: str, *, stream: bool = False) -> bytes:
    req: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    if stream:
        req["stream"] = True
    return orjson.dumps(req)


Target = Callable[..., tuple[str, bytes]]
"""``(text, stream=False) -> (url, body)``: where a target sends a prompt, and what."""


def to(url: str, model: str) -> Target:
    """A target: ``model`` asked at ``url``."""
    return lambda text, stream=False: (url, body(model, text, stream=stream))


Payload = bytes | Callable[[int], bytes]
"""A request body, or a body per request (``payload(i)`` for the ``i``-th: :func:`unique`)."""
_numbers = itertools.count()


def numbered(text: str) -> str:
    """``text`` made its own: a request number appended, never repeated within a run, so that its
    decision misses the scorer's decision memo and analysis cache."""
    return f"{text} (request {next(_numbers)})"


def unique(make: Target, text: str, *, stream: bool = False) -> Callable[[int], bytes]:
    """A body per request for ``make``, each text its own (:func:`numbered`)."""
    return lambda _: make(numbered(text), stream)[1]


def aimed(make: Target, text: str, *, repeat: bool, stream: bool = False) -> tuple[str, Payload]:
    """Where ``make`` sends ``text``, and what: the same body every time (``repeat``), else a body
    per request with its own text (:func:`unique`)."""
    url, payload = make(text, stream)
    return url, payload if repeat else unique(make, text, stream=stream)


def _bodies(payload: Payload, requests: int) -> list[bytes]:
    """Every request's body, built before the clock starts."""
    return [payload(i) for i in range(requests)] if callable(payload) else [payload] * requests


async def drive_stream(url: str, payload: Payload, *, requests: int) -> tuple[list[float], list[float], int]:
    """Streamed requests one at a time: time to the first body byte and to the end of the stream
    (the fleet sends one SSE event per token, as real servers do)."""
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for data in _bodies(payload, requests):
            t0 = time.perf_counter()
            async with session.post(url, data=data, headers=headers(url)) as r:
                first = True
                async for _chunk, _ in r.content.iter_chunks():
                    if first:
                        ttfb.append(time.perf_counter() - t0)
                        first = False
                errors += r.status != 200 or first
            total.append(time.perf_counter() - t0)
    return ttfb, total, errors


async def drive_stream_pairs(
    a: tuple[str, Payload], b: tuple[str, Payload], *, requests: int
) -> tuple[list[float], list[float], int]:
    """Streamed requests one at a time, alternately through two targets (each pair's first one
    alternating): per pair, the TTFB of ``a`` less ``b``'s and the same for the whole stream. Both
    run through the same moments of the box's load, which the per-target rounds do not."""
    d_ttfb: list[float] = []
    d_total: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(url: str, payload: bytes) -> tuple[float, float]:
            nonlocal errors
            t0 = time.perf_counter()
            ttfb = 0.0
            async with session.post(url, data=payload, headers=headers(url)) as r:
                first = True
                async for _chunk, _ in r.content.iter_chunks():
                    if first:
                        ttfb = time.perf_counter() - t0
                        first = False
                errors += r.status != 200 or first
            return ttfb, time.perf_counter() - t0

        for i, (body_a, body_b) in enumerate(zip(_bodies(a[1], requests), _bodies(b[1], requests), strict=True)):
            if i % 2:
                tb, wb = await one(b[0], body_b)
                ta, wa = await one(a[0], body_a)
            else:
                ta, wa = await one(a[0], body_a)
                tb, wb = await one(b[0], body_b)
            d_ttfb.append(ta - tb)
            d_total.append(wa - wb)
    return d_ttfb, d_total, errors


async def drive(url: str, payload: Payload, *, concurrency: int, requests: int) -> tuple[list[float], float, int]:
    """``requests`` POSTs of ``payload`` from ``concurrency`` workers: the latencies, the wall
    time and the number of non-200 replies."""
    latencies: list[float] = []
    errors = 0
    bodies = _bodies(payload, requests)
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                data = bodies[remaining]
                t0 = time.perf_counter()
                async with session.post(url, data=data, headers=headers(url)) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start, errors


PASS_THROUGHS = {"aiohttp": "proxy", "fastapi": "fastapi-proxy"}
"""The pass-throughs of ``bench/overhead.py`` (its ``--role``s), started in front of the fleet:
``aiohttp`` is the bare one the c16 target is judged against, ``fastapi`` the FastAPI one."""
BARE = "aiohttp"


def start_pass_throughs(stack: contextlib.ExitStack, upstream: str) -> dict[str, tuple[str, int]]:
    """``bench/overhead.py``'s pass-through proxies in front of ``upstream``: name -> (URL, pid)."""
    out = {}
    for name, role in PASS_THROUGHS.items():
        port = free_port()
        proc = stack.enter_context(
            process(self_cmd("--role", role, "--port", str(port), "--upstream", upstream), port=port)
        )
        out[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)
    return out


def start_gateway_b(rs: RealStack, python: str) -> tuple[str, int]:
    """A second gateway on the same stack, run by another checkout's Python (its venv imports
    its own sources): the A/B of two gateway versions in the same rounds. URL and pid."""
    port = free_port()
    env = rs.stack.env_for("gateway") | {"TURNOUT_GATEWAY__PORT": str(port)}
    proc = rs.stack._spawn("gateway-b", [python, "-m", "turnout.gateway"], env)
    wait_port("127.0.0.1", port, timeout=60)
    return f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300, help="requests per point and round")
    ap.add_argument("--peers", action="store_true", help="also LiteLLM's proxy (own venv under .run/peers)")
    ap.add_argument(
        "--gateway-b",
        metavar="PYTHON",
        help="also a second gateway run by this interpreter (another checkout's .venv/bin/python), "
        "target 'auto-b': before/after in the same rounds",
    )
    ap.add_argument(
        "--ab-only",
        action="store_true",
        help="with --gateway-b: only direct, auto and auto-b (more rounds in the time)",
    )
    ap.add_argument(
        "--repeat",
        action="store_true",
        help="each prompt's text unchanged from request to request: the scorer's decisions are decision-memo "
        "hits after the first (by default each request's text is its own: every decision made in full)",
    )
    ap.add_argument(
        "--stream-only",
        action="store_true",
        help="only the streaming rounds (time to first byte, CPU and wake-ups per streamed request)",
    )
    args = ap.parse_args()
    print(host_line(), flush=True)
    peer: subprocess.Popen[bytes] | None = None
    with real_stack("bench-stack") as rs, contextlib.ExitStack() as procs:
        via = f"{rs.urls.gateway}/v1/chat/completions"
        named = rs.named
        targets = {
            "direct": to(rs.direct, named),
            "auto": to(via, "turnout/auto"),
            "named": to(via, named),
        }
        gw = rs.pids("gateway")[0]
        fronts = {"auto": gw, "named": gw}
        if args.ab_only:
            del targets["named"]
        for name, (url, pid) in ({} if args.ab_only else start_pass_throughs(procs, rs.direct)).items():
            targets[name] = to(url, named)
            fronts[name] = pid
        if args.gateway_b:
            url_b, fronts["auto-b"] = start_gateway_b(rs, args.gateway_b)
            targets["auto-b"] = to(url_b, "turnout/auto")
        try:
            if args.peers:
                peer, peer_url = start_litellm(rs.run, named, rs.fleet.openai_url)
                targets["litellm"] = to(peer_url, named)
                fronts["litellm"] = peer.pid
            rc = asyncio.run(measure(args, targets, fronts, rs.pids("scorer")[0], rs.redis.url))
            print_decision_memo(rs.urls.ops.get("scorer"))
            return rc
        finally:
            if peer is not None:
                peer.terminate()
                try:
                    peer.wait(10)
                except subprocess.TimeoutExpired:
                    peer.kill()


def print_decision_memo(*ops_urls: str | None) -> None:
    """The scorers' decision-memo hit rate over the run (their /metrics, summed; ``scorer/caches.py``)."""
    urls = [u for u in ops_urls if u is not None]
    if not urls:
        return
    got = {"hit": 0.0, "miss": 0.0}
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
            if family.name == "turnout_scorer_decision_memo_lookups":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        got[sample.labels["outcome"]] += sample.value
    total = got["hit"] + got["miss"]
    print(f"scorer decision memo: {got['hit']:.0f} hits / {total:.0f} lookups ({got['hit'] / max(total, 1):.1%})")


@dataclass
class Sample:
    """One point of one round: wall figures, then the load-independent counters per request."""

    p50_ms: float
    rps: float
    front_cpu_us: float = 0.0
    """The gateway's (or the pass-through's, or the peer proxy's) CPU per request."""
    scorer_cpu_us: float = 0.0
    redis_ops: float = 0.0
    front_wakeups: float = 0.0
    scorer_wakeups: float = 0.0


@dataclass
class StreamSample:
    """Streaming at c1, one round: time to the first body byte, to the end, and per request the
    front process's CPU and wake-ups."""

    ttfb_ms: float
    whole_ms: float
    front_cpu_us: float
    front_wakeups: float


@dataclass
class PairedRound:
    """``--stream-only`` with ``--gateway-b``, one round of streams alternating between the two
    gateways: per pair the differences (this - b), and each gateway's CPU and wake-ups per stream
    over the same stretch of time."""

    d_ttfb_ms: list[float]
    d_whole_ms: list[float]
    cpu_us: tuple[float, float]
    wakeups: tuple[float, float]


async def counted(run: Awaitable[T], pids: tuple[int, int], redis_url: str) -> tuple[T, Counters, Counters, int]:
    """Run a point, then return its result with the CPU and wake-ups of the front process and the
    scorer, and the Redis commands, over it (after a short settle: what the requests queued off the
    path — events, in-flight counts — counts to them)."""
    front0, sc0, ops0 = proc_counters(pids[0]), proc_counters(pids[1]), redis_calls(redis_url)
    result = await run
    await asyncio.sleep(SETTLE_S)
    front, sc = proc_counters(pids[0]) - front0, proc_counters(pids[1]) - sc0
    ops = sum(calls_between(ops0, redis_calls(redis_url)).values())
    return result, front, sc, ops


def rotated(targets: dict[str, Target], rnd: int) -> list[tuple[str, Target]]:
    """The targets in this round's order: each round starts one further along, so that no target
    always runs right after another (with a fixed order, direct then this gateway then the other,
    one pair of gateways measured 1.04-1.10 in CPU per request; visited in rotation, 0.96-0.97)."""
    items = list(targets.items())
    k = rnd % len(items)
    return items[k:] + items[:k]


async def measure(
    args: argparse.Namespace,
    targets: dict[str, Target],
    fronts: dict[str, int],
    sc: int,
    redis_url: str,
) -> int:
    """``fronts``: the process each target (but direct) goes through; ``sc``: the scorer's pid."""
    results: dict[tuple[str, str, int], list[Sample]] = {}
    streams: dict[str, list[StreamSample]] = {}
    paired: list[PairedRound] = []
    for text in (SHORT, CODE):  # warm-up: analysis cache, embedding word cache, connections
        for make in targets.values():
            await drive(*aimed(make, text, repeat=args.repeat), concurrency=4, requests=100)
    for rnd in range(args.rounds):
        for label, text in () if args.stream_only else (("short", SHORT), ("2 KB code", CODE)):
            for c in (1, 16):
                for name, make in rotated(targets, rnd):
                    (lat, wall, errors), fc, scc, ops = await counted(
                        drive(*aimed(make, text, repeat=args.repeat), concurrency=c, requests=args.requests),
                        (fronts.get(name, fronts["auto"]), sc),
                        redis_url,
                    )
                    n = len(lat)
                    if errors:
                        print(f"round {rnd}: {errors} errors on {name} {label} c={c}")
                    results.setdefault((label, name, c), []).append(
                        Sample(
                            statistics.median(lat) * 1000,
                            n / wall,
                            fc.cpu_s / n * 1e6,
                            scc.cpu_s / n * 1e6,
                            ops / n,
                            fc.wakeups / n,
                            scc.wakeups / n,
                        )
                    )
        for name, make in rotated(targets, rnd):  # streaming, short prompt, c=1: per-token chunks
            (ttfb, total, errors), fc, _, _ = await counted(
                drive_stream(*aimed(make, SHORT, repeat=args.repeat, stream=True), requests=max(1, args.requests // 2)),
                (fronts.get(name, fronts["auto"]), sc),
                redis_url,
            )
            if errors:
                print(f"round {rnd}: {errors} errors on {name} streaming")
            n = len(total)
            streams.setdefault(name, []).append(
                StreamSample(
                    statistics.median(ttfb) * 1000, statistics.median(total) * 1000, fc.cpu_s / n * 1e6, fc.wakeups / n
                )
            )
        if args.stream_only and "auto-b" in fronts:
            paired.append(await paired_round(targets, fronts, requests=max(1, args.requests // 2), repeat=args.repeat))
    print_report(args, list(targets), fronts, sc, results, streams, paired)
    return 0


def print_report(
    args: argparse.Namespace,
    targets: list[str],
    fronts: dict[str, int],
    sc: int,
    results: dict[tuple[str, str, int], list[Sample]],
    streams: dict[str, list[StreamSample]],
    paired: list[PairedRound],
) -> None:
    if args.stream_only:
        print_streams(args, streams)
    else:
        print_tables(args, targets, results, streams)
    print(f"RSS: gateway {rss_mib(fronts['auto']):.0f} MiB, scorer {rss_mib(sc):.0f} MiB", end="")
    print(f", litellm {rss_mib(fronts['litellm']):.0f} MiB" if "litellm" in fronts else "")
    if "litellm" in fronts:
        print_peer_ratios(results, streams)
    if "auto-b" in fronts:
        print_ab(results, streams, stream_only=args.stream_only)
    if paired:
        print_paired(paired)


async def paired_round(
    targets: dict[str, Target], fronts: dict[str, int], *, requests: int, repeat: bool = False
) -> PairedRound:
    """One round of streams alternating between ``auto`` and ``auto-b``, with both gateways'
    counters over it (``repeat``: the same text every time, else each request's its own)."""
    pa, pb = fronts["auto"], fronts["auto-b"]
    a0, b0 = proc_counters(pa), proc_counters(pb)
    d_ttfb, d_total, errors = await drive_stream_pairs(
        aimed(targets["auto"], SHORT, repeat=repeat, stream=True),
        aimed(targets["auto-b"], SHORT, repeat=repeat, stream=True),
        requests=requests,
    )
    await asyncio.sleep(SETTLE_S)
    a, b = proc_counters(pa) - a0, proc_counters(pb) - b0
    if errors:
        print(f"{errors} errors in the paired streams")
    return PairedRound(
        [x * 1000 for x in d_ttfb],
        [x * 1000 for x in d_total],
        (a.cpu_s / requests * 1e6, b.cpu_s / requests * 1e6),
        (a.wakeups / requests, b.wakeups / requests),
    )


def print_paired(rounds: list[PairedRound]) -> None:
    """The streams alternating request by request between the two gateways: the median of every
    pair's difference, and per round the CPU ratio and the wake-up difference (then medians)."""
    med = statistics.median
    n = sum(len(r.d_ttfb_ms) for r in rounds)
    cpu = [r.cpu_us[0] / r.cpu_us[1] for r in rounds]
    print(f"\nA/B streams alternating request by request, {len(rounds)} rounds, {n} pairs (this - b):")
    print(
        f"  TTFB {med(x for r in rounds for x in r.d_ttfb_ms):+.3f} ms, whole stream "
        f"{med(x for r in rounds for x in r.d_whole_ms):+.3f} ms (medians over pairs)"
    )
    print(
        f"  gateway CPU per stream {med(r.cpu_us[0] for r in rounds):.0f} vs {med(r.cpu_us[1] for r in rounds):.0f} µs,"
        f" ratio {med(cpu):.3f} (rounds: {' '.join(f'{x:.2f}' for x in cpu)})"
    )
    print(
        f"  wake-ups per stream {med(r.wakeups[0] for r in rounds):.2f} vs {med(r.wakeups[1] for r in rounds):.2f},"
        f" difference {med(r.wakeups[0] - r.wakeups[1] for r in rounds):+.2f}"
    )


def print_ab(
    results: dict[tuple[str, str, int], list[Sample]],
    streams: dict[str, list[StreamSample]],
    *,
    stream_only: bool = False,
) -> None:
    """This checkout's gateway (``auto``) against ``--gateway-b`` (``auto-b``), both through
    ``turnout/auto`` on one stack in the same rounds: per point, medians over rounds of the paired
    differences (this - b) and of the CPU ratio."""
    med = statistics.median
    print("\nA/B: auto (this checkout) - auto-b (--gateway-b), per round then median; CPU as a ratio")
    print(
        f"{'point':<16}{'p50 ms':>8}{'gw CPU':>8}{'gw wake':>9}{'sc CPU':>8}{'redis ops':>10}   rounds (gw CPU ratio)"
    )
    for label in () if stream_only else ("short", "2 KB code"):
        for c in (1, 16):
            pairs = list(zip(results[(label, "auto", c)], results[(label, "auto-b", c)], strict=True))
            cpu = [a.front_cpu_us / b.front_cpu_us for a, b in pairs]
            print(
                f"{label + ' c' + str(c):<16}{med(a.p50_ms - b.p50_ms for a, b in pairs):>+8.3f}{med(cpu):>8.3f}"
                f"{med(a.front_wakeups - b.front_wakeups for a, b in pairs):>+9.2f}"
                f"{med(a.scorer_cpu_us / b.scorer_cpu_us for a, b in pairs):>8.3f}"
                f"{med(a.redis_ops - b.redis_ops for a, b in pairs):>+10.2f}   {' '.join(f'{x:.2f}' for x in cpu)}"
            )
    pairs_s = list(zip(streams["auto"], streams["auto-b"], strict=True))
    cpu = [a.front_cpu_us / b.front_cpu_us for a, b in pairs_s]
    print(
        f"{'stream c1 TTFB':<16}{med(a.ttfb_ms - b.ttfb_ms for a, b in pairs_s):>+8.3f}{med(cpu):>8.3f}"
        f"{med(a.front_wakeups - b.front_wakeups for a, b in pairs_s):>+9.2f}{'':>18}   "
        + " ".join(f"{x:.2f}" for x in cpu)
    )
    print(f"{'stream c1 whole':<16}{med(a.whole_ms - b.whole_ms for a, b in pairs_s):>+8.3f}")


def _ratio(results: dict[tuple[str, str, int], list[Sample]], label: str, name: str, base: str, c: int = 16) -> float:
    """Median over rounds of ``name``'s req/s over ``base``'s (each round against its own)."""
    pairs = zip(results[(label, name, c)], results[(label, base, c)], strict=True)
    return statistics.median(a.rps / b.rps for a, b in pairs)


def _added(results: dict[tuple[str, str, int], list[Sample]], label: str, name: str, base: str = "direct") -> float:
    """Median over rounds of ``name``'s p50 @c1 less ``base``'s (each round against its own)."""
    pairs = zip(results[(label, name, 1)], results[(label, base, 1)], strict=True)
    return statistics.median(a.p50_ms - b.p50_ms for a, b in pairs)


def print_tables(
    args: argparse.Namespace,
    targets: list[str],
    results: dict[tuple[str, str, int], list[Sample]],
    streams: dict[str, list[StreamSample]],
) -> None:
    med = statistics.median
    passes = [p for p in PASS_THROUGHS if p in targets]
    print(f"\nreal stack, {args.rounds} interleaved rounds x {args.requests} requests; medians over rounds")
    print(
        "wall: p50 and added latency @c1 (over direct), req/s @c16 and its ratio to direct and to each "
        "pass-through (aiohttp: the bare one; fastapi: FastAPI on uvicorn); per request (c1 and c16 "
        "points): CPU of the front process (gateway, pass-through or peer) and the scorer, Redis "
        "commands, loop wake-ups"
    )
    head = f"{'prompt':<10}{'target':<8}{'p50@c1 ms':>10}{'added':>7}{'req/s@c16':>10}{'vs dir':>7}"
    head += "".join(f"{'vs ' + p[:4]:>8}" for p in passes)
    print(head + f"{'CPU µs':>8}{'sc CPU µs':>10}{'redis ops':>10}{'wake':>6}{'sc wake':>8}")
    for label in ("short", "2 KB code"):
        for name in targets:
            r1, r16 = results[(label, name, 1)], results[(label, name, 16)]
            line = f"{label:<10}{name:<8}{med(x.p50_ms for x in r1):>10.2f}{_added(results, label, name):>7.2f}"
            line += f"{med(x.rps for x in r16):>10.0f}{_ratio(results, label, name, 'direct'):>7.2f}"
            line += "".join(f"{_ratio(results, label, name, p):>8.2f}" for p in passes)
            both = r1 + r16
            if name != "direct":
                line += f"{med(x.front_cpu_us for x in both):>8.0f}"
                if name in PASS_THROUGHS or name == "litellm":
                    line += f"{'':>20}{med(x.front_wakeups for x in both):>6.2f}"
                else:
                    line += (
                        f"{med(x.scorer_cpu_us for x in both):>10.0f}{med(x.redis_ops for x in both):>10.2f}"
                        f"{med(x.front_wakeups for x in both):>6.2f}{med(x.scorer_wakeups for x in both):>8.2f}"
                    )
            print(line)
    print_streams(args, streams)
    if BARE in targets:
        print_targets(results, streams)


def print_streams(args: argparse.Namespace, streams: dict[str, list[StreamSample]]) -> None:
    """Per target, streaming at c1: TTFB and the whole stream (each with what it adds over
    direct, paired per round), and the front process's CPU and wake-ups per streamed request."""
    med = statistics.median
    print(f"\nstreaming, short prompt @c1, one SSE event per token; {args.rounds} rounds, medians over rounds")
    print(f"{'target':<8}{'TTFB ms':>10}{'added':>8}{'whole ms':>10}{'added':>8}{'CPU µs':>8}{'wake':>6}")
    sbase = streams["direct"]
    for name, rows in streams.items():
        ttfb = med(x.ttfb_ms for x in rows)
        whole = med(x.whole_ms for x in rows)
        added_t = med(a.ttfb_ms - b.ttfb_ms for a, b in zip(rows, sbase, strict=True))
        added_w = med(a.whole_ms - b.whole_ms for a, b in zip(rows, sbase, strict=True))
        cpu = (
            ""
            if name == "direct"
            else f"{med(x.front_cpu_us for x in rows):>8.0f}{med(x.front_wakeups for x in rows):>6.2f}"
        )
        print(f"{name:<8}{ttfb:>10.2f}{added_t:>8.2f}{whole:>10.2f}{added_w:>8.2f}{cpu}")


def print_targets(results: dict[tuple[str, str, int], list[Sample]], streams: dict[str, list[StreamSample]]) -> None:
    """Issue 17's targets for ``turnout/auto`` (wall-clock: a busy machine inflates them). Added
    latency is over direct, with the bare pass-through's own added p50 (the floor a Python proxy
    reaches) beside it; throughput @c16 is judged against the bare (aiohttp) pass-through."""
    med = statistics.median
    ttfb = med(a.ttfb_ms - b.ttfb_ms for a, b in zip(streams["auto"], streams["direct"], strict=True))
    floor_t = med(a.ttfb_ms - b.ttfb_ms for a, b in zip(streams[BARE], streams["direct"], strict=True))
    checks = [
        ("added p50@c1 short", _added(results, "short", "auto"), "<=", 1.5, "ms", _added(results, "short", BARE)),
        (
            "added p50@c1 2 KB",
            _added(results, "2 KB code", "auto"),
            "<=",
            2.5,
            "ms",
            _added(results, "2 KB code", BARE),
        ),
        ("req/s@c16 / bare pass-through, short", _ratio(results, "short", "auto", BARE), ">=", 0.5, "", None),
        ("req/s@c16 / bare pass-through, 2 KB", _ratio(results, "2 KB code", "auto", BARE), ">=", 0.5, "", None),
        ("streaming TTFB added", ttfb, "<=", 1.5, "ms", floor_t),
    ]
    print(f"targets (turnout/auto, wall clock; the bare pass-through is {BARE}'s, its own figure in brackets):")
    for name, value, op, goal, unit, floor in checks:
        ok = value <= goal if op == "<=" else value >= goal
        own = "" if floor is None else f" [pass-through {floor:.2f}{unit}]"
        print(f"  {name} {value:.2f}{unit} ({op} {goal}: {'met' if ok else 'missed'}){own}")
    r16 = ", ".join(
        f"{label} {_ratio(results, label, 'auto', 'direct'):.2f} of direct, "
        f"{_ratio(results, label, 'auto', 'fastapi'):.2f} of fastapi"
        for label in ("short", "2 KB code")
    )
    print(f"  (req/s@c16 of turnout/auto: {r16})")


def print_peer_ratios(
    results: dict[tuple[str, str, int], list[Sample]], streams: dict[str, list[StreamSample]]
) -> None:
    """Turnout against LiteLLM, from the same interleaved rounds (each round's own direct baseline)."""

    def added(rows: list[Sample], base: list[Sample]) -> float:
        return statistics.median(a.p50_ms - b.p50_ms for a, b in zip(rows, base, strict=True))

    def added_ttfb(rows: list[StreamSample], base: list[StreamSample]) -> float:
        return statistics.median(a.ttfb_ms - b.ttfb_ms for a, b in zip(rows, base, strict=True))

    print("\nTurnout vs LiteLLM (same rounds): added latency ratio (lower is better), throughput ratio")
    for name in ("auto", "named"):
        for label in ("short", "2 KB code"):
            base = results[(label, "direct", 1)]
            ours, theirs = added(results[(label, name, 1)], base), added(results[(label, "litellm", 1)], base)
            rps = statistics.median(
                a.rps / b.rps for a, b in zip(results[(label, name, 16)], results[(label, "litellm", 16)], strict=True)
            )
            both, peer = results[(label, name, 1)] + results[(label, name, 16)], results[(label, "litellm", 1)]
            peer = peer + results[(label, "litellm", 16)]
            cpu = statistics.median(x.front_cpu_us + x.scorer_cpu_us for x in both)
            peer_cpu = statistics.median(x.front_cpu_us for x in peer)
            print(
                f"  {name:<6}{label:<10} added p50@c1 {ours:6.2f} vs {theirs:6.2f} ms "
                f"(x{ours / theirs:.2f}); req/s@c16 x{rps:.1f}; CPU/request gateway+scorer {cpu:.0f} "
                f"vs {peer_cpu:.0f} µs (x{cpu / peer_cpu:.2f})"
            )
        ours, theirs = added_ttfb(streams[name], streams["direct"]), added_ttfb(streams["litellm"], streams["direct"])
        print(f"  {name:<6}streaming TTFB added {ours:6.2f} vs {theirs:6.2f} ms (x{ours / theirs:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
