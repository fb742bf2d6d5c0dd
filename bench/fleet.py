"""The fleet bench: does routing by quality × VRAM residency × load beat VRAM-blind routing on a
multi-host fleet? ``make bench-fleet`` (``python bench/fleet.py``).

**What is real and what is simulated.** The decisions are made by Turnout's own code, unchanged:
the scorer's :class:`~turnout.scorer.engine.RoutingEngine`, called as the scorer's RPC handler
calls it (``route``: prompt analysis, filters, every scoring term, the catalog table and its
fleet join, the recent-use bookkeeping of the diversity term) and the VRAM planner
(:func:`turnout.scorer.vram.plan` over :func:`~turnout.scorer.vram.host_vram` views built from
the :class:`HostStateV1` a gpu-agent publishes). The fleet, the gateway's forwarding and time are
simulated: a discrete-event simulation in virtual seconds (so a 10-minute trace takes seconds of
wall time and the machine's load does not change the result) of

* hosts — 4 × 24 GiB (memory bandwidth 1 TB/s) and 2 × 80 GiB (2 TB/s), one Ollama backend each;
* a dozen models, 1B to 70B, Q4: need ``0.6 GiB/B + 0.5 GiB``, load ``1 s + 0.35 s/GiB``, decode
  ``0.7 × bandwidth / size`` tokens/s shared by the requests running on the host
  (``/ n_active^0.7``), prefill 20× decode; every model installed on every host it fits;
* Ollama's scheduler as ``server/sched.go`` has it — one queue per host, served in order; a
  model loads on its first request, serves 4 requests in parallel (``OLLAMA_NUM_PARALLEL``; more
  wait at the runner), stays ``keep_alive`` (300 s) after its last request; at most 3 models
  loaded per GPU (``OLLAMA_MAX_LOADED_MODELS``' default); a load that does not fit (bytes or
  count) unloads idle models, least recently used first (an *eviction*; Ollama takes any idle
  one), else **the whole queue waits** until one goes idle (head-of-line: requests for loaded
  models behind it wait too); one load per GPU at a time (the requests behind it pass); a load
  runs under the context of the request that started it, so **it stops when that request is
  given up** (the others waiting on it get an error); more than 512 queued: 503 at once;
* the gateway (Turnout rows) — streamed requests; an attempt that has no first token within the
  gateway's first-byte bound (``ReadBounds`` from ``upstream_limits.py`` with the gateway's
  defaults and the catalog's profile: 10 s for every model here; a candidate whose model is not
  loaded on its host gets the planner's expected load time on top, one with requests ahead of it
  their expected wait, together at most ``load_wait_max_s``, 60 s, as ``CandidateV1.load_s`` and
  ``wait_s`` carry them to the gateway) is given up and the next
  candidate tried, three at most (``max_attempts``); after that the request **fails** and counts
  as an infinite TTFT. The baselines are not Turnout's gateway: their requests wait as long as
  it takes, one candidate, no failover;
* the planner's orders, carried out as ``vram_actions.py`` does through the agents: an unload of
  an idle model at once, of a busy one refused (the sequence ends, and the request goes to the
  first candidate that needs no orders, as ``VramCoordinator.route``); a load is one more
  request in Ollama's queue, bound to no client;
* what the scorer sees — the agents' state (loaded models, free memory) and the gateways'
  in-flight counts as of the last refresh, every ``--refresh-s`` (1 s), plus the planner's own
  reservations for loads it started (as ``vram_routing.py`` keeps them), and each candidate's
  expected wait — a slot, and its backend's queue behind a load (``RoutingEngine.expected_waits``,
  the planner's admission step and the speed term's ``wait``); the candidate order the gateway
  tries is ``vram_reply.attempt_order``.

**The trace** (seeded): arrivals at ``--rate`` req/s (0.35: the fleet's capacity, the most at
which Turnout fails under 1 % on seeds 1-3; 2.5 is about 7x that) with 20-second bursts at 4× every 2 minutes;
categories general 35 %, coding 25 %, reasoning 15 %, creative 10 %, summarisation 10 %,
translation 5 %; levels simple 50 %, medium 35 %, hard 15 % (prompt text written to read as such,
then analysed by the scorer as any prompt); output tokens 60 / 250 / 600 (±50 %). Each request
also names the model a client application would hard-code (coding → qwen2.5-coder:32b,
hard reasoning → llama3.3:70b, else llama3.1:8b), for the router that needs one.

**Quality**: a fixed ground truth per (model, category, level) — larger is better, more so on
hard prompts; coder models +0.08 on coding and −0.04 elsewhere. The catalog the scorer reads
carries the per-category means (what profiling measures). Reported: the chosen model's quality
relative to the best model for that prompt (1.0 = always the best). Also the time to each
request's whole reply (p50 / p90; a failed request infinite). ``--max-tokens F``: each request asks
for at most ``F`` times its level's average reply (the speed term then times that reply where it
is shorter than ``wait_tokens``); the replies are as without it.

**Policies on the same trace**: ``turnout`` (as configured: quality preference 0.65, the default);
``vram-blind`` (the same engine with the resident, no-room, free-VRAM and busy weights at 0, the
speed term without the queues behind loads (``queue_aware`` off) and no planner: every replica
of a model scores the same, so the first listed gets every request and the others only the
gateway's retries); ``vram-blind+busy`` (the busy term kept: load-balanced
but blind to residency and memory); ``rules+rr`` (the smallest
model meeting the category × level minimum size — a coder for coding — and round-robin over its
replicas: SmarterRouter-style); ``least-busy`` (the requested model, on its replica with the fewest
requests in flight: LiteLLM's strategy); and Turnout again with the clients asking for each
quality preference of ``--quality`` (0.3 and 0.8).

    .venv/bin/python bench/fleet.py [--minutes 10] [--rate 0.35] [--seed 1] [--legacy-planner]
        [--read-min-s 10] [--load-wait-max-s 60] [--max-loaded 3] [--no-failover] [--decide-only]
        [--weights busy=0.3,...] [--policies turnout,vram-blind] [--timings FILE] [--load 0.5,0.05] [-v]

``--timings``: the loads, decode rate and prefill ratio a ``bench/llama_timings.py`` run measured
on real llama.cpp servers (:class:`SimTimings`); ``--load``: a what-if load line. Either way the
planner expects the same load times.

Columns: TTFT percentiles over every request (a failed one is ``inf``); cold loads (started,
whether or not they completed); evictions (unloads to make room, Ollama's or ordered);
expiries (keep-alive); retries (attempts after the first); failed (no first token after three
attempts); req/s (completed per second of the makespan); q served (mean quality over the
requests served, of the model that served them — it leaves the failed ones out, so failing what a
model cannot serve in time raises it); q deliv (delivered quality: the mean over every request,
a failed one counting 0); decide µs (wall time per decision on this machine). The goal lines
compare Turnout with VRAM-blind and both baselines under both quality definitions.

(One file past 500 lines on purpose: a script run by path, whose fleet model, trace, routers and
report are read together; nothing imports it.)
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.common.schemas.route import RouteRequestV1
from turnout.gateway.upstream_limits import ReadBounds
from turnout.scorer.engine import EngineConfig, RoutingEngine
from turnout.scorer.fleet import FleetState
from turnout.scorer.scoring import ScoringConfig, Weights
from turnout.scorer.scoring_config import DEFAULT_MIN_SIZE_B
from turnout.scorer.vram import DecisionKind, HostVram, Option, VramConfig, host_vram, plan
from turnout.scorer.vram_reply import attempt_order, load_estimates

GiB = 2**30
CATEGORIES = {
    "general": 0.35,
    "coding": 0.25,
    "reasoning": 0.15,
    "creative": 0.10,
    "summarisation": 0.10,
    "translation": 0.05,
}
LEVELS = {"simple": 0.50, "medium": 0.35, "hard": 0.15}
OUT_TOKENS = {"simple": 60, "medium": 250, "hard": 600}
PROMPT_TOKENS = {"simple": 30, "medium": 300, "hard": 900}
PARALLEL = 4  # OLLAMA_NUM_PARALLEL
MAX_LOADED = 3  # OLLAMA_MAX_LOADED_MODELS: 3 per GPU by default
MAX_QUEUE = 512  # OLLAMA_MAX_QUEUE: beyond it, 503 at once
KEEP_ALIVE_S = 300.0  # OLLAMA_KEEP_ALIVE
BUDGET = 0.95
PROBE_TOKENS = 100
"""Prompt length of the profiler's TTFT probe (warm model, nothing else running)."""


