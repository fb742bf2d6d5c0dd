"""The VRAM planner: pure and synchronous, no I/O. Given the ranked candidates of one request
and what every host holds, decide whether to route as ranked, to a resident alternative, or to
free memory first — and which load/unload orders that takes.

**Budget.** Each host may hold models up to ``max_total_gb`` (per host, else
``budget_fraction`` × the memory its gpu-agent detected, default 90 %). What a host can take
now is ``available = min(budget − Σ resident model sizes, GPU free memory)``: the first term
keeps the router within its budget, the second respects memory that other processes hold.
And at most ``max_loaded_per_gpu`` × its GPUs models at once (Ollama's
``OLLAMA_MAX_LOADED_MODELS`` default, 3 per GPU): a model beyond that does not *fit* even with
bytes to spare — the backend would unload one first, and Ollama holds up every request on the
host while it waits for that unload.

**Need.** Bytes a model takes when loaded, best source first: measured (``/api/ps`` on any
host, now or earlier: ``max(size, size_vram)``); else the catalog's size (profiled or on disk)
plus a KV-cache allowance for ``context_tokens`` and a fixed runtime overhead; else an
estimate: total parameters × bytes per weight for the quantisation (MoE models count their
*total* parameters: every expert must be resident) + the same allowances.

**Decision** (:func:`plan`), for the best candidate ``b``:

1. ``b`` resident → route (``resident``); but when ``b`` is a slow load still under way (ordered
   or started by the router, not yet reported), step 3 comes first. A load whose room is still
   being made (``awaiting_room``: the unloads before it are under way) is never routed to — the
   backend has no room for it yet, a request there now fails out of memory: step 3, then step 5
   pass it by (its bytes stay counted, so no second plan takes the same room);
2. ``b`` fits in its host's ``available`` and loads quickly → route, the backend loads it
   (``fits``);
3. a resident candidate scoring at least ``score(b) − score_margin`` → route there
   (``resident_within_margin``; the first such, in rank order). When ``b`` could be loaded (it
   fits, or unloading idle models makes it fit) but its load takes longer than
   ``max_load_wait_s``, the decision also orders that load (``preload``): the request does not
   wait through a long load, the next ones find ``b`` loaded;
4. unloading least-recently-used models on ``b``'s host frees enough → orders: unload those,
   then load ``b`` (``evict``). Never a pinned model, never one serving a request (``busy``);
5. else the first lower candidate that is resident, fits, or can be made to fit likewise
   (``fallback``); else route ``b`` with no orders (``no_room``: the backend may spill to CPU
   or fail, and the gateway moves on to the next candidate).

**Admission** (after any step that gives no orders): when the chosen replica's model is loaded
but its expected wait (``Option.wait_s``: requests in flight beyond its parallel slots, at its
decode speed, and its backend's queue behind a load — ``terms.expected_wait_s``) exceeds
``admit_wait_s``, the request goes to the first candidate, in rank order, whose model is loaded
and whose wait is within it (``busy``) — a loaded one only: a load would queue behind the same
busy host. None: as decided.

**Load time** is estimated from the need: ``load_fixed_s + need / load_gib_per_s``. A load the
backend does on a request's behalf runs under that request: when the gateway stops waiting for
the first byte (10 s at least by default), Ollama stops the load too. So ``b`` that fits but
loads slowly is loaded by an order (through the agent, not bound to any request) even when
nothing resident is close enough and the request goes to ``b`` (``fits``, with one ``load``
order).

Candidates on hosts without a known budget (no gpu-agent, no GPU) are ``unmanaged``: routed as
ranked, never ordered. The plan's orders never raise a host's model total above its budget:
the load is only planned when it fits after the unloads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from turnout.common.backends.names import parse_model_name
from turnout.common.schemas.fleet import HostStateV1
from turnout.common.schemas.vram import OrderAction

GiB = 1024**3
MiB = 1024**2

# bits per weight of common GGUF / runtime quantisations (llama.cpp's figures, incl. scales)
_BITS_PER_WEIGHT: dict[str, float] = {
    "f32": 32.0,
    "fp32": 32.0,
    "f16": 16.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.0,
    "int8": 8.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q5_k_s": 5.54,
    "q5_1": 6.0,
    "q5_0": 5.5,
    "q4_k_m": 4.85,
    "q4_k_s": 4.58,
    "q4_1": 5.0,
    "q4_0": 4.5,
    "iq4_xs": 4.25,
    "iq4_nl": 4.5,
    "q3_k_l": 4.27,
    "q3_k_m": 3.91,
    "q3_k_s": 3.5,
    "iq3_xxs": 3.06,
    "q2_k": 3.35,
    "iq2_xs": 2.31,
    "int4": 4.5,
    "awq": 4.25,
    "gptq": 4.25,
    "mlx": 4.5,
    "exl2": 4.5,
}
DEFAULT_BITS = 4.85
"""Unknown quantisation: Ollama's default tags are Q4_K_M."""


