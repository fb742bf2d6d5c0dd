"""The terms of the scoring model (``scoring.py``'s docstring defines each), vectorised over the
catalog: model-level terms (capability, learned, speed, cost, min size, tier, coder, feedback,
diversity) and replica-level terms (resident, unhealthy, no room, free VRAM, busy). A new term is
one more row here, one more weight in :class:`~turnout.scorer.scoring_config.Weights`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from turnout.scorer.catalog import B, F, I, ModelTable
from turnout.scorer.fleet import ReplicaTable
from turnout.scorer.prompt_analysis import LEVELS, PromptAnalysis
from turnout.scorer.scoring_config import OVERALL, ScoringConfig


@dataclass(frozen=True, slots=True)
class ModelState:
    """Per-model dynamic inputs (feedback, recent use), aligned with a :class:`ModelTable`."""

    feedback_mean: F
    feedback_n: F
    recent_share: F

    @classmethod
    def neutral(cls, n: int) -> ModelState:
        z = np.zeros(n)
        return cls(z, z, z)


@dataclass(frozen=True, slots=True)
class Learned:
    """Learned estimates aligned with a :class:`ModelTable` (NaN p where a model has no data)."""

    p: F
    n_eff: F


@dataclass(frozen=True, slots=True)
class TermArrays:
    """Per-model terms (all models; those filtered out are simply never ranked)."""

    names: tuple[str, ...]
    values: F
    """(terms, models)"""

    @property
    def total(self) -> F:
        return self.values.sum(axis=0)  # type: ignore[no-any-return]


class PromptRows:
    """The rows of :func:`model_terms` that depend on one prepared prompt only (every term but
    ``feedback`` and ``diversity``: analysis, quality preference, learned estimate, catalog and
    weights), kept between that prompt's decisions. The engine keeps one per recent prompt of
    its decision memo (``engine.py``): a memo hit re-reads the state rows only. Valid for the
    very same table, configuration, analysis and learned estimate (by identity) and the same
    quality preference and reply length; anything else rebuilds it."""

    __slots__ = ("_for", "_q", "_reply", "_values")

    def __init__(self) -> None:
        self._for: tuple[object, ...] = ()
        self._q = self._reply = math.nan
        self._values: F | None = None

    def get(self, objs: tuple[object, ...], q: float, reply: float) -> F | None:
        """A copy of the kept rows (the state rows' contents undefined) when they were kept for these."""
        if self._values is None or q != self._q or reply != self._reply or len(objs) != len(self._for):
            return None
        if not all(o is f for o, f in zip(objs, self._for, strict=True)):
            return None
        return self._values.copy()

    def put(self, objs: tuple[object, ...], q: float, reply: float, values: F) -> None:
        self._for, self._q, self._reply, self._values = objs, q, reply, values.copy()


STATE_ROWS = 2
"""The last rows of :data:`MODEL_TERMS` (``feedback``, ``diversity``): read from the state on every call."""


def model_terms(
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    cfg: ScoringConfig,
    state: ModelState | None = None,
    learned: Learned | None = None,
    keep: PromptRows | None = None,
    reply: float | None = None,
) -> TermArrays:
    """The model-level terms of the module docstring, vectorised over the catalog. Each row is
    written into one (terms × models) array (no stack of temporaries), and the rows that depend
    only on the catalog, the weights and the category (``cap − low``, ``min_size``, ``coder``) are
    kept per table (:func:`_static_rows`); the values are those of the plain expressions, bit for
    bit (``test_decision_equivalence.py``). ``reply``: the reply's expected tokens, which the
    speed term times (:func:`reply_tokens`; ``None``: ``wait_tokens``). With ``keep``, the rows
    that depend on the request only are taken from it, or computed and kept there
    (:class:`PromptRows`)."""
    reply = cfg.wait_tokens if reply is None else reply
    objs = (table, cfg, a, learned)
    values = keep.get(objs, q, reply) if keep is not None else None
    if values is None:
        values = _prompt_rows(a, q, table, cfg, learned, reply)
        if keep is not None:
            keep.put(objs, q, reply, values)
    feedback, diversity = values[-STATE_ROWS:]
    n = table.size
    if state is not None:
        feedback[:] = _feedback_row(table, cfg, state)
        np.subtract(state.recent_share, 1.0 / max(n, 1), out=diversity)
        np.maximum(0.0, diversity, out=diversity)
        diversity *= -cfg.weights.diversity
    else:
        feedback.fill(0.0)
        diversity.fill(0.0)
    return TermArrays(MODEL_TERMS, values)


def _prompt_rows(
    a: PromptAnalysis, q: float, table: ModelTable, cfg: ScoringConfig, learned: Learned | None, reply: float
) -> F:
    """:func:`model_terms`' array with every row but the state rows written."""
    w = cfg.weights
    n = table.size
    level = LEVELS.index(a.level) if a.level in LEVELS else 1
    values = np.empty((len(MODEL_TERMS), n))
    capability, learned_t, speed, cost, min_size, tier, coder = values[:-STATE_ROWS]
    static = _static_rows(table, cfg, a.category, level)
    if cfg.policy == "tiers":
        target = min(2, max(0, level + (1 if q >= 0.75 else -1 if q < 0.25 else 0)))
        np.multiply(-w.tier, np.abs(table.tier - target), out=tier)
        values[:5] = 0.0
    else:
        tier.fill(0.0)
        imp = 0.4 + 0.6 * a.complexity
        span, learned_span = static.span, table.cap_span[OVERALL]  # learned estimates: one scale across categories
        scale = w.capability * q * imp / span
        if learned is not None:
            nan = np.isnan(learned.p)
            alpha = np.where(nan, 0.0, learned.n_eff / (learned.n_eff + cfg.learned_k))
            p = np.where(nan, static.cap, learned.p)
            np.multiply(scale * (1.0 - alpha), static.cap_above_low, out=capability)
            np.subtract(p, static.low, out=learned_t)
            np.multiply(scale * span / learned_span * alpha, learned_t, out=learned_t)
        else:
            np.multiply(scale, static.cap_above_low, out=capability)
            learned_t.fill(0.0)
        np.multiply(w.speed * (1.0 - q), _speed_row(a.tokens, reply, table, cfg), out=speed)
        np.multiply(w.cost * (1.0 - q), table.cheap, out=cost)
        if cfg.cost_tokens > 1.0:  # what the call costs grows with its tokens (scoring_config.py)
            cost *= min(max((a.tokens + 200.0) / 400.0, 1.0 / cfg.cost_tokens), cfg.cost_tokens)
        min_size[:] = static.min_size
    coder[:] = static.coder
    return values


def expected_ttft_s(tokens: float, table: ModelTable, cfg: ScoringConfig) -> F:
    """Each model's expected time to first token (s) for a prompt of ``tokens``, warm and idle:
    ``overhead + max(tokens, probe) / rate`` (:func:`ttft_line`), the probe being the length the
    profile's TTFT was measured at (``ttft_probe_tokens``). A prompt shorter than the probe gets
    the probe's TTFT. Queueing and loads are the replica terms' and the VRAM planner's part, not
    this."""
    base, slope = ttft_line(table, cfg)
    return base + slope * max(float(tokens), cfg.ttft_probe_tokens)  # type: ignore[no-any-return]


def ttft_line(table: ModelTable, cfg: ScoringConfig) -> tuple[F, F]:
    """Per model, the fixed overhead (s) and the seconds per prompt token of
    :func:`expected_ttft_s`, built once per table and configuration. Where the profiler measured
    the prefill rate (``prefill_tps``): ``1 / rate`` a token and ``ttft − probe / rate`` (at least
    0) of overhead. Elsewhere the rate is derived from the TTFT itself, all of it counted as
    prefill (``rate = probe / ttft``, no overhead): a lower bound on the rate, so a long prompt's
    estimate errs long."""
    key = ("ttft_line", id(cfg))
    hit = table.derived.get(key)
    if hit is None:
        probe = max(cfg.ttft_probe_tokens, 1.0)
        measured = ~np.isnan(table.prefill_tps)
        per_token = np.where(measured, 1.0 / np.where(measured, table.prefill_tps, 1.0), table.ttft_s / probe)
        base = np.where(measured, np.maximum(table.ttft_s - probe * per_token, 0.0), 0.0)
        hit = table.remember(key, (base, per_token, cfg))
    return hit[0], hit[1]


def reply_tokens(max_tokens: int | None, cfg: ScoringConfig) -> float:
    """The reply a request is expected to get, in tokens: its ``max_tokens`` when it asks for fewer
    than ``wait_tokens`` (the average reply), else that average. The speed term times it, and the
    scorer's note of a decision counts it in flight for its time (``engine.py``)."""
    if max_tokens is not None and max_tokens < cfg.wait_tokens:
        return float(max(max_tokens, 0))
    return cfg.wait_tokens


def expected_latency_s(tokens: float, table: ModelTable, cfg: ScoringConfig, reply: float | None = None) -> F:
    """Each model's expected time to a whole reply (s): :func:`expected_ttft_s` for this prompt
    plus the reply (``reply`` tokens; ``None``: ``wait_tokens``, an average one) at its decode
    speed. One physical quantity in place
    of a fixed mix of speed and TTFT: the prompt's prefill weighs what it takes in seconds (little
    for a greeting, most of the wait for a long document on a large model)."""
    reply = cfg.wait_tokens if reply is None else reply
    return expected_ttft_s(tokens, table, cfg) + reply / np.maximum(table.tokens_per_s, 0.1)  # type: ignore[no-any-return]


def _speed_row(tokens: float, reply: float, table: ModelTable, cfg: ScoringConfig) -> F:
    """:func:`latency_utility` of :func:`expected_latency_s`; one row per reply length for every
    prompt no longer than the probe (a greeting: the same for all of them), kept per table (9 µs
    a request at 100 models otherwise; at most ``wait_tokens`` + 1 rows)."""
    if tokens > cfg.ttft_probe_tokens:
        return latency_utility(expected_latency_s(tokens, table, cfg, reply), cfg.speed_scale)
    key = ("speed_short", id(cfg), reply)
    hit = table.derived.get(key)
    if hit is None:
        row = latency_utility(expected_latency_s(0.0, table, cfg, reply), cfg.speed_scale)
        hit = table.remember(key, (row, cfg))
    return hit[0]  # type: ignore[no-any-return]


def latency_utility(latency_s: F, scale: str = "linear") -> F:
    """The speed term's scale: 1 for the catalog's fastest model for this prompt and 0 for its
    slowest (the capability term likewise spans the catalog's range, so the quality preference
    weighs two like-scaled quantities), the expected latency in between on a linear scale — every
    second of waiting counts alike — or, with ``scale="log"``, on a log scale (as before: a
    doubling counts alike, so 4 → 8 s weighed what 0.5 → 1 s did; ``ScoringConfig.speed_scale``)."""
    x = -np.maximum(latency_s, 1e-3) if scale == "linear" else -np.log(np.maximum(latency_s, 1e-3))
    if x.size == 0:
        return x  # type: ignore[no-any-return]
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)  # type: ignore[no-any-return]