@dataclass(frozen=True, slots=True)
class SimTimings:
    """How long a load takes and how fast a model decodes and prefills: the model above by
    default, or what ``bench/llama_timings.py`` measured on real llama.cpp servers (``--timings``)."""

    load_fixed_s: float = 1.0
    load_s_per_gib: float = 0.35
    decode_efficiency: float = 0.7
    """Tokens/s = this × the host's memory bandwidth (GB/s) / the model's size (GB)."""
    prefill_ratio: float = 20.0
    """Prefill tokens/s per decode token/s."""
    source: str = "the bench's model"

    @classmethod
    def measured(cls, path: str) -> SimTimings:
        """The fit of a ``bench/llama_timings.py`` run: its load line as measured, its decode rate
        (tokens/s × GB) for the 80 GiB hosts (2,000 GB/s here; the 24 GiB ones half of it), its
        prefill/decode ratio."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        fit = data["fit"]
        return cls(
            load_fixed_s=float(fit["load_fixed_s"]),
            load_s_per_gib=float(fit["load_s_per_gib"]),
            decode_efficiency=float(fit["decode_gb_tokens_per_s"]) / HOST80_BANDWIDTH_GBS,
            prefill_ratio=float(fit["prefill_ratio"]),
            source=f"measured: {path} ({data.get('device', '?')}, {data.get('server', '?')})",
        )


HOST80_BANDWIDTH_GBS = 2000.0
TIMINGS = SimTimings()
"""What this run's fleet does (``main`` replaces it with ``--timings``)."""


@dataclass(frozen=True, slots=True)
class SimModel:
    name: str
    params_b: float
    coder: bool = False

    @property
    def vram(self) -> int:
        return int((0.6 * self.params_b + 0.5) * GiB)

    @property
    def load_s(self) -> float:
        return TIMINGS.load_fixed_s + TIMINGS.load_s_per_gib * self.vram / GiB

    def quality(self, category: str, level: str) -> float:
        size = min(1.0, math.log2(self.params_b / 0.5) / 7.2)  # 0.5B → 0, 70B → ~1
        need = {"simple": 0.15, "medium": 0.45, "hard": 0.8}[level]
        q = 0.45 + 0.5 * size - 0.6 * max(0.0, need - size)
        if self.coder:
            q += 0.08 if category == "coding" else -0.04
        return max(0.02, min(1.0, q))


MODELS = (
    SimModel("llama3.2:1b", 1.2),
    SimModel("qwen2.5:3b", 3.0),
    SimModel("phi3:3.8b", 3.8),
    SimModel("qwen2.5-coder:7b", 7.0, coder=True),
    SimModel("llama3.1:8b", 8.0),
    SimModel("gemma2:9b", 9.0),
    SimModel("mistral-nemo:12b", 12.0),
    SimModel("qwen2.5:14b", 14.0),
    SimModel("gemma2:27b", 27.0),
    SimModel("qwen2.5-coder:32b", 32.0, coder=True),
    SimModel("qwen2.5:32b", 32.0),
    SimModel("llama3.3:70b", 70.0),
)
BY_NAME = {m.name: m for m in MODELS}


@dataclass(frozen=True, slots=True)
class SimHost:
    name: str
    memory: int
    bandwidth_gbs: float

    def tokens_per_s(self, m: SimModel) -> float:
        return TIMINGS.decode_efficiency * self.bandwidth_gbs / (m.vram / 1e9)


HOSTS = tuple(SimHost(f"h24-{i}", 24 * GiB, HOST80_BANDWIDTH_GBS / 2) for i in range(1, 5)) + tuple(
    SimHost(f"h80-{i}", 80 * GiB, HOST80_BANDWIDTH_GBS) for i in range(1, 3)
)


def installed(h: SimHost) -> list[SimModel]:
    return [m for m in MODELS if m.vram <= BUDGET * h.memory]