def bits_per_weight(quant: str | None) -> float:
    """Bits per weight of a quantisation name (its family's when unknown; a Q4_K_M-like default when none is given)."""
    if not quant:
        return DEFAULT_BITS
    q = quant.lower()
    if q in _BITS_PER_WEIGHT:
        return _BITS_PER_WEIGHT[q]
    m = re.match(r"i?q(\d)", q)  # q4_K_XL, iq3_M … : nearest family
    if m:
        return float(m.group(1)) + 0.85
    return DEFAULT_BITS


class VramOptions(BaseModel):
    """``TURNOUT_SCORER__VRAM__…``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Plan around VRAM and issue load/unload orders")
    budget_fraction: float = Field(default=0.9, gt=0, le=1, description="Budget as a share of detected memory")
    max_total_gb: dict[str, float] = Field(default_factory=dict, description="host -> budget in GiB (overrides)")
    pinned: dict[str, list[str]] = Field(
        default_factory=dict, description="host (or '*' for every host) -> models never unloaded"
    )
    score_margin: float = Field(default=0.15, ge=0, description="Prefer a resident model scoring within this")
    context_tokens: int = Field(default=4096, ge=0, description="KV-cache allowance in estimates")
    overhead_gb: float = Field(default=0.5, ge=0, description="Runtime overhead per loaded model in estimates")
    lock_ttl_s: float = Field(default=30.0, gt=0, description="Per-host order lock expiry")
    lock_wait_s: float = Field(default=2.0, ge=0, description="How long a replica waits for a host's lock")
    order_timeout_s: float = Field(default=120.0, gt=0, description="How long one load/unload may take")
    actions_kept: int = Field(default=500, ge=1, description="Actions kept in the log for /admin/vram")
    evict_wait_s: float = Field(
        default=0.5, ge=0, description="How long a route call waits for unloads (bounded by its deadline)"
    )
    refresh_s: float = Field(default=0.5, gt=0, description="Re-read fleet, in-flight and pending state this often")
    max_loaded_per_gpu: int = Field(
        default=3, ge=0, description="Models a backend keeps loaded per GPU (OLLAMA_MAX_LOADED_MODELS; 0: no limit)"
    )
    load_gib_per_s: float = Field(default=2.5, gt=0, description="Load-time estimate: GiB a backend loads per second")
    load_fixed_s: float = Field(default=1.0, ge=0, description="Load-time estimate: fixed start-up per load")
    max_load_wait_s: float = Field(
        default=8.0,
        ge=0,
        description="A load estimated longer than this is ordered from the agent, and the request goes to a "
        "resident model within the score margin if there is one (below the gateway's least first-byte bound)",
    )
    admit_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="A loaded candidate whose expected wait for a slot exceeds this gives way to the next loaded "
        "candidate within it (half the gateway's least first-byte bound; 0: off)",
    )


@dataclass(frozen=True, slots=True)
class VramConfig:
    """The planner's settings: budgets per host, pinned models, score margin, KV and runtime allowances."""

    budget_fraction: float = 0.9
    max_total_bytes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    pinned: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    score_margin: float = 0.15
    context_tokens: int = 4096
    overhead_bytes: int = 512 * MiB
    max_loaded_per_gpu: int = 3
    """0: no limit on the number of models."""
    load_gib_per_s: float = 2.5
    load_fixed_s: float = 1.0
    max_load_wait_s: float = 8.0
    admit_wait_s: float = 5.0
    """0: no admission step."""

    @classmethod
    def from_options(cls, o: VramOptions) -> VramConfig:
        """The planner's settings from the scorer's ``vram`` options."""
        return cls(
            budget_fraction=o.budget_fraction,
            max_total_bytes=MappingProxyType({h: int(gb * GiB) for h, gb in o.max_total_gb.items()}),
            pinned=MappingProxyType({h: frozenset(ms) for h, ms in o.pinned.items()}),
            score_margin=o.score_margin,
            context_tokens=o.context_tokens,
            overhead_bytes=int(o.overhead_gb * GiB),
            max_loaded_per_gpu=o.max_loaded_per_gpu,
            load_gib_per_s=o.load_gib_per_s,
            load_fixed_s=o.load_fixed_s,
            max_load_wait_s=o.max_load_wait_s,
            admit_wait_s=o.admit_wait_s,
        )

    def pinned_on(self, host: str) -> frozenset[str]:
        """Models never unloaded from ``host`` (its own pins and the ``*`` ones)."""
        return self.pinned.get(host, frozenset()) | self.pinned.get("*", frozenset())

    def load_s(self, need_bytes: int) -> float:
        """Estimated seconds to load a model of ``need_bytes``."""
        return self.load_fixed_s + need_bytes / GiB / self.load_gib_per_s

    def budget_for(self, host: str, detected_bytes: int) -> int:
        """``host``'s model budget: its explicit maximum, else ``budget_fraction`` of what was detected."""
        explicit = self.max_total_bytes.get(host)
        return explicit if explicit is not None else int(detected_bytes * self.budget_fraction)