MODEL_TERMS = ("capability", "learned", "speed", "cost", "min_size", "tier", "coder", "feedback", "diversity")


@dataclass(frozen=True, slots=True)
class _Static:
    """What :func:`model_terms` reads per (table, weights, category, level), built once."""

    cap: F
    low: float
    span: float
    cap_above_low: F
    min_size: F
    coder: F


def _static_rows(table: ModelTable, cfg: ScoringConfig, cat: str, level: int) -> _Static:
    """The rows that depend on the catalog, the weights, the category and the level only
    (capability above the category's low, ``min_size``, ``coder``): built once per table
    (:attr:`ModelTable.derived`)."""
    key = ("model_rows", id(cfg), cat, level)
    hit = table.derived.get(key)
    if hit is None:
        w = cfg.weights
        cap = table.capability_for(cat)
        at = cat if cat in table.capability else OVERALL
        low, span = table.cap_low[at], table.cap_span[at if cfg.category_span else OVERALL]
        required = cfg.min_size_b.get(cat, cfg.min_size_b.get("general", (0.0, 0.0, 0.0)))[level]
        if required > 0:
            short = np.log2(required / np.maximum(table.eff_b, 1e-3)) / 3.0
            min_size = -w.min_size * np.clip(short, 0.0, 1.0)
        else:
            min_size = np.zeros(table.size)
        if cat == "coding":
            coder = w.coder * table.coder
        else:
            coder = -0.5 * w.coder * table.coder
        rows = _Static(cap, low, span, cap - low, min_size, coder.astype(np.float64))
        hit = table.remember(key, (rows, cfg))  # the config is held so that its id stays its own
    return hit[0]  # type: ignore[no-any-return]


