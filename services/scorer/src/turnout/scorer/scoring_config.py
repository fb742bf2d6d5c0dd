"""The scoring model's knobs: term weights and the configuration every part of the ranking
reads (``catalog.py`` builds the table with it, ``filters.py`` relaxes by it, ``terms.py``
weighs by it). See ``scoring.py`` for the model they parameterise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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
    busy: float = 0.15


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
    cost_tokens: float = 2.0
    """The cost term follows what a call costs: it is scaled by (prompt tokens + 200) / 400,
    clamped to [1/cost_tokens, cost_tokens] (1: off), so a long prompt leans cheaper and a short
    one dearer at the same ``q``. Measured (``bench/routing_quality.py``, 2 seeds, off → on):
    APGR by cost, heuristics only, LLMRouter in-dist 0.716 → 0.760, arena lodo+profile 0.670 →
    0.697, MMLU in-dist 0.567 → 0.591; heuristics + learned, arena lodo 0.664 → 0.687. By call
    share, which counts every call alike, MMLU heuristics fall 0.608 → 0.558 (learned 0.661 →
    0.654, within noise): the price of spending where the tokens are cheap."""
    category_span: bool = False
    """Scale the static capability by the catalog's spread for the prompt's category (else the
    overall spread). Off: on held-out MMLU (``bench/routing_quality.py``) the category spread
    costs APGR by call share — heuristics alone 0.61 → 0.53 in-distribution and 0.58 → 0.55 with
    a 31-prompt profile (leave-one-data-set-out). The learned term is always scaled by the
    overall spread: its estimates are probabilities on one scale (with the category spread:
    0.67 → 0.61)."""
    speed_scale: str = "linear"
    """How the speed term scales each model's expected latency between the catalog's fastest
    (1) and slowest (0) for the prompt: ``linear`` in seconds, or ``log`` (before). Capability and
    log latency both follow log model size, so on a log scale the two terms nearly cancelled at
    quality 0.5 and the choice sat at a corner of the catalog (the smallest or the largest model),
    jumping between 0.5 and 0.65; in seconds the latency grows faster than the capability as a
    model doubles, and each preference finds a model in between (docs/routing.md)."""
    default_quality: float = 0.65
    """The quality preference of a request that gives none: with the linear speed scale, where the
    fleet bench's default row is ahead of the least-busy baseline on quality (seeds 1-3; README)."""
    unknown_params_b: float = 8.0
    replica_parallel: float = 4.0
    """Requests a replica serves at once (Ollama's ``OLLAMA_NUM_PARALLEL``): the busy term counts
    in-flight requests in these units."""
    busy_cap: float = 8.0
    """The busy term stops growing at this many times ``replica_parallel`` in flight."""
    ttft_probe_tokens: float = 50.0
    """Prompt tokens at which the catalog's ``ttft_ms`` is measured: the profiling suite's
    prompts, ~41 tokens at the median plus the chat template. The speed term derives the prefill
    rate from it (:func:`~turnout.scorer.terms.expected_ttft_s`)."""
    wait_tokens: float = 256.0
    """Tokens a replica generates per request, on average: with its decode speed, the time each
    request ahead adds to the expected wait (:func:`~turnout.scorer.terms.expected_wait_s`), and
    the reply the speed term times (:func:`~turnout.scorer.terms.expected_latency_s`) unless the
    request's ``max_tokens`` is less (:func:`~turnout.scorer.terms.reply_tokens`)."""
    queue_aware: bool = True
    """The speed term counts each replica's expected wait (:func:`~turnout.scorer.terms.wait_term`):
    a slot, and its backend's queue behind a load; off: the wait feeds only the VRAM planner's
    admission step and the gateway's first-byte bound, as before."""
    max_loaded_per_gpu: int = 3
    """Models a backend keeps loaded per GPU (``OLLAMA_MAX_LOADED_MODELS``; the VRAM planner's
    ``max_loaded_per_gpu``, which the scorer's settings copy here; 0: no limit): a load on a
    backend at its limit must unload one first."""
    load_fixed_s: float = 1.0
    load_gib_per_s: float = 2.5
    """The load-time estimate, as the VRAM planner's (``VramOptions``; the settings copy it)."""