# --- need ----------------------------------------------------------------------------------


def kv_allowance_bytes(params_b: float, context_tokens: int) -> int:
    """KV cache for ``context_tokens``: ≈ 80 KiB per token for 8B, ≈ 330 KiB for 70B (fp16 cache, GQA)."""
    return int((48 + 4 * params_b) * 1024 * context_tokens)


def estimate_vram_bytes(params_b: float, quant: str | None, *, context_tokens: int, overhead_bytes: int) -> int:
    """Weights (total parameters: MoE experts all stay resident) + KV cache + overhead."""
    weights = params_b * 1e9 * bits_per_weight(quant) / 8.0
    return int(weights + kv_allowance_bytes(params_b, context_tokens) + overhead_bytes)


def measured_sizes(states: Iterable[HostStateV1]) -> dict[str, int]:
    """Model -> bytes it took where loaded (``/api/ps``), the largest seen across hosts."""
    out: dict[str, int] = {}
    for s in states:
        for m in s.loaded_models:
            size = max(m.size_bytes, m.vram_bytes)
            if size > out.get(m.name, 0):
                out[m.name] = size
    return out


def model_need(
    name: str,
    cfg: VramConfig,
    *,
    measured: Mapping[str, int] | None = None,
    catalog_bytes: int | None = None,
    params_b: float | None = None,
    quant: str | None = None,
) -> tuple[int, str]:
    """Bytes ``name`` needs loaded, and where the figure comes from:

    * ``measured``: what ``/api/ps`` showed while it was loaded (includes its KV cache);
    * ``catalog``: the catalog's size (the profiler's measurement, else the size on disk) plus the
      KV and overhead allowances — the catalog does not say which of the two it holds, so the
      allowance is always added: erring large keeps the budget;
    * ``estimate``: parameters × bits per weight + allowances (no size known at all).
    """
    if measured and measured.get(name):
        return measured[name], "measured"
    if params_b is None or quant is None:
        info = parse_model_name(name)
        params_b = params_b if params_b is not None else info.params_b
        quant = quant or info.quant
    size_b = params_b if params_b is not None else 8.0
    if catalog_bytes:
        return catalog_bytes + kv_allowance_bytes(size_b, cfg.context_tokens) + cfg.overhead_bytes, "catalog"
    return estimate_vram_bytes(size_b, quant, context_tokens=cfg.context_tokens, overhead_bytes=cfg.overhead_bytes), (
        "estimate"
    )