def catalog(measured_prefill: bool = False) -> CatalogSnapshotV1:
    """What the scorer's catalog holds: sizes, measured speed (on a 24 GiB host where it fits),
    per-category quality means (profiles), replicas on every host the model fits; with
    ``measured_prefill`` also the prefill rate the profiler measures (20 × decode, as simulated)."""
    out = []
    for m in MODELS:
        hosts = [h for h in HOSTS if m in installed(h)]
        quality = {c: round(statistics.mean(m.quality(c, lv) for lv in LEVELS), 3) for c in CATEGORIES}
        out.append(
            CatalogModelV1(
                name=m.name,
                params_b=m.params_b,
                quant="Q4_K_M",
                context_length=32768,
                vram_bytes=m.vram,
                capabilities=CapabilitiesV1(tools=True),
                coder=m.coder,
                replicas=[ReplicaV1(backend=h.name, upstream_model=m.name, host=h.name) for h in hosts],
                tokens_per_s=round(hosts[0].tokens_per_s(m), 1),
                ttft_ms=round(50.0 + 1000.0 * PROBE_TOKENS / (TIMINGS.prefill_ratio * hosts[0].tokens_per_s(m)), 1),
                prefill_tokens_per_s=round(TIMINGS.prefill_ratio * hosts[0].tokens_per_s(m), 1)
                if measured_prefill
                else None,
                quality=quality,
            )
        )
    return CatalogSnapshotV1(version="fleet-bench", models=out)


# --- the trace ------------------------------------------------------------------------------

TEXT = {
    ("general", "simple"): "Hi! What is the capital of {x}?",
    ("general", "medium"): "Give me some practical advice on planning a week-long trip to {x} with a small budget.",
    ("general", "hard"): "Compare the long-term economic consequences of remote work for {x}, weighing trade-offs "
    "for workers, employers and cities, and justify each conclusion carefully.",
    ("coding", "simple"): "How do I reverse a list in python? ({x})",
    ("coding", "medium"): "Write a python function that parses {x} log lines into a dict and add unit tests.",
    ("coding", "hard"): "Implement a thread-safe LRU cache in Rust for {x} with lock-free reads, explain the "
    "memory ordering and prove the invariants; include benchmarks.\n```rust\nstruct Cache {{}}\n```",
    ("reasoning", "simple"): "What is 17 + 25? ({x})",
    ("reasoning", "medium"): "A train leaves {x} at 60 km/h and another follows at 90 km/h an hour later; when does "
    "the second catch up? Explain step by step.",
    ("reasoning", "hard"): "Prove that there are infinitely many primes of the form 4k+3, then generalise the argument "
    "and analyse where it fails for 4k+1 ({x}). Reason step by step.",
    ("creative", "simple"): "Write a haiku about {x}.",
    ("creative", "medium"): "Write a short story about a lighthouse keeper in {x} who finds a message in a bottle.",
    ("creative", "hard"): "Write a poem cycle of five linked sonnets about {x}, each from a different narrator, "
    "with a consistent rhyme scheme and an unreliable narrator twist.",
    ("summarisation", "simple"): "Summarise in one line: the meeting about {x} moved to Tuesday.",
    ("summarisation", "medium"): "Summarise the key points of this report on {x}: "
    + "Revenue grew while costs rose. " * 20,
    ("summarisation", "hard"): "Summarise and critically analyse this quarterly report on {x}, listing risks and "
    "contradictions: " + "Margins fell in two regions while guidance was raised. " * 40,
    ("translation", "simple"): "Translate 'good morning, {x}' into french.",
    ("translation", "medium"): "Translate this paragraph about {x} into german, keeping the tone: "
    + "We met by the river. " * 10,
    ("translation", "hard"): "Translate this legal clause about {x} into japanese, preserving every defined term and "
    "explaining ambiguities: " + "The licensee shall indemnify the licensor. " * 12,
}
PLACES = ["Oslo", "Lisbon", "Kyoto", "Lima", "Nairobi", "Tallinn", "Quebec", "Hanoi"]


@dataclass(slots=True)
class Req:
    i: int
    at: float
    category: str
    level: str
    text: str
    prompt_tokens: int
    out_tokens: int
    requested: str
    max_tokens: int | None = None
    """What the client asks for at most (``--max-tokens``); the reply is ``out_tokens`` either way."""


def trace(minutes: float, rate: float, seed: int) -> list[Req]:
    rng = random.Random(seed)
    out: list[Req] = []
    t = 0.0
    end = minutes * 60.0
    while True:
        burst = (t % 120.0) < 20.0
        t += rng.expovariate(rate * (4.0 if burst else 1.0))
        if t >= end:
            return out
        cat = rng.choices(list(CATEGORIES), weights=list(CATEGORIES.values()))[0]
        lv = rng.choices(list(LEVELS), weights=list(LEVELS.values()))[0]
        text = TEXT[(cat, lv)].format(x=rng.choice(PLACES)) + f" (#{len(out)})"
        if cat == "coding":
            requested = "qwen2.5-coder:32b"
        elif cat == "reasoning" and lv == "hard":
            requested = "llama3.3:70b"
        else:
            requested = "llama3.1:8b"
        n = OUT_TOKENS[lv]
        out.append(Req(len(out), t, cat, lv, text, PROMPT_TOKENS[lv], int(n * rng.uniform(0.5, 1.5)), requested))


# --- the simulated fleet (Ollama's scheduler, per host; the gateway's attempts) ---------------


Cand = tuple[str, str, float | None]
"""A candidate as the gateway gets it: (host, model, expected load time — ``CandidateV1.load_s``)."""


@dataclass(slots=True, eq=False)
class Attempt:
    """One try of a request on one (host, model), as the gateway makes it; ``req`` None: a load
    ordered through the agent (bound to no client, so never given up)."""

    req: Req | None
    host: str
    model: str
    rest: list[Cand]
    """Candidates left for the next attempts."""
    n: int
    enq: float = 0.0
    """When it joined Ollama's queue."""
    started: bool = False
    cancelled: bool = False


@dataclass(slots=True)
class Loaded:
    model: SimModel
    ready_at: float
    last_used: float
    active: int = 0
    waiting: deque[Attempt] = field(default_factory=deque)
    loader: Attempt | None = None
    """The request whose context the load runs under: it gives up, the load stops."""

    def idle(self, now: float) -> bool:
        return self.active == 0 and not self.waiting and now >= self.ready_at