def _feedback_row(table: ModelTable, cfg: ScoringConfig, state: ModelState) -> F:
    """The feedback term, kept while the state carries the same feedback arrays (they change
    when the loader swaps them, not per request)."""
    key = ("feedback", id(cfg), id(state.feedback_mean), id(state.feedback_n))
    hit = table.derived.get(key)
    if hit is None:
        w = cfg.weights
        row = w.feedback * state.feedback_mean * state.feedback_n / (state.feedback_n + 5.0)
        hit = table.remember(key, (row, cfg, state.feedback_mean, state.feedback_n))
    return hit[0]  # type: ignore[no-any-return]


REPLICA_TERMS = ("resident", "unhealthy", "no_room", "free_vram", "busy")


def busy_term(inflight: F, cfg: ScoringConfig) -> F:
    """``−w.busy · min(in flight / replica_parallel, busy_cap)``: a replica holding twice what it
    serves at once loses ``2·w.busy`` (0.3 by default: more than ``resident`` gains), so a queue
    moves requests to another replica, even one that must load the model. A negative count
    (never expected) is no bonus."""
    return -cfg.weights.busy * np.minimum(np.maximum(inflight, 0.0) / cfg.replica_parallel, cfg.busy_cap)  # type: ignore[no-any-return]


def busy_value(inflight: float, cfg: ScoringConfig) -> float:
    """:func:`busy_term` of one replica, in Python floats: the same operations in the same order,
    so the same value bit for bit (``test_engine.py``)."""
    n = inflight if inflight > 0.0 else 0.0
    return -cfg.weights.busy * min(n / cfg.replica_parallel, cfg.busy_cap)