# --- hosts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResidentModel:
    """A model loaded on a host: its size, when it was last used and whether it is serving."""

    name: str
    bytes: int
    last_used: float = 0.0
    """Last time a request was routed to it (unix s); 0 = never seen: evicted first."""
    busy: bool = False
    """Serving a request right now (in flight on some gateway): never unloaded."""
    loading: bool = False
    """A load the router ordered or started that the agent does not report yet."""
    awaiting_room: bool = False
    """A load planned behind unloads that are still under way: its bytes are counted as taken,
    but the backend has no room for it yet — a request sent there now would fail (out of memory)."""


@dataclass(frozen=True, slots=True)
class HostVram:
    """One host's budget, free GPU memory, loaded models and pins.

    Immutable: what the planner asks of it many times a decision (bytes used, which models are
    loaded, loading, waiting for room) is worked out once when it is built, not by a scan of
    ``resident`` per question (~20 questions a decision)."""

    host: str
    budget_bytes: int
    gpu_free_bytes: int | None
    resident: tuple[ResidentModel, ...] = ()
    pinned: frozenset[str] = frozenset()
    max_models: int = 0
    """Models the backend keeps loaded at once (0: no limit)."""
    used_bytes: int = field(init=False, compare=False, repr=False)
    """Bytes the loaded models take."""
    _names: frozenset[str] = field(init=False, compare=False, repr=False)
    _serving: frozenset[str] = field(init=False, compare=False, repr=False)
    _awaiting: frozenset[str] = field(init=False, compare=False, repr=False)
    _evictions: dict[int, list[ResidentModel] | None] = field(init=False, compare=False, repr=False)
    """need -> :func:`_eviction`'s answer, worked out the first time a decision asks (the host
    is immutable; decisions ask the same questions of it until the view is refreshed)."""
    _tries: dict[tuple[int, str, int, bool, str], Decision | None] = field(init=False, compare=False, repr=False)
    """:func:`_try`'s answers for the candidates on this host, likewise."""
    _loads: dict[tuple[str, int, bool, str], tuple[PlannedOrder, ...]] = field(init=False, compare=False, repr=False)
    """:func:`_load_orders`' answers, likewise."""

    def __post_init__(self) -> None:
        init = object.__setattr__
        init(self, "used_bytes", sum(m.bytes for m in self.resident))
        init(self, "_names", frozenset(m.name for m in self.resident))
        init(self, "_serving", frozenset(m.name for m in self.resident if not m.loading))
        init(self, "_awaiting", frozenset(m.name for m in self.resident if m.awaiting_room))
        init(self, "_evictions", {})
        init(self, "_tries", {})
        init(self, "_loads", {})

    def room_for(self, need: int, freed: int = 0, unloaded: int = 0) -> bool:
        """Would one more model of ``need`` bytes fit after unloading ``unloaded`` models (``freed`` bytes)?"""
        if self.max_models and len(self.resident) - unloaded >= self.max_models:
            return False
        return need <= self.available_after(freed)

    def available_after(self, freed: int = 0) -> int:
        """Bytes a load could take once ``freed`` bytes are unloaded (within budget and free memory)."""
        room = self.budget_bytes - (self.used_bytes - freed)
        if self.gpu_free_bytes is not None:
            room = min(room, self.gpu_free_bytes + freed)
        return room

    @property
    def available_bytes(self) -> int:
        """Bytes a load could take now."""
        return self.available_after(0)

    def holds(self, model: str) -> bool:
        """Whether ``model`` is loaded here."""
        return model in self._names

    def serves(self, model: str) -> bool:
        """Loaded and reported (not a load still under way)."""
        return model in self._serving

    def awaits_room(self, model: str) -> bool:
        """A load of ``model`` is planned here, but the unloads that make its room are not done."""
        return model in self._awaiting

    def ready(self, model: str) -> bool:
        """A request can go to ``model`` here now: loaded, or loading with its room made."""
        return self.holds(model) and not self.awaits_room(model)

    def evictable(self) -> list[ResidentModel]:
        """Unpinned, idle models, least recently used first."""
        return sorted(
            (m for m in self.resident if m.name not in self.pinned and not m.busy),
            key=lambda m: (m.last_used, m.name),
        )


