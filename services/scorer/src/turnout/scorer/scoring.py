"""The scoring model: hard filters, then a weighted sum of terms per (model, replica). Pure
functions over frozen slotted dataclasses and numpy arrays; no I/O.

**Filters** (a removed model is listed in ``filtered`` with the reason):

1. kind: embedding requests → embedding models only; chat/completion → models that generate;
2. images → vision models; tools → tools models;
3. context: estimated prompt tokens + ``max_tokens`` must fit the window (unknown windows pass);
4. operator rules: block list, allow list, a client's backend restriction.

**Fallback when the filters leave nothing** (each step adds a note to every candidate):

* no vision model for images → ``unservable`` (400) when ``unservable_without_vision`` (default),
  else the image requirement is dropped;
* no tools model → the tools requirement is dropped (the model may ignore the tools);
* nothing fits the context → ``unservable`` unless ``relax_context``, then the largest window;
* the allow list or a client's backend rule leaves nothing → that rule is ignored; the block
  list is never relaxed; nothing left at all → ``unservable``.

**Terms** (``q`` = quality preference 0..1, ``c`` = complexity, ``imp = 0.4 + 0.6·c``); each
candidate reports them in ``terms`` and they sum to its ``score``:

* ``capability = w.capability · q · imp · cap'`` and ``learned`` (same, for the learned share):
  ``cap`` = profile and benchmark scores for the category shrunk towards a size prior fitted on the
  fleet (an unknown model gets the prior of its size: neither favoured nor punished); with
  learned estimates ``p`` from ``n_eff`` close neighbours, ``quality = (1−a)·cap + a·p`` with
  ``a = n_eff / (n_eff + learned_k)``; ``'`` = scaled by the catalog's overall spread (by the
  category's with ``category_span``);
* ``speed = w.speed · (1−q) · speed'`` — tokens/s and TTFT on log scales (measured, else
  estimated from active parameters), scaled to the catalog's range; ``cost`` likewise from price;
* ``min_size = −w.min_size · clamp(log2(required / size) / 3)`` for the category × level table;
* ``coder = +w.coder`` for a coder model on a coding prompt, ``−w.coder/2`` elsewhere;
* ``feedback = w.feedback · mean · n/(n+5)`` (decayed user feedback, −1..1);
* ``diversity = −w.diversity · max(0, share − 1/models)`` (recent-use share);
* ``tier = −w.tier · |tier − target|`` — only with ``policy="tiers"``, which then replaces
  capability, speed, cost and min_size; ``target`` rises with complexity and ``q``;
* per replica: ``resident`` (+, loaded in VRAM), ``unhealthy`` (−), ``no_room`` (−, not loaded
  and the host lacks the memory), ``free_vram`` (+, share free), ``busy`` (−, requests in flight).

Everything but ``capability``/``learned``/``speed``/``cost`` is independent of ``q``, and those
are linear in it, so raising ``q`` moves the choice towards models with more capability and less
speed — with capability and speed following size, never to a smaller model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from turnout.common.schemas.catalog import CatalogModelV1
from turnout.common.schemas.route import CandidateV1, RequestKind, RouteReplyV1, RouteRequestV1
from turnout.scorer.prompt_analysis import LEVELS, PromptAnalysis

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.intp]  # noqa: E741

MODEL_NOT_FOUND = "model_not_found"
UNSERVABLE = "unservable"
TIERS = ("small", "medium", "large")
OVERALL = "overall"

# SmarterRouter-like minimum sizes (billions) per category and level; a soft penalty below them.
DEFAULT_MIN_SIZE_B: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "coding": (1.0, 4.0, 8.0),
        "reasoning": (1.0, 4.0, 8.0),
        "creative": (1.0, 3.0, 7.0),
        "summarisation": (1.0, 3.0, 7.0),
        "translation": (1.0, 3.0, 7.0),
        "general": (0.5, 3.0, 7.0),
    }
)


A = TypeVar("A", bound=npt.NDArray[Any])


def _frozen(a: A) -> A:
    a.flags.writeable = False
    return a


def size_power(params_b: float) -> float:
    """Model size on a 0..1 log scale: 0.5B → 0, 8B → 0.5, 70B → 0.9, 128B+ → 1."""
    return float(min(1.0, max(0.0, math.log2(max(params_b, 1e-3) / 0.5) / 8.0)))


def estimated_tokens_per_s(active_b: float) -> float:
    """Rough single-GPU decode speed of a quantised model: 1B ≈ 250, 8B ≈ 72, 70B ≈ 19 tok/s."""
    return float(250.0 / max(active_b, 0.05) ** 0.6)


def estimated_ttft_ms(active_b: float) -> float:
    return 40.0 + 6.0 * active_b


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Weights:
    capability: float = 1.0
    speed: float = 0.6
    cost: float = 0.4
    min_size: float = 0.6
    coder: float = 0.15
    feedback: float = 0.2
    diversity: float = 0.05
    tier: float = 0.5
    resident: float = 0.15
    unhealthy: float = 1.0
    no_room: float = 0.2
    free_vram: float = 0.05
    busy: float = 0.1


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    weights: Weights = field(default_factory=Weights)
    policy: str = "score"
    """``score`` (all terms) or ``tiers`` (size tiers instead of capability/speed)."""
    min_size_b: Mapping[str, tuple[float, float, float]] = field(default_factory=lambda: DEFAULT_MIN_SIZE_B)
    tier_thresholds_b: tuple[float, float] = (10.0, 40.0)
    """Effective size (MoE: sqrt(total·active)) below the first is small, from the second large."""
    unservable_without_vision: bool = True
    relax_context: bool = False
    prior_strength: float = 10.0
    """Pseudo-prompts of the size prior when shrinking profile scores."""
    benchmark_strength: float = 10.0
    learned_k: float = 4.0
    """Neighbour mass at which the learned estimate gets half the weight."""
    category_span: bool = False
    """Scale capability by the catalog's spread for the prompt's category (else the overall
    spread). Off: on held-out MMLU it lowers APGR by call share from 0.61 to 0.55 (heuristics
    only) and from 0.67 to 0.61 (with the learned term) — ``bench/routing_quality.py``."""
    default_quality: float = 0.5
    unknown_params_b: float = 8.0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the scorer knows about one model (built from the catalog, profiles and benchmarks)."""

    name: str
    params_b: float | None = None
    active_params_b: float | None = None
    context_length: int | None = None
    chat: bool = True
    completion: bool = True
    vision: bool = False
    tools: bool = False
    embedding: bool = False
    coder: bool = False
    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    price_per_mtok: float | None = None
    profile: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    """category (or ``overall``) -> (score 0..1, prompts graded)."""
    benchmark: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """category (or ``overall``) -> normalised public benchmark 0..1."""
    tier: str | None = None
    replicas: tuple[tuple[str, str, str | None], ...] = ()
    """(backend, upstream model, host)."""

    @classmethod
    def from_catalog(cls, m: CatalogModelV1, *, profile_n: float = 10.0, tier: str | None = None) -> ModelSpec:
        caps = m.capabilities
        bench = {OVERALL: m.benchmark} if m.benchmark is not None else {}
        return cls(
            name=m.name,
            params_b=m.params_b,
            active_params_b=m.active_params_b,
            context_length=m.context_length,
            chat=caps.chat,
            completion=caps.completion,
            vision=caps.vision,
            tools=caps.tools,
            embedding=caps.embedding,
            coder=m.coder,
            tokens_per_s=m.tokens_per_s,
            ttft_ms=m.ttft_ms,
            profile=MappingProxyType({k: (v, profile_n) for k, v in m.quality.items()}),
            benchmark=MappingProxyType(bench),
            tier=tier,
            replicas=tuple((r.backend, r.upstream_model, r.host) for r in m.replicas),
        )


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class ModelTable:
    """One row per model; arrays are read-only."""

    version: str
    specs: tuple[ModelSpec, ...]
    index: Mapping[str, int]
    categories: tuple[str, ...]
    params_b: F
    size_known: B
    eff_b: F
    power: F
    tier: I
    context: F
    chat: B
    completion: B
    vision: B
    tools: B
    embedding: B
    coder: B
    speed: F
    """0..1 within the catalog (1 = fastest)."""
    cheap: F
    """0..1 within the catalog (1 = cheapest; 0 everywhere when no prices are known)."""
    capability: Mapping[str, F]
    """category -> static capability estimate 0..1."""
    cap_low: Mapping[str, float]
    cap_span: Mapping[str, float]
    evidence: Mapping[str, F]
    """category -> graded prompts + benchmark pseudo-prompts behind the estimate."""
    tokens_per_s: F
    speed_measured: B

    @property
    def size(self) -> int:
        return len(self.specs)

    def capability_for(self, category: str) -> F:
        return self.capability.get(category, self.capability[OVERALL])

    @classmethod
    def build(
        cls,
        specs: Sequence[ModelSpec],
        cfg: ScoringConfig | None = None,
        *,
        version: str = "",
        categories: Sequence[str] = (),
    ) -> ModelTable:
        cfg = cfg or ScoringConfig()
        specs = tuple(specs)
        n = len(specs)
        params = np.array([s.params_b if s.params_b else np.nan for s in specs], dtype=np.float64)
        known = ~np.isnan(params)
        total = np.where(known, params, cfg.unknown_params_b)
        active = np.array(
            [s.active_params_b if s.active_params_b else t for s, t in zip(specs, total, strict=True)], dtype=np.float64
        )
        eff = np.sqrt(total * np.minimum(active, total))
        power = np.array([size_power(float(b)) for b in eff])
        t_small, t_large = cfg.tier_thresholds_b
        tier = np.where(eff < t_small, 0, np.where(eff >= t_large, 2, 1)).astype(np.intp)
        for i, s in enumerate(specs):
            if s.tier in TIERS:
                tier[i] = TIERS.index(s.tier)
        tps = np.array([s.tokens_per_s or estimated_tokens_per_s(float(a)) for s, a in zip(specs, active, strict=True)])
        ttft = np.array([s.ttft_ms or estimated_ttft_ms(float(a)) for s, a in zip(specs, active, strict=True)])
        raw_speed = 0.7 * np.log(np.maximum(tps, 0.1)) - 0.3 * np.log(np.maximum(ttft, 1.0))
        speed = _unit(raw_speed)
        price = np.array([s.price_per_mtok if s.price_per_mtok is not None else np.nan for s in specs])
        if n and (~np.isnan(price)).any():
            lp = np.log(np.maximum(np.where(np.isnan(price), np.nanmedian(price), price), 1e-3))
            cheap = 1.0 - _unit(lp)
        else:
            cheap = np.zeros(n)  # no prices: no cost term
        cats = {OVERALL, *categories}
        for s in specs:
            cats.update(s.profile)
            cats.update(s.benchmark)
        capability: dict[str, F] = {}
        evidence: dict[str, F] = {}
        low: dict[str, float] = {}
        span: dict[str, float] = {}
        for cat in sorted(cats):
            cap, ev = _capability(specs, power, cat, cfg)
            capability[cat] = _frozen(cap)
            evidence[cat] = _frozen(ev)
            low[cat] = float(cap.min()) if n else 0.0
            span[cat] = max(0.05, float(cap.max() - cap.min())) if n else 1.0
        ctx = np.array([float(s.context_length) if s.context_length else np.inf for s in specs])

        def mask(attr: str) -> B:
            return _frozen(np.array([bool(getattr(s, attr)) for s in specs], dtype=bool))

        return cls(
            version=version,
            specs=specs,
            index=MappingProxyType({s.name: i for i, s in enumerate(specs)}),
            categories=tuple(sorted(cats)),
            params_b=_frozen(total),
            size_known=_frozen(known),
            eff_b=_frozen(eff),
            power=_frozen(power),
            tier=_frozen(tier),
            context=_frozen(ctx),
            chat=mask("chat"),
            completion=mask("completion"),
            vision=mask("vision"),
            tools=mask("tools"),
            embedding=mask("embedding"),
            coder=mask("coder"),
            speed=_frozen(speed),
            cheap=_frozen(cheap),
            capability=MappingProxyType(capability),
            cap_low=MappingProxyType(low),
            cap_span=MappingProxyType(span),
            evidence=MappingProxyType(evidence),
            tokens_per_s=_frozen(tps),
            speed_measured=_frozen(np.array([s.tokens_per_s is not None for s in specs], dtype=bool)),
        )