BUSY_ROW = 4
"""Row of ``busy`` in :func:`replica_terms`."""


@dataclass(frozen=True, slots=True)
class Queues:
    """What the queue-wait estimate reads besides the in-flight counts, built once per fleet
    state (residency, room and speed change with it; the counts change between): each replica's
    backend as an index (one backend, one queue: Ollama serves its requests in order), whether
    its model is loaded, whether a load of it must unload another model first, its load time."""

    backend: I
    """Per replica, the index of its backend."""
    order: I
    """The replicas sorted by backend, and where each backend's run starts in that order (a
    per-backend minimum by ``np.minimum.reduceat``)."""
    starts: I
    ends: I
    per_request: F
    """Per replica, the seconds one request ahead takes (``wait_tokens / tokens_per_s``)."""
    loaded: B
    """Loaded, or on a backend no agent reports (where only a slot is waited for)."""
    needs_room: B
    """Not loaded, and a load must unload a model first: no free memory, or the backend at its
    model limit (``max_loaded_per_gpu`` × its GPUs)."""
    load_s: F
    """Per replica not loaded, the expected seconds to load its model (``load_fixed_s + GiB /
    load_gib_per_s``); 0 where loaded."""

    @classmethod
    def build(cls, reps: ReplicaTable, need_bytes: F, gpus: Mapping[str, int], cfg: ScoringConfig) -> Queues:
        names, index = np.unique(np.array(reps.backend, dtype=object), return_inverse=True)
        index = index.astype(np.intp)
        limit = np.array([float(cfg.max_loaded_per_gpu * gpus.get(str(b), 0)) for b in names], dtype=np.float64)
        known = np.array([b in gpus for b in reps.backend], dtype=bool)
        loaded = reps.resident | ~known
        count = np.bincount(index, weights=reps.resident.astype(np.float64), minlength=names.size)
        full = (limit > 0) & (count >= limit)
        gib = np.nan_to_num(need_bytes, nan=0.0) / 2**30
        load = np.where(loaded, 0.0, cfg.load_fixed_s + gib / cfg.load_gib_per_s)
        order = np.argsort(index, kind="stable")
        starts = np.searchsorted(index[order], np.arange(names.size)).astype(np.intp)
        ends = np.append(starts[1:], index.size).astype(np.intp)
        per_request = cfg.wait_tokens / np.maximum(reps.tokens_per_s, 1e-3)
        return cls(index, order, starts, ends, per_request, loaded, ~loaded & (reps.no_room | full[index]), load)

    def rows_of(self, replica: int) -> I:
        """The rows of ``replica``'s backend (its own among them)."""
        k = self.backend[replica]
        return self.order[self.starts[k] : self.ends[k]]

    def time_ahead_s(self, wait_s: F, rows: I | None = None) -> F:
        """Seconds before a new request's prompt is read on each replica (or on ``rows``): its
        expected wait plus, where its model is not loaded and the load must unload another
        first, the load."""
        if rows is None:
            return wait_s + np.where(self.needs_room, self.load_s, 0.0)  # type: ignore[no-any-return]
        return wait_s + np.where(self.needs_room[rows], self.load_s[rows], 0.0)  # type: ignore[no-any-return]