def host_vram(
    state: HostStateV1,
    cfg: VramConfig,
    *,
    last_used: Mapping[str, float] | None = None,
    busy: Iterable[str] = (),
    pending: Mapping[str, int] | None = None,
) -> HostVram | None:
    """The planner's view of one host; ``None`` when the host reports no GPU memory (unmanaged).

    ``pending`` are loads the router made room for that the agent has not reported yet: they
    count as resident and busy (room taken, not evictable) until they show up or expire."""
    detected = state.memory_total_bytes
    if detected <= 0 and state.host not in cfg.max_total_bytes:
        return None
    busy_set = set(busy)
    used = last_used or {}
    resident = [
        ResidentModel(
            name=m.name,
            bytes=max(m.size_bytes, m.vram_bytes),
            last_used=used.get(m.name, 0.0),
            busy=m.name in busy_set,
        )
        for m in state.loaded_models
    ]
    loaded = {m.name for m in resident}
    coming = {name: nbytes for name, nbytes in (pending or {}).items() if name not in loaded}
    resident.extend(
        ResidentModel(name, nbytes, used.get(name, 0.0), busy=True, loading=True) for name, nbytes in coming.items()
    )
    gpu_free = state.memory_free_bytes - sum(coming.values()) if state.gpus else None
    return HostVram(
        host=state.host,
        budget_bytes=cfg.budget_for(state.host, detected),
        gpu_free_bytes=None if gpu_free is None else max(gpu_free, 0),
        resident=tuple(resident),
        pinned=cfg.pinned_on(state.host),
        max_models=cfg.max_loaded_per_gpu * max(1, len(state.gpus)),
    )


# --- plan ----------------------------------------------------------------------------------


class DecisionKind(StrEnum):
    """Which rule of :func:`plan` decided (see the module docstring)."""

    RESIDENT = "resident"
    FITS = "fits"
    RESIDENT_WITHIN_MARGIN = "resident_within_margin"
    PRELOAD = "preload"
    EVICT = "evict"
    FALLBACK = "fallback"
    NO_ROOM = "no_room"
    UNMANAGED = "unmanaged"
    BUSY = "busy"


@dataclass(slots=True)
class Option:
    """One ranked candidate as the planner sees it (not frozen: one is built per candidate per
    decision, and a frozen dataclass's ``__init__`` costs ~4x; nothing changes one)."""

    model: str
    """The model's name on its backend (what /api/ps lists and orders name)."""
    host: str | None
    score: float
    need_bytes: int
    embedding: bool = False
    """An embedding model: the agent loads it through the embeddings endpoint."""
    wait_s: float = 0.0
    """Expected seconds before this replica reads a new prompt: a free slot, and its backend's
    queue behind a load (``terms.expected_wait_s``; the admission step)."""


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """A load or unload the plan needs, with its host, model, bytes and reason."""

    action: OrderAction
    host: str
    model: str
    bytes: int
    reason: str
    embedding: bool = False
    """A load of an embedding model (Ollama refuses ``/api/generate`` for those)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The plan for one request: the candidate to route to first, why, and the orders that takes."""

    choice: int
    """Index of the candidate to route to first."""
    kind: DecisionKind
    reason: str
    orders: tuple[PlannedOrder, ...] = ()


def _eviction(h: HostVram, need: int) -> list[ResidentModel] | None:
    """The LRU prefix of evictable models whose unloading makes ``need`` fit, or None (once per
    host and need: ``HostVram._evictions``; the list is not to be changed)."""
    memo = h._evictions
    if need in memo:
        return memo[need]
    memo[need] = victims = _eviction_of(h, need)
    return victims


def _eviction_of(h: HostVram, need: int) -> list[ResidentModel] | None:
    if need > h.budget_bytes:
        return None
    freed = 0
    chosen: list[ResidentModel] = []
    for m in h.evictable():
        if h.room_for(need, freed, len(chosen)):
            break
        chosen.append(m)
        freed += m.bytes
    return chosen if h.room_for(need, freed, len(chosen)) else None