@dataclass(slots=True)
class HostSim:
    spec: SimHost
    loaded: dict[str, Loaded] = field(default_factory=dict)
    pending: deque[Attempt] = field(default_factory=deque)
    """Ollama's scheduler queue: served in order; a load that must wait for room holds up the rest."""

    @property
    def used(self) -> int:
        return sum(x.model.vram for x in self.loaded.values())

    @property
    def active(self) -> int:
        return sum(x.active for x in self.loaded.values())

    @property
    def queued(self) -> int:
        return len(self.pending) + sum(len(x.waiting) for x in self.loaded.values())


@dataclass(slots=True)
class Outcome:
    ttft: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)
    """Each request's time to its whole reply (infinite when it failed)."""
    quality: list[float] = field(default_factory=list)
    cold_loads: int = 0
    evictions: int = 0
    expiries: int = 0
    retries: int = 0
    failed: int = 0
    done: int = 0
    finished_at: float = 0.0
    decide_s: float = 0.0
    chosen: Counter[str] = field(default_factory=Counter)
    gave_up: Counter[str] = field(default_factory=Counter)
    """Attempts given up at the first-byte bound, by where they were waiting."""
    served: list[Served] = field(default_factory=list)
    """Where each served request's TTFT went (``-v``)."""


@dataclass(frozen=True, slots=True)
class Served:
    """One served request's TTFT, in parts: earlier attempts (given up), the wait for a load, the
    wait in Ollama's queue or at the runner, prefill."""

    level: str
    model: str
    earlier: float
    load: float
    queue: float
    prefill: float

    @property
    def ttft(self) -> float:
        return self.earlier + self.load + self.queue + self.prefill


class Sim:
    def __init__(
        self, router: Router, bounds: ReadBounds | None, max_attempts: int, max_loaded: int = MAX_LOADED
    ) -> None:
        self.router = router
        router.execute = self.execute
        self.max_loaded = max_loaded
        self.bounds = bounds
        self.max_attempts = max_attempts
        self.hosts = {h.name: HostSim(h) for h in HOSTS}
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.now = 0.0
        self.out = Outcome()
        self.inflight: Counter[tuple[str, str]] = Counter()
        cat = {m.name: m for m in catalog().models}
        self.first_byte_s = {
            name: bounds.read_timeout_s(m, stream=True) if bounds is not None else math.inf for name, m in cat.items()
        }

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn))

    def run(self, reqs: list[Req], refresh_s: float) -> Outcome:
        for r in reqs:
            self.at(r.at, lambda r=r: self.arrive(r))
        end = reqs[-1].at if reqs else 0.0
        t = 0.0
        while t <= end:
            self.at(t, self.refresh)
            t += refresh_s
        while self.events:
            self.now, _, fn = heapq.heappop(self.events)
            fn()
        # the accounting closes: every request answered or failed, nothing left in flight or queued
        assert self.out.done + self.out.failed == len(reqs), (self.out.done, self.out.failed, len(reqs))
        assert not +self.inflight and not -self.inflight, self.inflight
        assert not any(h.pending or any(x.waiting or x.active for x in h.loaded.values()) for h in self.hosts.values())
        return self.out

    # what a gpu-agent would publish, and the gateways' in-flight counters
    def refresh(self) -> None:
        self.expire()
        states = []
        for h in self.hosts.values():
            used = h.used
            states.append(
                HostStateV1(
                    host=h.spec.name,
                    backend=h.spec.name,
                    gpus=[
                        GpuStateV1(
                            index=0,
                            memory_total_bytes=h.spec.memory,
                            memory_used_bytes=used,
                            memory_free_bytes=h.spec.memory - used,
                        )
                    ],
                    loaded_models=[
                        LoadedModelV1(name=n, size_bytes=x.model.vram, vram_bytes=x.model.vram)
                        for n, x in h.loaded.items()
                    ],
                    ts=self.now,
                )
            )
        self.router.observe(states, dict(self.inflight), self.now)

    def expire(self) -> None:
        for h in self.hosts.values():
            gone = [n for n, x in h.loaded.items() if x.idle(self.now) and self.now - x.last_used >= KEEP_ALIVE_S]
            for name in gone:
                del h.loaded[name]
                self.out.expiries += 1
            if gone:
                self.pump(h)

    def arrive(self, r: Req) -> None:
        t0 = time.perf_counter()
        cands = self.router.choose(r, self.now)
        self.out.decide_s += time.perf_counter() - t0
        self.attempt(r, cands, 1)

    def attempt(self, r: Req, cands: list[Cand], n: int) -> None:
        if n > self.max_attempts or not cands:
            self.out.failed += 1
            self.out.ttft.append(math.inf)
            self.out.whole.append(math.inf)
            return
        (host, model, load_s), rest = cands[0], cands[1:]
        if n > 1:
            self.out.retries += 1
        h = self.hosts[host]
        if h.queued >= MAX_QUEUE:  # Ollama answers 503 at once
            self.attempt(r, rest, n + 1)
            return
        a = Attempt(r, host, model, rest, n, self.now)
        self.inflight[(host, model)] += 1
        bound = self.first_byte_s.get(model, math.inf)
        if bound < math.inf and self.bounds is not None:  # a model that must load first: the bound grows (capped)
            bound += self.bounds.load_allowance_s(bound, load_s)
        if bound < math.inf:
            self.at(self.now + bound, lambda a=a: self.give_up(a))
        h.pending.append(a)
        self.pump(h)

    def execute(self, orders: list[tuple[str, str, str]]) -> bool:
        """The agents' orders, as ``vram_actions.py`` runs them: an unload of an idle model is at
        once, of a busy one is refused and ends the sequence; a load is one more request in
        Ollama's queue (``/api/generate`` with no prompt), under no client's deadline."""
        for action, host, model in orders:
            h = self.hosts[host]
            x = h.loaded.get(model)
            if action == "unload":
                if x is not None and not x.idle(self.now):
                    return False
                if x is not None:
                    del h.loaded[model]
                    self.out.evictions += 1
            elif x is None:
                h.pending.append(Attempt(None, host, model, [], 0, self.now))
            self.pump(h)
        return True

    def give_up(self, a: Attempt) -> None:
        """The gateway's first-byte bound passed: it closes the connection (Ollama drops the queued
        request; a load it started carries on) and tries the next candidate."""
        if a.started or a.cancelled:
            return
        a.cancelled = True
        h = self.hosts[a.host]
        x = h.loaded.get(a.model)
        if a in h.pending:
            h.pending.remove(a)
            self.out.gave_up["in Ollama's queue"] += 1
        elif x is not None and self.now < x.ready_at:
            self.out.gave_up["on a load" + (" (its own)" if x.loader is a else "")] += 1
        else:
            self.out.gave_up["at the runner (4 in parallel)"] += 1
        failed: list[Attempt] = []
        if x is not None and a in x.waiting:
            x.waiting.remove(a)
            x.last_used = self.now
            if x.loader is a and self.now < x.ready_at:  # the load ran under its context: stopped
                del h.loaded[a.model]
                failed = list(x.waiting)
                x.waiting.clear()
        self.inflight[(a.host, a.model)] -= 1
        for b in failed:  # the others waiting on that load get an error: their next candidate
            b.cancelled = True
            if b.req is not None:
                self.inflight[(b.host, b.model)] -= 1
        self.pump(h)
        if a.req is not None:
            self.attempt(a.req, a.rest, a.n + 1)
        for b in failed:
            if b.req is not None:
                self.attempt(b.req, b.rest, b.n + 1)

    def pump(self, h: HostSim) -> None:
        """Ollama's scheduler over its queue, in order: a loaded model takes the request; one not
        loaded loads when it fits (idle models unloaded least recently used first, at most
        ``max_loaded`` at once), else the whole queue waits for an unload; while a model loads on
        the GPU, another load waits and the requests behind it pass (``sched.go``)."""
        i = 0
        while i < len(h.pending):
            a = h.pending[i]
            x = h.loaded.get(a.model)
            if x is None:
                if any(self.now < y.ready_at for y in h.loaded.values()):
                    i += 1
                    continue
                m = BY_NAME[a.model]
                if not self.make_room(h, m.vram):
                    return
                x = Loaded(m, self.now + m.load_s, self.now, loader=a)
                h.loaded[a.model] = x
                self.out.cold_loads += 1
                self.at(x.ready_at, lambda h=h, x=x: self.ready(h, x))
            del h.pending[i]
            x.last_used = self.now
            x.waiting.append(a)
            if self.now >= x.ready_at:
                self.drain(h, x)

    def ready(self, h: HostSim, x: Loaded) -> None:
        if h.loaded.get(x.model.name) is x:
            self.drain(h, x)
            self.pump(h)

    def make_room(self, h: HostSim, need: int) -> bool:
        budget = int(BUDGET * h.spec.memory)
        if h.used + need <= budget and len(h.loaded) < self.max_loaded:
            return True
        idle = sorted((x for x in h.loaded.values() if x.idle(self.now)), key=lambda x: x.last_used)
        freed, count = 0, len(h.loaded)
        victims = []
        for x in idle:
            if h.used - freed + need <= budget and count < self.max_loaded:
                break
            victims.append(x)
            freed += x.model.vram
            count -= 1
        if h.used - freed + need > budget or count >= self.max_loaded:
            return False
        for x in victims:
            del h.loaded[x.model.name]
            self.out.evictions += 1
        return True

    def drain(self, h: HostSim, x: Loaded) -> None:
        while x.waiting and x.active < PARALLEL and h.loaded.get(x.model.name) is x:
            a = x.waiting.popleft()
            a.started = True
            r = a.req
            if r is None:  # a load order: done once loaded
                continue
            x.active += 1
            tps = h.spec.tokens_per_s(x.model) / max(1, h.active) ** 0.7
            first = self.now + r.prompt_tokens / (TIMINGS.prefill_ratio * tps)
            self.out.ttft.append(first - r.at)
            load = max(0.0, x.ready_at - max(a.enq, x.ready_at - x.model.load_s))
            queue = self.now - a.enq - load
            self.out.served.append(Served(r.level, x.model.name, a.enq - r.at, load, queue, first - self.now))
            best = max(m.quality(r.category, r.level) for m in MODELS)
            self.out.quality.append(x.model.quality(r.category, r.level) / best)
            self.out.chosen[x.model.name] += 1
            self.at(first + r.out_tokens / tps, lambda h=h, x=x, a=a: self.finish(h, x, a))

    def finish(self, h: HostSim, x: Loaded, a: Attempt) -> None:
        x.active -= 1
        if a.req is not None:
            self.out.whole.append(self.now - a.req.at)
        x.last_used = self.now
        self.inflight[(a.host, a.model)] -= 1
        self.out.done += 1
        self.out.finished_at = max(self.out.finished_at, self.now)
        self.drain(h, x)
        self.pump(h)