def expected_wait_s(reps: ReplicaTable, cfg: ScoringConfig, queues: Queues | None = None) -> F:
    """Seconds a new request is expected to wait on each replica before its prompt is read, not
    counting a load of its own model (the gateway adds the planner's ``load_s`` for that):

    * **a slot** — the requests in flight beyond its ``replica_parallel`` slots, one ahead of it
      finishing every ``wait_tokens / tokens_per_s`` (decode is memory-bound: parallel streams
      share the speed);
    * with ``queues`` (built from the same fleet state), **the backend's queue** (Ollama serves
      it in order, one load at a time): requests in flight for a model its backend does not hold
      are waiting for a load. A load that must unload a model first (no free memory, or the
      backend at its model limit) while every loaded model is serving waits until the least
      busy one drains (its in flight at its decode speed) — and holds up every request behind
      it, loaded models' too (head-of-line). A replica not loaded also waits for the loads
      queued before it, one at a time.

    The VRAM planner's admission step (``vram.py``), the gateway's first-byte bound (``wait_s``)
    and, with ``queue_aware``, the speed term (:func:`wait_term`) read it. ~25 array operations,
    the fleet's static part kept in ``queues``: it runs after every decision the scorer notes."""
    inflight = np.maximum(reps.inflight, 0.0)
    if queues is None or reps.size == 0:
        per_request = cfg.wait_tokens / np.maximum(reps.tokens_per_s, 1e-3)
        return np.maximum(inflight + (1.0 - cfg.replica_parallel), 0.0) * per_request  # type: ignore[no-any-return]
    per_request, res, b = queues.per_request, queues.loaded, queues.backend
    slot = np.maximum(inflight + (1.0 - cfg.replica_parallel), 0.0) * per_request
    drain = np.minimum.reduceat(np.where(res, inflight * per_request, np.inf)[queues.order], queues.starts)
    drain[drain == np.inf] = 0.0  # nothing loaded: nothing to unload, nothing to wait for
    ahead = drain[b]
    # a load here must unload first and every loaded model is serving: it waits for one to drain
    blocked = queues.needs_room & (ahead > 0)
    queued = ~res & (inflight > 0)  # requests waiting for a load
    own = np.where(queued, queues.load_s, 0.0)
    loads = np.bincount(b, weights=own, minlength=drain.size)
    hol = np.zeros(drain.size, dtype=bool)
    hol[b[queued & blocked]] = True  # such a load is queued: everything behind it waits
    held = hol[b]
    return np.where(res, slot, loads[b] - own) + np.where(held | blocked & ~res, ahead, 0.0)  # type: ignore[no-any-return]


