"""Scorer settings: the shared :class:`CommonSettings` plus ``scorer`` options
(``TURNOUT_SCORER__OPS_PORT``, ``TURNOUT_SCORER__ROUTING__WEIGHTS='{"speed": 0.8}'``,
``TURNOUT_SCORER__ALIASES='{"fast": "llama3.2:1b"}'`` …)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from turnout.common.settings import CommonSettings
from turnout.scorer.scoring_config import Weights
from turnout.scorer.vram import VramOptions

WEIGHT_NAMES = tuple(f.name for f in fields(Weights))


class RouteCacheOptions(BaseModel):
    """The routing-decision cache: exact and semantic hits, lifetime, similarity threshold."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description=(
            "Off by default: with the decision memo in each replica it costs more CPU than it saves "
            "(bench/route_cache_value.py; docs/routing.md)"
        ),
    )
    lookup_timeout_s: float = Field(
        default=0.02, gt=0, description="A lookup's bound (half the request's remaining budget when less)"
    )
    ttl_s: float = Field(default=30.0, gt=0, description="How long a cached decision lives")
    semantic: bool = Field(default=True, description="Also reuse decisions of near-identical prompts")
    threshold: float = Field(default=0.97, ge=0, le=1, description="Cosine similarity for a semantic hit")
    capacity: int = Field(default=4096, ge=16, description="Recent prompts kept for semantic lookups")


class ClassifierOptions(BaseModel):
    """An optional LLM that classifies prompts the heuristics are unsure of."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL; unset = no classifier")
    model: str = ""
    api_key: str | None = None
    timeout_s: float = Field(default=0.25, gt=0)
    band: tuple[float, float] = (0.25, 0.75)
    min_confidence: float = Field(default=0.5, ge=0, le=1)


class RoutingOptions(BaseModel):
    """The routing engine (``engine.py``, ``scoring.py``): rules, caches, learned term, classifier."""

    model_config = ConfigDict(extra="forbid")

    rules_file: str | None = Field(default=None, description="Operator rules YAML (hot-reloaded)")
    rules_poll_s: float = Field(default=2.0, gt=0)
    policy: str = Field(default="score", pattern="^(score|tiers)$")
    speed_scale: str = Field(
        default="linear", pattern="^(linear|log)$", description="The speed term's scale of expected latency"
    )
    queue_aware: bool = Field(
        default=True,
        description="The speed term counts each replica's expected wait (a slot, its backend's queue behind a load)",
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description=f"Overrides of the scoring weights ({', '.join(WEIGHT_NAMES)})"
    )
    tier_thresholds_b: tuple[float, float] = (10.0, 40.0)
    unservable_without_vision: bool = True
    extra_categories: dict[str, list[str]] = Field(default_factory=dict, description="category -> keywords")
    learned: bool = Field(default=True, description="Learn from graded prompts and feedback (Postgres)")
    learned_refresh_s: float = Field(default=300.0, gt=0)
    learned_k: float = Field(
        default=4.0, gt=0, description="Neighbour mass at which learned estimates get half the weight"
    )
    prior: bool = Field(
        default=False,
        description="Use the shipped router prior when no trained one is active (an activated one is always used)",
    )
    prior_mass: float = Field(default=4.0, ge=0, description="How many graded neighbours the router prior counts as")
    prior_file: str | None = Field(
        default=None, description="A router prior artefact to start with instead of the shipped one"
    )
    feedback_half_life_days: float = Field(default=14.0, gt=0)
    decision_reserve_s: float = Field(
        default=0.01, ge=0, description="Of the caller's route deadline, kept for scoring and the VRAM planner"
    )
    route_cache: RouteCacheOptions = Field(default_factory=RouteCacheOptions)
    classifier: ClassifierOptions = Field(default_factory=ClassifierOptions)

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(WEIGHT_NAMES))
        if unknown:
            raise ValueError(
                f"unknown scoring weight(s) {', '.join(unknown)}; the weights are {', '.join(WEIGHT_NAMES)}"
            )
        negative = sorted(k for k, w in v.items() if w < 0)
        if negative:
            raise ValueError(f"scoring weights must not be negative: {', '.join(negative)}")
        return v


class ScorerOptions(BaseModel):
    """The scorer's own settings (``TURNOUT_SCORER__*``)."""

    model_config = ConfigDict(extra="forbid")

    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9101, ge=0, le=65535)
    catalog_refresh_s: float = Field(default=30.0, gt=0, description="Reload the catalog at least this often")
    fleet_poll_s: float = Field(default=2.0, gt=0, description="Re-read fleet state at least this often")
    shared_poll_s: float = Field(
        default=0.5, gt=0, description="Re-read the gateways' in-flight counts and open circuits this often"
    )
    load_poll_s: float = Field(
        default=0.25, gt=0, description="Re-read the gateways' in-flight counts (the busy term) this often"
    )
    inflight_lag_s: float = Field(
        default=0.35,
        ge=0,
        le=10,
        description="How long after a decision the gateways' published in-flight counts surely hold its request "
        "(the gateways' inflight_publish_s plus a margin): each decision counts in flight on its replica until a "
        "read this much later, or until its expected time is over; for a gateway that names itself and writes when "
        "it took its counts, until counts it took inflight_margin_s after the decision are read",
    )
    inflight_margin_s: float = Field(
        default=0.05,
        ge=0,
        le=10,
        description="A decision for a gateway counts as held by that gateway's published in-flight counts when the "
        "gateway took them this long after the decision, by the two hosts' wall clocks: more than the reply's way "
        "back to the gateway plus the clocks' skew",
    )
    schema_wait_s: float = Field(default=120.0, ge=0, description="How long to wait for the DB schema at start")
    max_concurrency: int = Field(default=256, ge=1, description="RPC requests handled at once")
    virtual_models: list[str] = Field(
        default_factory=lambda: ["turnout/auto"], description="Requested names that mean 'route for me'"
    )
    aliases: dict[str, str] = Field(default_factory=dict, description="Requested name -> catalog model name")
    default_quality: float = Field(
        default=0.65, ge=0, le=1, description="Quality preference when a request has none (docs/routing.md)"
    )
    unknown_params_b: float = Field(default=8.0, gt=0, description="Size assumed for a model whose size is unknown")
    max_candidates: int = Field(default=8, ge=1, le=64, description="Candidates in a reply")
    routing: RoutingOptions = Field(default_factory=RoutingOptions)
    vram: VramOptions = Field(default_factory=VramOptions, description="VRAM budgets, pinning, load/unload orders")

    @model_validator(mode="before")
    @classmethod
    def _no_top_level_weights(cls, data: Any) -> Any:
        """``scorer.weights`` (``TURNOUT_SCORER__WEIGHTS__*``) was declared once and never read:
        say where the weights are rather than ignore them."""
        if isinstance(data, dict) and "weights" in data:
            raise ValueError(
                "scorer.weights (TURNOUT_SCORER__WEIGHTS__*) is not a setting: scoring weights are "
                "scorer.routing.weights, e.g. TURNOUT_SCORER__ROUTING__WEIGHTS='{\"speed\": 0.8}' "
                f"(weights: {', '.join(WEIGHT_NAMES)})"
            )
        return data


class ScorerSettings(CommonSettings):
    """The scorer's settings: the shared ones plus ``scorer``."""

    scorer: ScorerOptions = Field(default_factory=ScorerOptions)