# --- routers -----------------------------------------------------------------------------------


class Router:
    name = ""

    def __init__(self) -> None:
        self.execute: Callable[[list[tuple[str, str, str]]], bool] = lambda _: True
        """Carries out a decision's orders through the agents: ``(load|unload, host, model)``;
        False when the sequence stopped (a model to unload was busy)."""

    def observe(self, states: list[HostStateV1], inflight: dict[tuple[str, str], int], now: float) -> None:  # noqa: ARG002
        return None

    def choose(self, r: Req, now: float) -> list[Cand]:
        """(host, model, expected load) to try, in order (a router without failover gives one)."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class TurnoutRouter(Router):
    """The scorer's engine and, unless ``blind``, its VRAM planner, on the state as last refreshed."""

    def __init__(
        self,
        *,
        blind: str = "",
        quality: float | None = None,
        weights: Weights | None = None,
        legacy: bool = False,
        annotate_loads: bool = True,
        decide_only: bool = False,
        scoring: dict[str, float] | None = None,
        admit_wait_s: float | None = None,
        wait_bound: bool = True,
        measured_prefill: bool = False,
    ) -> None:
        """``blind``: ``all`` — the resident, no-room, free-VRAM and busy weights 0 and no planner;
        ``vram`` — the same but the busy term kept (load-balanced, VRAM-blind)."""
        super().__init__()
        label = {"": "turnout", "all": "vram-blind", "vram": "vram-blind+busy"}[blind]
        self.name = label + (f" q={quality:g}" if quality is not None else "")
        self.blind = bool(blind)
        self.quality = quality
        weights = weights or Weights()
        if blind:
            weights = replace(weights, resident=0.0, no_room=0.0, free_vram=0.0)
        if blind == "all":
            weights = replace(weights, busy=0.0)
        # the simulated profiler measures TTFT at PROBE_TOKENS (the real suite: ~50, the default)
        scoring = {"ttft_probe_tokens": PROBE_TOKENS, **(scoring or {})}
        if blind:  # blind to residency, so to the queues behind loads too: the speed term as before
            scoring["queue_aware"] = False
        self.now = 0.0
        # the simulator's counts are exact at each refresh (no gateway publish lag); notes run on its clock
        self.engine = RoutingEngine(
            EngineConfig(scoring=ScoringConfig(weights=weights, **scoring), inflight_lag_s=0.0), clock=lambda: self.now
        )
        self.engine.set_catalog(catalog(measured_prefill))
        self.legacy = legacy
        self.wait_bound = wait_bound
        """Each candidate's expected wait for a slot goes into its first-byte bound (``wait_s``)."""
        self.annotate_loads = annotate_loads
        self.decide_only = decide_only
        """``engine.decide`` alone, as before (no recent-use bookkeeping for the diversity term)."""
        self.loop = asyncio.new_event_loop()
        """Each candidate carries the planner's expected load time (``CandidateV1.load_s``)."""
        self.cfg = VramConfig(budget_fraction=BUDGET)
        if TIMINGS != SimTimings():  # the planner's load estimate set to what was measured, as an operator would
            self.cfg = replace(
                self.cfg, load_fixed_s=TIMINGS.load_fixed_s, load_gib_per_s=1.0 / max(TIMINGS.load_s_per_gib, 1e-6)
            )
        if admit_wait_s is not None:
            self.cfg = replace(self.cfg, admit_wait_s=admit_wait_s)
        if legacy:  # the planner before this bench's audit: no model limit, no slow-load handling, no admission
            self.cfg = replace(self.cfg, max_loaded_per_gpu=0, max_load_wait_s=math.inf, admit_wait_s=0.0)
        self.states: list[HostStateV1] = []
        self.last_used: dict[tuple[str, str], float] = {}
        self.pending: dict[tuple[str, str], tuple[int, float]] = {}

    def observe(self, states: list[HostStateV1], inflight: dict[tuple[str, str], int], now: float) -> None:
        self.states = states
        self.now = now
        loaded = {(s.host, m.name) for s in states for m in s.loaded_models}
        self.pending = {k: v for k, v in self.pending.items() if v[1] > now and k not in loaded}
        self.engine.set_fleet(FleetState.from_hosts(states, inflight))

    def choose(self, r: Req, now: float) -> list[Cand]:
        req = RouteRequestV1(
            text=r.text, est_prompt_tokens=r.prompt_tokens, quality=self.quality, max_tokens=r.max_tokens
        )
        self.now = now
        if self.decide_only:
            reply = self.engine.decide(req).to_reply(8)
        else:  # as the scorer's route handler: analysis, ranking and the diversity term's bookkeeping
            reply = self.loop.run_until_complete(self.engine.route(req))
        cands = reply.candidates
        choice = 0
        loads: list[float | None] = [None] * len(cands)
        if not self.blind and self.states:
            hosts = {}
            for s in self.states:
                busy = {m.name for m in s.loaded_models if self._inflight_on(s.host, m.name)}
                pend = {m: b for (h, m), (b, until) in self.pending.items() if h == s.host and until > now}
                lu = {m: t for (h, m), t in self.last_used.items() if h == s.host}
                hv = host_vram(s, self.cfg, last_used=lu, busy=busy, pending=pend)
                if hv is not None:
                    hosts[s.host] = hv
            waits = self.engine.expected_waits(cands)  # as the route handler passes them to the planner
            options = [
                Option(c.upstream_model, c.backend, c.score, BY_NAME[c.model].vram, wait_s=w)
                for c, w in zip(cands, waits, strict=True)
            ]
            decision = plan(options, hosts, self.cfg)
            if decision is not None:
                if self.annotate_loads:  # as VramCoordinator.decide annotates the reply
                    loads = load_estimates(options, hosts, self.cfg)
                choice = decision.choice
                made = self.execute([(o.action.value, o.host, o.model) for o in decision.orders])
                for o in decision.orders[-1:]:
                    if made:
                        self.pending[(o.host, o.model)] = (o.bytes, now + 10.0)
                    elif decision.kind is not DecisionKind.PRELOAD:  # as VramCoordinator.route
                        choice = next(
                            (i for i, x in enumerate(options) if i != choice and _needs_no_orders(x, hosts)), choice
                        )
                c = cands[choice]
                h = hosts.get(c.backend)
                if h is not None and not h.holds(c.upstream_model) and not decision.orders:
                    self.pending[(c.backend, c.upstream_model)] = (BY_NAME[c.model].vram, now + 10.0)
        c = cands[choice]
        self.last_used[(c.backend, c.upstream_model)] = now
        self.engine.note_routed(c.backend, c.upstream_model, req)  # as Scorer.route does
        if self.blind or self.legacy or not self.states:
            order = [choice, *(i for i in range(len(cands)) if i != choice)]
        else:  # as VramCoordinator.decide orders the reply
            order = attempt_order(options, hosts, choice)
        if not self.blind and self.states and self.wait_bound:  # as the gateway adds wait_s to load_s
            loads = [(x or 0.0) + w or None for x, w in zip(loads, waits, strict=True)]
        return [(cands[i].backend, cands[i].model, loads[i]) for i in order]

    def close(self) -> None:
        self.loop.close()

    def _inflight_on(self, host: str, model: str) -> bool:
        return self.engine.fleet.inflight.get((host, model), 0) > 0