def _unit(x: F) -> F:
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)


def _capability(specs: tuple[ModelSpec, ...], power: F, cat: str, cfg: ScoringConfig) -> tuple[F, F]:
    """Per model: evidence (profile, benchmark) for ``cat`` (else ``overall``) shrunk towards a size prior.

    The prior is a weighted line ``a + b·power`` fitted on the models that have evidence (slope
    kept ≥ 0.05 so that size still orders unknown models; default 0.3 + 0.4·power with fewer than
    two); an unknown model thus gets what its measured peers of the same size get."""
    n = len(specs)
    obs = np.full(n, np.nan)
    weight = np.zeros(n)
    for i, s in enumerate(specs):
        num = den = 0.0
        prof = s.profile.get(cat) or s.profile.get(OVERALL)
        if prof is not None and prof[1] > 0:
            num += prof[0] * prof[1]
            den += prof[1]
        bench = s.benchmark.get(cat, s.benchmark.get(OVERALL))
        if bench is not None:
            num += bench * cfg.benchmark_strength
            den += cfg.benchmark_strength
        if den > 0:
            obs[i] = num / den
            weight[i] = den
    has = weight > 0
    a, b = 0.3, 0.4
    if has.sum() >= 2:
        w = weight[has]
        x, y = power[has], obs[has]
        xm, ym = float(np.average(x, weights=w)), float(np.average(y, weights=w))
        var = float(np.average((x - xm) ** 2, weights=w))
        slope = float(np.average((x - xm) * (y - ym), weights=w)) / var if var > 1e-9 else 0.0
        b = max(0.05, slope)
        a = ym - b * xm
    elif has.sum() == 1:
        a = float(obs[has][0]) - b * float(power[has][0])
    prior = np.clip(a + b * power, 0.0, 1.0)
    k = cfg.prior_strength
    est = np.where(has, (k * prior + weight * np.nan_to_num(obs)) / (k + weight), prior)
    return np.clip(est, 0.0, 1.0), weight


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
class ReplicaTable:
    """One row per (model, backend) replica, with the fleet state the gpu-agents reported."""

    model: I
    backend: tuple[str, ...]
    upstream: tuple[str, ...]
    resident: B
    healthy: B
    no_room: B
    free_frac: F
    """Free VRAM share on the replica's host (NaN unknown)."""
    inflight: F

    @property
    def size(self) -> int:
        return len(self.backend)

    @classmethod
    def from_specs(
        cls,
        table: ModelTable,
        *,
        resident: frozenset[tuple[str, str]] = frozenset(),
        unhealthy: frozenset[str] = frozenset(),
        free_frac: Mapping[str, float] | None = None,
        no_room: frozenset[tuple[str, str]] = frozenset(),
        inflight: Mapping[tuple[str, str], int] | None = None,
    ) -> ReplicaTable:
        """Replicas of every model (a model without replicas gets one on backend ``""``)."""
        rows: list[tuple[int, str, str]] = []
        for i, s in enumerate(table.specs):
            reps = s.replicas or (("", s.name, None),)
            rows.extend((i, b, u) for b, u, _ in reps)
        free_frac = free_frac or {}
        inflight = inflight or {}
        return cls(
            model=_frozen(np.array([r[0] for r in rows], dtype=np.intp)),
            backend=tuple(r[1] for r in rows),
            upstream=tuple(r[2] for r in rows),
            resident=_frozen(np.array([(r[1], r[2]) in resident for r in rows], dtype=bool)),
            healthy=_frozen(np.array([r[1] not in unhealthy for r in rows], dtype=bool)),
            no_room=_frozen(np.array([(r[1], r[2]) in no_room for r in rows], dtype=bool)),
            free_frac=_frozen(np.array([free_frac.get(r[1], np.nan) for r in rows], dtype=np.float64)),
            inflight=_frozen(np.array([float(inflight.get((r[1], r[2]), 0)) for r in rows])),
        )


