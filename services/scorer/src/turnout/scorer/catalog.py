"""The scorer's one catalog table: one row per routable model and one per replica, with what
the ranking and the VRAM planner both read (sizes, capabilities, speed, capability estimates per
category, context window, memory need, where each replica runs). Built from the catalog snapshot
(:meth:`ModelTable.from_snapshot`) off the request path; immutable, arrays read-only, swapped
whole on a catalog change. Fleet state joins it per replica in ``fleet.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from turnout.common.backends.config import BackendKind
from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1
from turnout.scorer.scoring_config import OVERALL, TIERS, ScoringConfig

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.intp]  # noqa: E741

A = TypeVar("A", bound=npt.NDArray[Any])
T = TypeVar("T")

TEXT_ONLY_KIND = BackendKind.OLLAMA.value
"""The backend kind that takes text input only: Ollama's ``/api/embed`` has no token-id input."""


def frozen(a: A) -> A:
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


PROFILE_CATEGORIES: Mapping[str, str] = MappingProxyType({"code": "coding", "extraction": "summarisation"})
"""The profiling suite's category names that the prompt analysis calls otherwise."""


def profile_from_quality(quality: Mapping[str, float], n: float) -> dict[str, tuple[float, float]]:
    """A catalog model's profile scores (the profiling suite's categories) keyed by the prompt
    analysis' categories: ``code`` is also ``coding``, ``extraction`` also ``summarisation``; and
    ``overall``, when the catalog has none, is the mean of the graded categories, so a prompt of a
    category the suite does not grade (translation) reads the model's measured standing rather
    than its size alone. Each entry counts ``n`` graded prompts."""
    prof = {k: (v, n) for k, v in quality.items()}
    for suite_name, name in PROFILE_CATEGORIES.items():
        if suite_name in quality and name not in quality:
            prof[name] = (quality[suite_name], n)
    if quality and OVERALL not in quality:
        prof[OVERALL] = (sum(quality.values()) / len(quality), n)
    return prof


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
    prefill_tokens_per_s: float | None = None
    """Prompt tokens processed per second, profiled; ``None``: derived from ``ttft_ms``."""
    price_per_mtok: float | None = None
    profile: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    """category (or ``overall``) -> (score 0..1, prompts graded)."""
    benchmark: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """category (or ``overall``) -> normalised public benchmark 0..1."""
    tier: str | None = None
    replicas: tuple[tuple[str, str, str | None], ...] = ()
    """(backend, upstream model, host)."""
    text_only: frozenset[str] = frozenset()
    """Backends among its replicas' that take text input only, no token ids (Ollama)."""
    quant: str | None = None
    vram_bytes: int | None = None
    """Memory the model takes when loaded (profiled or size on disk); ``None`` unknown."""

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
            prefill_tokens_per_s=m.prefill_tokens_per_s,
            profile=MappingProxyType(profile_from_quality(m.quality, profile_n)),
            benchmark=MappingProxyType(bench),
            tier=tier,
            replicas=tuple((r.backend, r.upstream_model, r.host) for r in m.replicas),
            text_only=frozenset(r.backend for r in m.replicas if r.kind == TEXT_ONLY_KIND),
            quant=m.quant,
            vram_bytes=m.vram_bytes,
        )


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class ModelTable:
    """One row per model; arrays are read-only."""

    version: str
    specs: tuple[ModelSpec, ...]
    index: Mapping[str, int]
    names: tuple[str, ...]
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
    ttft_s: F
    """Time to first token at the profile's probe length (s): measured (``ttft_ms``), else
    estimated from active parameters; the speed term scales it to each prompt
    (:func:`~turnout.scorer.terms.expected_ttft_s`)."""
    prefill_tps: F
    """Prompt tokens processed per second, profiled (NaN where not: the speed term derives a rate
    from ``ttft_s``)."""
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
    reasons: Mapping[str, tuple[tuple[str, ...], ...]]
    """category -> per model, the reasons that depend only on the catalog (size and tier,
    capability and its evidence, speed, benchmark): built once, not per request."""
    rep_model: I
    """Per replica: its model's row (a model without replicas gets one on backend ``""``)."""
    rep_backend: tuple[str, ...]
    rep_upstream: tuple[str, ...]
    rep_host: tuple[str | None, ...]
    rep_vram: F
    """Per replica: its model's ``vram_bytes`` (NaN unknown)."""
    rep_token_ids: B
    """Per replica: its backend accepts token-id input (not a text-only one: ``ModelSpec.text_only``)."""
    derived: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)
    """Arrays and selections derived from this table for the request path (filters per request
    shape, term arrays per category): built on first use, kept while the table lives
    (``filters.py``, ``terms.py``). Bounded by :meth:`remember`."""

    @property
    def size(self) -> int:
        return len(self.specs)

    def remember(self, key: object, value: T) -> T:
        """Keep ``value`` under ``key`` in :attr:`derived` (cleared past 512 entries)."""
        if len(self.derived) >= 512:
            self.derived.clear()
        self.derived[key] = value
        return value

    def spec(self, name: str) -> ModelSpec | None:
        i = self.index.get(name)
        return None if i is None else self.specs[i]

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
        prefill = np.array([s.prefill_tokens_per_s or np.nan for s in specs], dtype=np.float64)
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
            capability[cat] = frozen(cap)
            evidence[cat] = frozen(ev)
            low[cat] = float(cap.min()) if n else 0.0
            span[cat] = max(0.05, float(cap.max() - cap.min())) if n else 1.0
        ctx = np.array([float(s.context_length) if s.context_length else np.inf for s in specs])
        reasons = {
            cat: _static_reasons(specs, cat, total, known, eff, tier, capability[cat], evidence[cat], tps)
            for cat in capability
        }

        rows: list[tuple[int, str, str, str | None, float]] = []
        for i, s in enumerate(specs):
            need = float(s.vram_bytes) if s.vram_bytes else np.nan
            rows.extend((i, b, u, h, need) for b, u, h in (s.replicas or (("", s.name, None),)))

        def mask(attr: str) -> B:
            return frozen(np.array([bool(getattr(s, attr)) for s in specs], dtype=bool))

        return cls(
            version=version,
            specs=specs,
            index=MappingProxyType({s.name: i for i, s in enumerate(specs)}),
            names=tuple(s.name for s in specs),
            categories=tuple(sorted(cats)),
            params_b=frozen(total),
            size_known=frozen(known),
            eff_b=frozen(eff),
            power=frozen(power),
            tier=frozen(tier),
            context=frozen(ctx),
            chat=mask("chat"),
            completion=mask("completion"),
            vision=mask("vision"),
            tools=mask("tools"),
            embedding=mask("embedding"),
            coder=mask("coder"),
            ttft_s=frozen(np.maximum(ttft, 1.0) / 1000.0),
            prefill_tps=frozen(np.where(prefill > 0, prefill, np.nan)),
            cheap=frozen(cheap),
            capability=MappingProxyType(capability),
            cap_low=MappingProxyType(low),
            cap_span=MappingProxyType(span),
            evidence=MappingProxyType(evidence),
            reasons=MappingProxyType(reasons),
            tokens_per_s=frozen(tps),
            speed_measured=frozen(np.array([s.tokens_per_s is not None for s in specs], dtype=bool)),
            rep_model=frozen(np.array([r[0] for r in rows], dtype=np.intp)),
            rep_backend=tuple(r[1] for r in rows),
            rep_upstream=tuple(r[2] for r in rows),
            rep_host=tuple(r[3] for r in rows),
            rep_vram=frozen(np.array([r[4] for r in rows], dtype=np.float64)),
            rep_token_ids=frozen(np.array([r[1] not in specs[r[0]].text_only for r in rows], dtype=bool)),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: CatalogSnapshotV1,
        cfg: ScoringConfig | None = None,
        *,
        tiers: Mapping[str, str] | None = None,
        extra: Mapping[str, ModelSpec] | None = None,
    ) -> ModelTable:
        """The routable models of a snapshot (those with replicas); ``tiers`` are operator tier
        overrides, ``extra`` may replace a model's spec (richer profiles, prices)."""
        tiers = tiers or {}
        specs = []
        for m in snapshot.models:
            if not m.replicas:
                continue
            spec = (extra or {}).get(m.name) or ModelSpec.from_catalog(m)
            if m.name in tiers:
                spec = replace(spec, tier=tiers[m.name])
            specs.append(spec)
        return cls.build(specs, cfg, version=snapshot.version)


def _static_reasons(
    specs: tuple[ModelSpec, ...], cat: str, total: F, known: B, eff: F, tier: I, cap: F, ev: F, tps: F
) -> tuple[tuple[str, ...], ...]:
    out = []
    for i, s in enumerate(specs):
        size = f"{total[i]:g}B" if known[i] else "size unknown"
        if eff[i] < total[i] - 1e-6:
            size += f" (MoE, ~{eff[i]:.0f}B effective)"
        evidence = f" ({ev[i]:.0f} graded prompts/benchmark)" if ev[i] > 0 else " (size prior: no profile or benchmark)"
        r = [
            f"{size}, {TIERS[int(tier[i])]} tier",
            f"capability {cap[i]:.2f} for {cat}{evidence}",
            f"~{tps[i]:.0f} tok/s ({'measured' if s.tokens_per_s is not None else 'estimated'})",
        ]
        bench = s.benchmark.get(cat, s.benchmark.get(OVERALL))
        if bench is not None:
            r.append(f"benchmark {bench:.2f}")
        out.append(tuple(r))
    return tuple(out)


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