def _needs_no_orders(o: Option, hosts: dict[str, HostVram]) -> bool:
    h = hosts.get(o.host) if o.host is not None else None
    return h is None or h.holds(o.model) or h.room_for(o.need_bytes)


class RulesRoundRobin(Router):
    """Category × level minimum size → the smallest model meeting it (a coder for coding), replicas in turn."""

    name = "rules+rr"

    def __init__(self) -> None:
        super().__init__()
        self.turn: Counter[str] = Counter()

    def choose(self, r: Req, now: float) -> list[Cand]:  # noqa: ARG002
        need = DEFAULT_MIN_SIZE_B[r.category][list(LEVELS).index(r.level)]
        pool = [m for m in MODELS if m.params_b >= need and (m.coder or r.category != "coding")]
        model = min(pool, key=lambda m: m.params_b)
        hosts = [h.name for h in HOSTS if model in installed(h)]
        self.turn[model.name] += 1
        return [(hosts[self.turn[model.name] % len(hosts)], model.name, None)]


class LeastBusy(Router):
    """The requested model, on its replica with the fewest requests in flight (counted locally)."""

    name = "least-busy"

    def __init__(self, sim_inflight: Callable[[], Counter[tuple[str, str]]]) -> None:
        super().__init__()
        self.inflight = sim_inflight

    def choose(self, r: Req, now: float) -> list[Cand]:  # noqa: ARG002
        model = BY_NAME[r.requested]
        hosts = [h.name for h in HOSTS if model in installed(h)]
        counts = self.inflight()
        return [(min(hosts, key=lambda h: (counts[(h, model.name)], h)), model.name, None)]