@dataclass(frozen=True, slots=True)
class Constraints:
    """What operator rules impose on one request (built by ``rules.py``)."""

    requested: str | None = None
    """A concrete model (after alias resolution); ``None`` routes for me."""
    requested_how: str = ""
    pinned: str | None = None
    """A model pinned for the prompt's category: ranked first when it passes the filters."""
    allowed: B | None = None
    blocked: B | None = None
    backends: frozenset[str] | None = None
    """Only replicas on these backends (a per-client rule)."""
    quality: float | None = None
    """Quality preference from a client rule (the request's own value wins)."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Learned:
    """Learned estimates aligned with a :class:`ModelTable` (NaN p where a model has no data)."""

    p: F
    n_eff: F


# --------------------------------------------------------------------------- output


@dataclass(frozen=True, slots=True)
class Scored:
    model: str
    backend: str
    upstream_model: str
    score: float
    terms: Mapping[str, float]
    reasons: tuple[str, ...]

    def to_wire(self) -> CandidateV1:
        return CandidateV1(
            model=self.model,
            backend=self.backend,
            upstream_model=self.upstream_model,
            score=self.score,
            reasons=list(self.reasons),
            terms=dict(self.terms),
        )


@dataclass(frozen=True, slots=True)
class Ranking:
    analysis: PromptAnalysis
    candidates: tuple[Scored, ...] = ()
    filtered: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()
    unservable: str | None = None
    unservable_code: str | None = None
    catalog_version: str = ""
    quality: float = 0.5
    """The quality preference the decision used."""
    chosen: int = -1
    """Model row of the first candidate (−1: none); for benchmarks and tests."""

    def to_reply(self, max_candidates: int = 8) -> RouteReplyV1:
        return RouteReplyV1(
            candidates=[c.to_wire() for c in self.candidates[:max_candidates]],
            analysis=self.analysis.to_wire(),
            filtered=dict(self.filtered),
            unservable=self.unservable,
            unservable_code=self.unservable_code,
            catalog_version=self.catalog_version,
        )


# --------------------------------------------------------------------------- filters


@dataclass(slots=True)
class Selection:
    mask: B
    filtered: dict[str, str]
    notes: list[str]
    unservable: str | None = None


def _drop(sel: Selection, table: ModelTable, removed: B, why: str) -> None:
    for i in np.flatnonzero(removed & sel.mask):
        sel.filtered.setdefault(table.specs[i].name, why)
    sel.mask = sel.mask & ~removed


def select(
    kind: RequestKind,
    has_images: bool,
    has_tools: bool,
    need_tokens: int,
    table: ModelTable,
    cons: Constraints,
    cfg: ScoringConfig,
) -> Selection:
    """The hard filters and their documented fallback (module docstring)."""
    sel = Selection(mask=np.ones(table.size, dtype=bool), filtered={}, notes=[])
    if cons.blocked is not None:
        _drop(sel, table, cons.blocked, "blocked by an operator rule")
    if kind is RequestKind.EMBEDDING:
        _drop(sel, table, ~table.embedding, "not an embedding model")
        if not sel.mask.any():
            sel.unservable = "no embedding model is available"
        return sel
    generates = table.chat if kind is RequestKind.CHAT else table.completion
    _drop(sel, table, ~generates, "embedding-only model" if kind is RequestKind.CHAT else "no completion support")
    if not sel.mask.any():
        sel.unservable = f"no model supporting {kind.value} is available"
        return sel
    _modality(sel, table, has_images, has_tools, cfg)
    if sel.unservable is not None:
        return sel
    fits = table.context >= need_tokens
    if not (sel.mask & fits).any():
        if not cfg.relax_context:
            largest = float(table.context[sel.mask].max())
            sel.unservable = f"the request needs ~{need_tokens} tokens of context; the largest window is {largest:.0f}"
            return sel
        best = np.flatnonzero(sel.mask)[int(np.argmax(table.context[sel.mask]))]
        fits = np.zeros(table.size, dtype=bool)
        fits[best] = True
        sel.notes.append(f"no window fits ~{need_tokens} tokens: using the largest")
    for i in np.flatnonzero(sel.mask & ~fits):
        sel.filtered.setdefault(table.specs[i].name, f"context window {table.context[i]:.0f} < ~{need_tokens} tokens")
    sel.mask = sel.mask & fits
    if cons.allowed is not None:
        if (sel.mask & cons.allowed).any():
            _drop(sel, table, ~cons.allowed, "not in the allow list")
        else:
            sel.notes.append("the allow list leaves no suitable model: ignored for this request")
    return sel


def _modality(sel: Selection, table: ModelTable, has_images: bool, has_tools: bool, cfg: ScoringConfig) -> None:
    if has_images:
        if (sel.mask & table.vision).any():
            _drop(sel, table, ~table.vision, "no vision support")
        elif cfg.unservable_without_vision:
            sel.unservable = "no vision-capable model is available for a request with images"
            return
        else:
            sel.notes.append("no vision-capable model: the images will be ignored")
    if has_tools:
        if (sel.mask & table.tools).any():
            _drop(sel, table, ~table.tools, "no tools support")
        else:
            sel.notes.append("no tools-capable model: routed to a chat model that may ignore the tools")


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class TermArrays:
    """Per-model terms (all models; those filtered out are simply never ranked)."""

    names: tuple[str, ...]
    values: F
    """(terms, models)"""

    @property
    def total(self) -> F:
        return self.values.sum(axis=0)  # type: ignore[no-any-return]


def model_terms(
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    cfg: ScoringConfig,
    state: ModelState | None = None,
    learned: Learned | None = None,
) -> TermArrays:
    """The model-level terms of the module docstring, vectorised over the catalog."""
    w = cfg.weights
    n = table.size
    cat = a.category
    cap = table.capability_for(cat)
    key = cat if cat in table.capability else OVERALL
    low, span = table.cap_low[key], table.cap_span[key if cfg.category_span else OVERALL]
    imp = 0.4 + 0.6 * a.complexity
    level = LEVELS.index(a.level) if a.level in LEVELS else 1
    zeros = np.zeros(n)
    if cfg.policy == "tiers":
        target = min(2, max(0, level + (1 if q >= 0.75 else -1 if q < 0.25 else 0)))
        tier = -w.tier * np.abs(table.tier - target).astype(np.float64)
        capability = learned_t = speed = cost = min_size = zeros
    else:
        tier = zeros
        scale = w.capability * q * imp / span
        if learned is not None:
            has = ~np.isnan(learned.p)
            alpha = np.where(has, learned.n_eff / (learned.n_eff + cfg.learned_k), 0.0)
            p = np.where(has, learned.p, cap)
            capability = scale * (1.0 - alpha) * (cap - low)
            learned_t = scale * alpha * (p - low)
        else:
            capability = scale * (cap - low)
            learned_t = zeros
        speed = w.speed * (1.0 - q) * table.speed
        cost = w.cost * (1.0 - q) * table.cheap
        required = cfg.min_size_b.get(cat, cfg.min_size_b.get("general", (0.0, 0.0, 0.0)))[level]
        if required > 0:
            short = np.log2(required / np.maximum(table.eff_b, 1e-3)) / 3.0
            min_size = -w.min_size * np.clip(short, 0.0, 1.0)
        else:
            min_size = zeros
    if cat == "coding":
        coder = w.coder * table.coder
    else:
        coder = -0.5 * w.coder * table.coder
    if state is not None:
        feedback = w.feedback * state.feedback_mean * state.feedback_n / (state.feedback_n + 5.0)
        diversity = -w.diversity * np.maximum(0.0, state.recent_share - 1.0 / max(n, 1))
    else:
        feedback = diversity = zeros
    names = ("capability", "learned", "speed", "cost", "min_size", "tier", "coder", "feedback", "diversity")
    values = np.vstack(
        [capability, learned_t, speed, cost, min_size, tier, coder.astype(np.float64), feedback, diversity]
    )
    return TermArrays(names, values)


REPLICA_TERMS = ("resident", "unhealthy", "no_room", "free_vram", "busy")


def replica_terms(reps: ReplicaTable, cfg: ScoringConfig) -> F:
    w = cfg.weights
    return np.vstack(
        [
            w.resident * reps.resident,
            -w.unhealthy * ~reps.healthy,
            -w.no_room * reps.no_room,
            w.free_vram * np.nan_to_num(reps.free_frac, nan=0.0),
            -w.busy * reps.inflight / (reps.inflight + 4.0),
        ]
    ).astype(np.float64)


def rank(
    req: RouteRequestV1,
    a: PromptAnalysis,
    table: ModelTable,
    reps: ReplicaTable,
    cfg: ScoringConfig,
    *,
    cons: Constraints | None = None,
    state: ModelState | None = None,
    learned: Learned | None = None,
    limit: int | None = 8,
) -> Ranking:
    """Filters, terms, ranking; ``limit=None`` explains every candidate."""
    cons = cons or Constraints()
    need = a.tokens + (req.max_tokens or 0)
    if cons.requested is not None:
        idx = table.index.get(cons.requested)
        if idx is None:
            return Ranking(
                a,
                unservable=f"model '{cons.requested}' not found",
                unservable_code=MODEL_NOT_FOUND,
                catalog_version=table.version,
            )
        sel = _select_requested(req, idx, need, table)
        if cons.requested_how:
            sel.notes.insert(0, cons.requested_how)
    else:
        sel = select(req.kind, req.has_images, req.has_tools, need, table, cons, cfg)
    if sel.unservable is not None:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            unservable=sel.unservable,
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    rmask = sel.mask[reps.model]
    if cons.backends is not None:
        on = np.array([b in cons.backends for b in reps.backend], dtype=bool)
        if (rmask & on).any():
            rmask = rmask & on
        else:
            sel.notes.append("the client's backend rule leaves no suitable replica: ignored")
    q = req.quality if req.quality is not None else cons.quality if cons.quality is not None else cfg.default_quality
    terms = model_terms(a, q, table, cfg, state, learned if cons.requested is None else None)
    mscore = terms.total
    rterms = replica_terms(reps, cfg)
    rscore = mscore[reps.model] + rterms.sum(axis=0)
    rows = np.flatnonzero(rmask)
    if rows.size == 0:
        return Ranking(
            a,
            filtered=MappingProxyType(sel.filtered),
            notes=tuple(sel.notes),
            unservable="no replica is available",
            unservable_code=UNSERVABLE,
            catalog_version=table.version,
        )
    order = rows[np.argsort(-rscore[rows], kind="stable")]
    if cons.pinned is not None and cons.requested is None:
        pin = table.index.get(cons.pinned)
        if pin is not None:
            first = order[reps.model[order] == pin]
            if first.size:
                order = np.concatenate([first, order[reps.model[order] != pin]])
                sel.notes.append(f"pinned for {a.category} prompts: {cons.pinned}")
    chosen = int(reps.model[order[0]])
    if limit is not None:
        order = order[:limit]
    cands = tuple(_scored(int(j), a, q, table, reps, terms, rterms, rscore, sel, cons) for j in order)
    return Ranking(
        a,
        cands,
        MappingProxyType(sel.filtered),
        tuple(sel.notes),
        catalog_version=table.version,
        quality=q,
        chosen=chosen,
    )


def choose(a: PromptAnalysis, q: float, table: ModelTable, mask: B, cfg: ScoringConfig, learned: Learned | None) -> int:
    """The best model row among ``mask`` (no replicas, no reasons): the benchmark's inner loop."""
    s = model_terms(a, q, table, cfg, None, learned).total
    s = np.where(mask, s, -np.inf)
    return int(np.argmax(s))