def backend_wait_s(inflight: F, rows: I, queues: Queues, cfg: ScoringConfig) -> F:
    """:func:`expected_wait_s` for the replicas ``rows`` of one backend (all of them) alone: what
    a decision noted on one replica changes (the scorer notes every decision it hands out) —
    ~10 µs against the whole table's ~50 at 2,000 replicas. Equal to the whole table's values
    for those rows (``test_engine.py``)."""
    return backend_wait(inflight, rows, queues, cfg)[0]


def backend_wait(inflight: F, rows: I, queues: Queues, cfg: ScoringConfig) -> tuple[F, BackendQueue | None]:
    """:func:`backend_wait_s`, and the backend's queue as it leaves it (:class:`BackendQueue`;
    ``None`` where a per-request time is not a number)."""
    n = np.maximum(inflight[rows], 0.0)
    per_request, res = queues.per_request[rows], queues.loaded[rows]
    slot = np.maximum(n + (1.0 - cfg.replica_parallel), 0.0) * per_request
    busy = np.where(res, n * per_request, np.inf)
    least = float(busy.min()) if busy.size else np.inf
    ahead = 0.0 if least == np.inf else least
    blocked = queues.needs_room[rows] & (ahead > 0)
    queued = ~res & (n > 0)
    own = np.where(queued, queues.load_s[rows], 0.0)
    loads = float(own.sum())
    held = bool((queued & blocked).any())
    out = np.where(res, slot, loads - own) + np.where(held | blocked & ~res, ahead, 0.0)
    if ahead != ahead:  # NaN: a per-request time unknown
        return out, None
    return out, BackendQueue(ahead, int(np.count_nonzero(busy == least)), loads, held)


@dataclass(slots=True)
class BackendQueue:
    """One backend's queue as :func:`backend_wait` last computed it, for :meth:`moved`: the
    values every replica's wait there reads besides its own row."""

    ahead: float
    """The least busy loaded model's drain time (0 when one is idle or none is loaded)."""
    ties: int
    """Loaded replicas whose drain time is ``ahead``."""
    loads: float
    """The loads queued there (their seconds summed)."""
    held: bool
    """A queued load must unload a model first while every loaded one is serving."""

    def moved(self, j: int, inflight: float, step: float, queues: Queues, cfg: ScoringConfig) -> float | None:
        """Replica ``j``'s wait once it holds ``step`` (±1) requests more than ``inflight``, when
        that moves nothing else on its backend (this queue is updated; the other replicas' waits
        stay) — ``None`` when it does (a load queued or no longer queued; the least busy loaded
        model no longer the least busy, or another one becoming it), and :func:`backend_wait`
        must recompute the backend. The same operations as :func:`backend_wait` on that row, in
        Python floats: the same value bit for bit (``test_engine.py``)."""
        before = inflight if inflight > 0.0 else 0.0
        after = inflight + step
        after = after if after > 0.0 else 0.0
        if queues.loaded[j]:
            pr = float(queues.per_request[j])
            busy_before, busy_after = before * pr, after * pr
            if busy_after != busy_before:
                if busy_after < self.ahead:
                    return None  # the least busy now: every wait there may move
                if busy_before == self.ahead:
                    if self.ties < 2:
                        return None  # the least busy one is busier now: every wait there may move
                    self.ties -= 1
                elif busy_after == self.ahead:
                    self.ties += 1
            slot = after + (1.0 - cfg.replica_parallel)
            return (slot if slot > 0.0 else 0.0) * pr + (self.ahead if self.held else 0.0)
        if (before > 0.0) != (after > 0.0):
            return None  # a load queued or no longer queued: the loads ahead of every other replica there move
        own = float(queues.load_s[j]) if after > 0.0 else 0.0
        blocked = bool(queues.needs_room[j]) and self.ahead > 0
        return (self.loads - own) + (self.ahead if self.held or blocked else 0.0)