# --- report ------------------------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)  # a failed request counts as an infinite TTFT
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


def breakdown(o: Outcome) -> list[str]:
    """Per prompt level: served requests, their TTFT p50/p90 and its mean parts, the models that served them."""
    lines = []
    for lv in LEVELS:
        xs = [x for x in o.served if x.level == lv]
        if not xs:
            continue
        t = [x.ttft for x in xs]
        parts = " ".join(
            f"{k} {statistics.mean(getattr(x, k) for x in xs):.2f}" for k in ("earlier", "load", "queue", "prefill")
        )
        models = Counter(x.model for x in xs).most_common(4)
        lines.append(
            f"    {lv:<7} n={len(xs):<4} TTFT p50 {pct(t, 0.5):.2f} p90 {pct(t, 0.9):.2f} s; mean s: {parts}; "
            + ", ".join(f"{m} {n}" for m, n in models)
        )
    return lines


def served_quality(o: Outcome) -> float:
    """Mean quality over the requests served (a failed request is left out: failing the requests
    a model cannot serve in time raises it)."""
    return statistics.mean(o.quality) if o.quality else float("nan")


def delivered_quality(o: Outcome) -> float:
    """Mean quality over every request, a failed one counting 0."""
    return sum(o.quality) / len(o.ttft) if o.ttft else float("nan")


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``N.Nx``, with an infinite side said in words."""
    if math.isinf(a) and math.isinf(b):
        return "both inf"
    if math.isinf(a):
        return "inf (baseline)"
    if math.isinf(b):
        return "0 (turnout inf)"
    return f"{a / max(b, 1e-9):.1f}x"


def goal(rows: list[tuple[str, Outcome]]) -> str:
    """The issue's goal against VRAM-blind (>= 3x fewer cold loads, >= 2x lower p90 TTFT, <= 2 %
    lower mean quality) and both baselines (ahead on TTFT and quality), for both quality definitions."""
    by = dict(rows)
    t, blind = by["turnout"], by["vram-blind"]
    lines = [
        f"\nturnout vs vram-blind: cold loads {ratio(blind.cold_loads, max(t.cold_loads, 1))} fewer (goal >= 3x), "
        f"p90 TTFT {ratio(pct(blind.ttft, 0.9), pct(t.ttft, 0.9))} lower (goal >= 2x), "
        f"failed {t.failed} vs {blind.failed}"
    ]
    for label, q in (("served-only", served_quality), ("delivered (failed = 0)", delivered_quality)):
        d = 100 * (q(t) / q(blind) - 1)
        lines.append(f"  quality {label}: {q(t):.3f} vs {q(blind):.3f}, {d:+.1f} % (goal >= -2 %)")
    for base in ("rules+rr", "least-busy"):
        b = by[base]
        lines.append(
            f"turnout vs {base}: p50 {pct(t.ttft, 0.5):.2f} vs {pct(b.ttft, 0.5):.2f} s, "
            f"p90 {pct(t.ttft, 0.9):.2f} vs {pct(b.ttft, 0.9):.2f} s, failed {t.failed} vs {b.failed}, "
            f"quality served {served_quality(t):.3f} vs {served_quality(b):.3f}, "
            f"delivered {delivered_quality(t):.3f} vs {delivered_quality(b):.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="virtual minutes of trace")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.35,
        help="requests/s outside bursts (4x inside); 0.35: the most at which Turnout fails < 1 %% on seeds 1-3",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--max-tokens",
        type=float,
        default=0.0,
        help="each request asks for at most this many times its level's average reply (60 / 250 / 600 tokens; "
        "replies are within 1.5x of it, so 1.5 or more cuts none); 0: no max_tokens",
    )
    ap.add_argument("--refresh-s", type=float, default=1.0, help="how often the scorer sees fleet state")
    ap.add_argument(
        "--quality",
        default="0.3,0.8",
        help="the quality preferences of the extra turnout rows, comma-separated (clients may send one)",
    )
    ap.add_argument(
        "--blind-quality-rows",
        action="store_true",
        help="a VRAM-blind row for each extra quality preference too",
    )
    ap.add_argument(
        "--no-failover",
        action="store_true",
        help="the Turnout rows wait for their first candidate without bound, as the baselines do",
    )
    ap.add_argument(
        "--read-min-s",
        type=float,
        default=ReadBounds().read_min_s,
        help="the gateway's least first-byte bound (TURNOUT_GATEWAY__READ_MIN_S)",
    )
    ap.add_argument(
        "--load-wait-max-s",
        type=float,
        default=ReadBounds().load_wait_max_s,
        help="the most a candidate's expected load time adds to its first-byte bound "
        "(TURNOUT_GATEWAY__LOAD_WAIT_MAX_S; 0: the bound as without load estimates)",
    )
    ap.add_argument(
        "--legacy-planner",
        action="store_true",
        help="the planner as before the model limit, slow-load orders and loaded-first fallbacks (for comparison)",
    )
    ap.add_argument(
        "--weights", default="", help="scoring weights for every Turnout row, e.g. busy=0.3,resident=0.2 (what-ifs)"
    )
    ap.add_argument(
        "--admit-wait-s",
        type=float,
        default=None,
        help="the planner's admission limit (TURNOUT_SCORER__VRAM__ADMIT_WAIT_S; default as configured, 0: off)",
    )
    ap.add_argument(
        "--scoring", default="", help="ScoringConfig fields for every Turnout row, e.g. wait_tokens=128 (what-ifs)"
    )
    ap.add_argument(
        "--no-wait-bound",
        action="store_true",
        help="the gateway's first-byte bound without the candidates' expected wait for a slot (wait_s), as before",
    )
    ap.add_argument(
        "--measured-prefill",
        action="store_true",
        help="the catalog carries the prefill rate the profiler measures (else the scorer derives it from the TTFT)",
    )
    ap.add_argument("--max-loaded", type=int, default=MAX_LOADED, help="OLLAMA_MAX_LOADED_MODELS per host (GPU)")
    ap.add_argument(
        "--decide-only",
        action="store_true",
        help="call the engine's decide() as before, not route() (no recent-use bookkeeping for the diversity term)",
    )
    ap.add_argument(
        "--policies", default="", help="run only these rows, e.g. turnout,vram-blind (the goal lines need both)"
    )
    ap.add_argument(
        "--timings",
        default="",
        help="a bench/llama_timings.py JSON: the fleet loads, decodes and prefills as measured there "
        "(and the planner expects those load times) instead of the model above",
    )
    ap.add_argument(
        "--load",
        default="",
        help="what-if load times, FIXED_S,S_PER_GIB (e.g. 0.5,0.05: an H100 from the page cache), over the model's "
        "or --timings' (the planner expects them too)",
    )
    ap.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the models each policy chose, where its given-up attempts waited, and per prompt level "
        "the TTFT in parts (earlier attempts, load, queue, prefill)",
    )
    args = ap.parse_args()
    global TIMINGS
    if args.timings:
        TIMINGS = SimTimings.measured(args.timings)
    if args.load:
        fixed, per_gib = (float(x) for x in args.load.split(","))
        TIMINGS = replace(TIMINGS, load_fixed_s=fixed, load_s_per_gib=per_gib, source=f"{TIMINGS.source}, load what-if")
    reqs = trace(args.minutes, args.rate, args.seed)
    if args.max_tokens > 0:
        for r in reqs:
            r.max_tokens = max(1, round(args.max_tokens * OUT_TOKENS[r.level]))
    cats = Counter(r.category for r in reqs)
    print(
        f"fleet: {len(HOSTS)} hosts ({', '.join(f'{h.name} {h.memory // GiB} GiB' for h in HOSTS)}), "
        f"{len(MODELS)} models {MODELS[0].params_b:g}B-{MODELS[-1].params_b:g}B; trace: {len(reqs)} requests over "
        f"{args.minutes:g} virtual minutes, seed {args.seed}; {dict(cats)}\n"
        f"timings ({TIMINGS.source}): load {TIMINGS.load_fixed_s:.2f} s + {TIMINGS.load_s_per_gib:.3f} s/GiB, "
        f"decode {TIMINGS.decode_efficiency * HOST80_BANDWIDTH_GBS:.0f} GB·tokens/s on an 80 GiB host, "
        f"prefill {TIMINGS.prefill_ratio:.1f}x decode"
    )
    rows = []
    wall0 = time.perf_counter()
    # the gateway's defaults (settings.py), the least first-byte bound as given
    bounds = None if args.no_failover else ReadBounds(read_min_s=args.read_min_s, load_wait_max_s=args.load_wait_max_s)
    w = replace(Weights(), **{k: float(v) for k, v in (kv.split("=") for kv in args.weights.split(",") if kv)})
    sc = {k: float(v) for k, v in (kv.split("=") for kv in args.scoring.split(",") if kv)}
    common = {
        "weights": w,
        "decide_only": args.decide_only,
        "scoring": sc,
        "admit_wait_s": args.admit_wait_s,
        "wait_bound": not args.no_wait_bound,
        "measured_prefill": args.measured_prefill,
    }
    makers: list[tuple[Callable[[Sim], Router], bool]] = [
        (lambda _: TurnoutRouter(legacy=args.legacy_planner, **common), True),  # type: ignore[arg-type]
        (lambda _: TurnoutRouter(blind="all", **common), True),  # type: ignore[arg-type]
        (lambda _: TurnoutRouter(blind="vram", **common), True),  # type: ignore[arg-type]
        (lambda _: RulesRoundRobin(), False),
        (lambda sim: LeastBusy(lambda: sim.inflight), False),
    ]
    for q in (float(x) for x in args.quality.split(",") if x):
        makers.append((lambda _, q=q: TurnoutRouter(quality=q, legacy=args.legacy_planner, **common), True))  # type: ignore[misc,arg-type]
        if args.blind_quality_rows:
            makers.append((lambda _, q=q: TurnoutRouter(blind="all", quality=q, **common), True))  # type: ignore[misc,arg-type]
    only = {p for p in args.policies.split(",") if p}
    for make, gateway in makers:
        sim = Sim(Router(), bounds if gateway else None, 3 if gateway else 1, args.max_loaded)
        sim.router = make(sim)
        if only and sim.router.name not in only:
            sim.router.close()
            continue
        sim.router.execute = sim.execute
        out = sim.run(reqs, args.refresh_s)
        sim.router.close()
        rows.append((sim.router.name, out))
    print(
        f"\n{'policy':<22}{'TTFT p50 s':>11}{'p90 s':>8}{'p99 s':>8}{'cold loads':>11}{'evictions':>10}"
        f"{'expiries':>9}{'retries':>8}{'failed':>7}{'req/s':>7}{'q served':>9}{'q deliv':>8}{'decide µs':>10}"
        f"{'reply p50 s':>12}{'p90 s':>7}"
    )
    for name, o in rows:
        print(
            f"{name:<22}{pct(o.ttft, 0.5):>11.2f}{pct(o.ttft, 0.9):>8.2f}{pct(o.ttft, 0.99):>8.2f}{o.cold_loads:>11}"
            f"{o.evictions:>10}{o.expiries:>9}{o.retries:>8}{o.failed:>7}{o.done / max(o.finished_at, 1e-9):>7.2f}"
            f"{served_quality(o):>9.3f}{delivered_quality(o):>8.3f}{o.decide_s / max(len(o.ttft), 1) * 1e6:>10.0f}"
            f"{pct(o.whole, 0.5):>12.2f}{pct(o.whole, 0.9):>7.2f}"
        )
    if args.verbose:
        for name, o in rows:
            print(f"  {name}: {dict(o.chosen.most_common())}")
            print(f"    attempts given up: {dict(o.gave_up.most_common())}")
            print("\n".join(breakdown(o)))
    if {"turnout", "vram-blind", "rules+rr", "least-busy"} <= {name for name, _ in rows}:
        print(goal(rows))
    print(f"(virtual time; {time.perf_counter() - wall0:.1f} s wall for the {len(rows)} runs)")


if __name__ == "__main__":
    main()