def _evict_orders(h: HostVram, opt: Option, victims: list[ResidentModel], why: str) -> tuple[PlannedOrder, ...]:
    gib = opt.need_bytes / GiB
    unloads = tuple(
        PlannedOrder(
            OrderAction.UNLOAD,
            h.host,
            m.name,
            m.bytes,
            f"free {m.bytes / GiB:.1f} GiB (least recently used, idle) for {opt.model} ({gib:.1f} GiB): {why}",
        )
        for m in victims
    )
    load = PlannedOrder(
        OrderAction.LOAD, h.host, opt.model, opt.need_bytes, f"load {opt.model} ({gib:.1f} GiB): {why}", opt.embedding
    )
    return (*unloads, load)


def _load_orders(h: HostVram, opt: Option, why: str) -> tuple[PlannedOrder, ...]:
    """The order that loads ``opt`` on ``h`` with nothing unloaded (once per host and question)."""
    key = (opt.model, opt.need_bytes, opt.embedding, why)
    orders = h._loads.get(key)
    if orders is None:
        orders = h._loads[key] = _evict_orders(h, opt, [], why)
    return orders


def _try(i: int, opt: Option, hosts: Mapping[str, HostVram], why: str) -> Decision | None:
    """Route to candidate ``i`` as it is (resident, fits), or with the unloads that make it fit,
    or not (None); once per host and question (``HostVram._tries``: it reads neither the score
    nor the wait)."""
    h = hosts.get(opt.host) if opt.host is not None else None
    if h is None:
        return Decision(i, DecisionKind.UNMANAGED, f"{opt.model}: host has no known memory budget")
    key = (i, opt.model, opt.need_bytes, opt.embedding, why)
    tries = h._tries
    if key in tries:
        return tries[key]
    tries[key] = decided = _try_on(h, i, opt, why)
    return decided


def _try_on(h: HostVram, i: int, opt: Option, why: str) -> Decision | None:
    if h.awaits_room(opt.model):  # its room is counted already, and not made yet: nothing to route or order
        return None
    if h.holds(opt.model):
        return Decision(i, DecisionKind.RESIDENT, f"{opt.model} is loaded on {h.host}")
    if h.room_for(opt.need_bytes):
        return Decision(
            i,
            DecisionKind.FITS,
            f"{opt.model} needs {opt.need_bytes / GiB:.1f} GiB, {h.host} has {h.available_bytes / GiB:.1f} GiB free",
        )
    victims = _eviction(h, opt.need_bytes)
    if victims is None:
        return None
    names = ", ".join(m.name for m in victims)
    return Decision(
        i, DecisionKind.EVICT, f"unload {names} on {h.host} to load {opt.model}", _evict_orders(h, opt, victims, why)
    )


def _resident_within_margin(
    options: Sequence[Option], hosts: Mapping[str, HostVram], cfg: VramConfig, h: HostVram, *, slow: bool, loading: bool
) -> Decision | None:
    """Step 3 of :func:`plan`: the first loaded candidate within the margin, if any (with the
    best one's load ordered when that load is slow: ``preload``)."""
    best = options[0]
    floor = best.score - cfg.score_margin
    for i, opt in enumerate(options[1:], 1):
        if opt.score < floor:
            break
        oh = hosts.get(opt.host) if opt.host is not None else None
        if oh is not None and oh.serves(opt.model):
            within = (
                f"{opt.model} is loaded on {oh.host} "
                f"and scores within {cfg.score_margin:g} ({opt.score:.3f} vs {best.score:.3f})"
            )
            if loading:
                state = f"waits for unloads on {h.host}" if h.awaits_room(best.model) else "is still loading"
                return Decision(i, DecisionKind.RESIDENT_WITHIN_MARGIN, f"{best.model} {state}; {within}")
            if slow:
                load = _try(0, best, hosts, f"preloaded while {opt.model} serves")
                if load is not None:
                    orders = load.orders or _load_orders(h, best, f"preloaded while {opt.model} serves")
                    secs = cfg.load_s(best.need_bytes)
                    return Decision(
                        i,
                        DecisionKind.PRELOAD,
                        f"{best.model} takes ~{secs:.0f} s to load on {h.host}: loading it; {within}",
                        orders,
                    )
            return Decision(
                i,
                DecisionKind.RESIDENT_WITHIN_MARGIN,
                f"{best.model} is not loaded and does not fit on {h.host}; {within}",
            )
    return None