def _select_requested(req: RouteRequestV1, idx: int, need: int, table: ModelTable) -> Selection:
    name = table.specs[idx].name
    sel = Selection(mask=np.zeros(table.size, dtype=bool), filtered={}, notes=[])
    if req.kind is RequestKind.EMBEDDING:
        if not table.embedding[idx]:
            sel.unservable = f"model '{name}' is not an embedding model"
    else:
        generates = table.chat[idx] if req.kind is RequestKind.CHAT else table.completion[idx]
        if not generates:
            sel.unservable = f"model '{name}' cannot serve {req.kind.value} requests"
        if req.has_images and not table.vision[idx]:
            sel.notes.append("the requested model has no vision support")
        if req.has_tools and not table.tools[idx]:
            sel.notes.append("the requested model has no tools support")
        if table.context[idx] < need:
            sel.notes.append(f"the prompt may exceed the model's context window ({table.context[idx]:.0f})")
    if sel.unservable is None:
        sel.mask[idx] = True
    return sel


def _scored(
    j: int,
    a: PromptAnalysis,
    q: float,
    table: ModelTable,
    reps: ReplicaTable,
    terms: TermArrays,
    rterms: F,
    rscore: F,
    sel: Selection,
    cons: Constraints,
) -> Scored:
    i = int(reps.model[j])
    spec = table.specs[i]
    t = {name: round(float(terms.values[k, i]), 4) for k, name in enumerate(terms.names) if terms.values[k, i] != 0.0}
    t.update({name: round(float(rterms[k, j]), 4) for k, name in enumerate(REPLICA_TERMS) if rterms[k, j] != 0.0})
    size = f"{table.params_b[i]:g}B" if table.size_known[i] else "size unknown"
    if table.eff_b[i] < table.params_b[i] - 1e-6:
        size += f" (MoE, ~{table.eff_b[i]:.0f}B effective)"
    cat = a.category if a.category in table.capability else OVERALL
    ev = float(table.evidence[cat][i])
    reasons = [
        f"{a.level} {a.category} prompt (complexity {a.complexity:.2f}), quality preference {q:.2f}",
        f"{size}, {TIERS[int(table.tier[i])]} tier",
        f"capability {table.capability[cat][i]:.2f} for {cat}"
        + (f" ({ev:.0f} graded prompts/benchmark)" if ev > 0 else " (size prior: no profile or benchmark)"),
        f"~{table.tokens_per_s[i]:.0f} tok/s ({'measured' if table.speed_measured[i] else 'estimated'})",
    ]
    bench = spec.benchmark.get(cat, spec.benchmark.get(OVERALL))
    if bench is not None:
        reasons.append(f"benchmark {bench:.2f}")
    if t.get("learned"):
        reasons.append(f"learned from similar graded prompts ({t['learned']:+.3f})")
    if t.get("min_size", 0.0) < 0:
        reasons.append(f"below the minimum size for {a.level} {a.category} ({t['min_size']:+.2f})")
    if table.coder[i]:
        reasons.append(
            "coder model for a coding prompt" if a.category == "coding" else "coder model, non-coding prompt"
        )
    if t.get("feedback"):
        reasons.append(f"user feedback ({t['feedback']:+.3f})")
    backend = reps.backend[j]
    if reps.resident[j]:
        reasons.append(f"loaded on {backend}")
    if not reps.healthy[j]:
        reasons.append(f"{backend} reported unhealthy")
    if reps.no_room[j]:
        reasons.append("not loaded, and its host lacks the free memory")
    if reps.inflight[j] > 0:
        reasons.append(f"{reps.inflight[j]:.0f} requests in flight on {backend}")
    reasons.extend(cons.notes)
    reasons.extend(sel.notes)
    return Scored(spec.name, backend, reps.upstream[j], round(float(rscore[j]), 4), MappingProxyType(t), tuple(reasons))