def wait_term(
    wait_s: F, model: I, tokens: float, q: float, table: ModelTable, cfg: ScoringConfig, reply: float | None = None
) -> F:
    """The speed term's share that varies by replica: a reply's expected time on a replica is
    its model's (:func:`expected_latency_s`) plus the wait ahead of it there
    (:func:`expected_wait_s`), so a wait costs what the same seconds cost in the speed term —
    ``−w.speed · (1−q) · wait / span`` on the linear scale, ``span`` the catalog's range of
    expected times for this prompt (on the log scale, ``log((t + wait) / t) / span``). At no load
    it is 0 everywhere, and the ranking is as without it. ``wait_s`` and ``model`` may be any
    replicas' (a named model's alone): the scale is the catalog's either way. ``reply``: as
    :func:`model_terms` takes it."""
    t, span = _wait_scale(tokens, cfg.wait_tokens if reply is None else reply, table, cfg)
    if cfg.speed_scale == "linear":
        penalty = wait_s / span if span > 0 else wait_s * 0.0
    else:
        penalty = np.log1p(wait_s / t[model]) / span if span > 0 else wait_s * 0.0
    return -cfg.weights.speed * (1.0 - q) * penalty  # type: ignore[no-any-return]


def _wait_scale(tokens: float, reply: float, table: ModelTable, cfg: ScoringConfig) -> tuple[F, float]:
    """Each model's expected time for this prompt and reply (at least 1 ms on the log scale) and
    the catalog's span of it on the speed term's scale, for :func:`wait_term`; one pair per reply
    length for every prompt no longer than the probe (their times are the same), kept per table
    as :func:`_speed_row` keeps its row."""
    if tokens <= cfg.ttft_probe_tokens:
        key = ("wait_scale", id(cfg), reply)
        hit = table.derived.get(key)
        if hit is None:
            hit = table.remember(key, (*_wait_scale_of(expected_latency_s(0.0, table, cfg, reply), cfg), cfg))
        return hit[0], hit[1]  # type: ignore[no-any-return]
    return _wait_scale_of(expected_latency_s(tokens, table, cfg, reply), cfg)


def _wait_scale_of(latency: F, cfg: ScoringConfig) -> tuple[F, float]:
    if cfg.speed_scale == "linear":
        return latency, float(latency.max() - latency.min()) if latency.size else 0.0
    t = np.maximum(latency, 1e-3)
    return t, float(np.log(t.max()) - np.log(t.min())) if t.size else 0.0


def replica_terms(reps: ReplicaTable, cfg: ScoringConfig) -> F:
    w = cfg.weights
    return np.vstack(
        [
            w.resident * reps.resident,
            -w.unhealthy * ~reps.healthy,
            -w.no_room * reps.no_room,
            w.free_vram * np.nan_to_num(reps.free_frac, nan=0.0),
            busy_term(reps.inflight, cfg),
        ]
    ).astype(np.float64)