def plan(options: Sequence[Option], hosts: Mapping[str, HostVram], cfg: VramConfig) -> Decision | None:
    """Decide for one request; ``options`` are the ranked candidates, best first (module docstring)."""
    decided = _plan(options, hosts, cfg)
    return _admitted(decided, options, hosts, cfg) if decided is not None else None


def _admitted(d: Decision, options: Sequence[Option], hosts: Mapping[str, HostVram], cfg: VramConfig) -> Decision:
    """The admission step (module docstring)."""
    chosen = options[d.choice]
    limit = cfg.admit_wait_s
    if d.orders or limit <= 0 or chosen.wait_s <= limit:
        return d
    h = hosts.get(chosen.host) if chosen.host is not None else None
    if h is None or not h.serves(chosen.model):
        return d
    for i, opt in enumerate(options):
        oh = hosts.get(opt.host) if opt.host is not None else None
        if i != d.choice and opt.wait_s <= limit and oh is not None and oh.serves(opt.model):
            return Decision(
                i,
                DecisionKind.BUSY,
                f"{chosen.model} on {chosen.host} has ~{chosen.wait_s:.0f} s of requests ahead (> {limit:g} s); "
                f"{opt.model} is loaded on {oh.host} with ~{opt.wait_s:.0f} s",
            )
    return d


def _plan(options: Sequence[Option], hosts: Mapping[str, HostVram], cfg: VramConfig) -> Decision | None:
    if not options:
        return None
    best = options[0]
    h = hosts.get(best.host) if best.host is not None else None
    if h is None:
        return Decision(0, DecisionKind.UNMANAGED, f"{best.model}: host has no known memory budget")
    slow = cfg.load_s(best.need_bytes) > cfg.max_load_wait_s
    if h.serves(best.model) or h.ready(best.model) and not slow:
        return _try(0, best, hosts, "best candidate")
    # a slow load under way, or one still waiting for its room: a resident model within the margin serves meanwhile
    loading = h.holds(best.model)
    fits = h.room_for(best.need_bytes)
    if fits and not slow:
        return _try(0, best, hosts, "best candidate")
    near = _resident_within_margin(options, hosts, cfg, h, slow=slow, loading=loading)
    if near is not None:
        return near
    decided = _try(0, best, hosts, "best candidate, no resident model within the score margin")
    if decided is not None:
        if slow and decided.kind is DecisionKind.FITS:  # an order: the load outlives the request's first-byte bound
            return Decision(
                decided.choice, decided.kind, decided.reason, _load_orders(h, best, "best candidate, slow to load")
            )
        return decided
    why = (
        f"{best.model} waits for unloads on {h.host}"
        if h.awaits_room(best.model)
        else f"{best.model} cannot fit on {h.host}"
    )
    for i, opt in enumerate(options[1:], 1):
        alt = _try(i, opt, hosts, why)
        if alt is not None:
            kind = DecisionKind.FALLBACK if alt.kind is not DecisionKind.UNMANAGED else alt.kind
            return Decision(i, kind, f"{why}: {alt.reason}", alt.orders)
    if h.awaits_room(best.model):
        return Decision(0, DecisionKind.NO_ROOM, f"{why} and no other candidate can take the request now")
    return Decision(0, DecisionKind.NO_ROOM, f"{best.model} cannot fit on {h.host} and nothing can be unloaded")


def apply_orders(hosts: Mapping[str, HostVram], orders: Iterable[PlannedOrder]) -> dict[str, HostVram]:
    """The hosts as they would be after ``orders`` (for tests, and to chain decisions)."""
    out = dict(hosts)
    for o in orders:
        h = out[o.host]
        if o.action is OrderAction.UNLOAD:
            gone = sum(m.bytes for m in h.resident if m.name == o.model)
            out[o.host] = replace(
                h,
                gpu_free_bytes=None if h.gpu_free_bytes is None else h.gpu_free_bytes + gone,
                resident=tuple(m for m in h.resident if m.name != o.model),
            )
        else:
            out[o.host] = replace(
                h,
                gpu_free_bytes=None if h.gpu_free_bytes is None else h.gpu_free_bytes - o.bytes,
                resident=(*h.resident, ResidentModel(o.model, o.bytes)),
            )
    return out
