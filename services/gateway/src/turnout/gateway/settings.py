"""Gateway settings: the shared :class:`CommonSettings` plus ``gateway`` options
(``TURNOUT_GATEWAY__PORT``, ``TURNOUT_GATEWAY__API_KEYS='["key-1","key-2"]'`` …)."""

from __future__ import annotations

import re
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from turnout.common.settings import CommonSettings
from turnout.gateway.images import ImageOptions
from turnout.gateway.paired_sampling import PairedSamplingOptions
from turnout.gateway.rate_limits import RateLimitOptions
from turnout.gateway.request_log import RequestLogOptions
from turnout.gateway.response_cache import ResponseCacheOptions
from turnout.gateway.shaping import ShapingOptions

_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "sk-test", "test"}
HASHED_KEY = re.compile(r"^sha256:[0-9a-f]{64}$")


class GatewayOptions(BaseModel):
    """The gateway's own settings (``TURNOUT_GATEWAY__*``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1", description="Listen address; loopback unless set (the chart and compose set 0.0.0.0)"
    )
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    virtual_model: str = Field(default="turnout/auto", min_length=1, description="The 'route for me' model name")
    route_timeout_s: float = Field(default=0.1, gt=0, le=10, description="Deadline of the scorer's route RPC")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="Larger request bodies get 413")
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Request headers larger than this get 431 and the connection closed"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Headers not complete this long after a request began: 408, closed"
    )
    max_prompt_chars: int = Field(default=8000, ge=256, description="Prompt text sent to the scorer, bounded")
    list_real_models: bool = Field(default=True, description="List real models after the virtual one in /v1/models")
    api_keys: list[SecretStr] | None = Field(
        default=None,
        description="Client keys; when set, /v1 and /api require 'Authorization: Bearer <key>'. "
        "An entry 'sha256:<64 hex>' is the SHA-256 of a key, so that the key itself need not be stored",
    )
    admin_allow_cidrs: list[IPvAnyNetwork] = Field(
        default_factory=list, description="When set, /admin answers only clients in these networks (403 otherwise)"
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS ('*' for any); empty: no CORS headers at all"
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve /metrics on this port (same host) instead of the API port"
    )
    max_n: int = Field(default=8, ge=1, le=128, description="Largest 'n' (choices per request) accepted")
    max_messages: int = Field(default=1000, ge=1, description="Most chat messages accepted in one request")
    prestop_delay_s: float = Field(
        default=5.0, ge=0, description="After SIGTERM: /ready is 503 at once, new requests are served this long"
    )
    drain_grace_s: float = Field(
        default=60.0, ge=0, description="After the pre-stop delay: how long streams in flight may finish"
    )
    connect_timeout_s: float = Field(default=3.0, gt=0, description="Per attempt: TCP connect to a backend")
    read_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Per attempt: the most a wait for the first byte or between two chunks may last "
        "(profiled models get a bound from their profile, upstream_limits.py)",
    )
    read_unprofiled_s: float = Field(
        default=30.0,
        gt=0,
        description="A model with no profile yet: bound on the first byte and each gap (a cold load included)",
    )
    unprofiled_min_tokens_per_s: float = Field(
        default=10.0,
        gt=0,
        description="A model with no profile yet, non-streamed: + max_tokens / this for the whole reply",
    )
    read_min_s: float = Field(default=10.0, gt=0, description="The least a profile-derived read bound may be")
    load_wait_max_s: float = Field(
        default=60.0,
        ge=0,
        description="A candidate whose model must load first (the scorer's estimate in the reply): its read "
        "bound grows by that estimate, at most this much (0: never; upstream_limits.py)",
    )
    ttfb_factor: float = Field(default=10.0, gt=0, description="First-byte bound = this x the profiled TTFT")
    gap_factor: float = Field(default=50.0, gt=0, description="Chunk-gap bound = this / the profiled tokens/s")
    max_connections_per_backend: int = Field(default=256, ge=1, description="Requests open at once per backend")
    slot_wait_s: float = Field(
        default=1.0, ge=0, description="Wait at most this for a backend's connection slot, then the next candidate"
    )
    circuit_failures: int = Field(default=3, ge=1, description="Consecutive failures that open a circuit")
    circuit_status_failures: int = Field(
        default=1, ge=1, description="Consecutive 5xx answers of a model that open its (backend, model) circuit"
    )
    circuit_cooldown_s: float = Field(default=5.0, gt=0, description="First cooldown of an open circuit")
    circuit_max_cooldown_s: float = Field(default=300.0, gt=0, description="Cooldown cap (it doubles per repeat)")
    circuit_refresh_s: float = Field(default=0.5, gt=0, description="How often the shared circuit view is re-read")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Candidates tried before giving up")
    default_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="max_tokens for chats and completions that set none (None: the backend's own limit); "
        "bounds generation on backends that would otherwise run to the end of their context",
    )
    catalog_refresh_s: float = Field(default=2.0, gt=0, description="How often the catalog snapshot is re-read")
    backend_models_ttl_s: float = Field(default=30.0, gt=0, description="Cache of backend model lists (fallback)")
    inflight_publish_s: float = Field(default=0.25, gt=0, description="How often in-flight deltas go to Redis")
    events_maxlen: int = Field(default=100_000, ge=1000, description="Approximate MAXLEN of the request stream")
    events_buffer: int = Field(
        default=100_000, ge=100, description="Request events kept in memory while Redis is away (then dropped, counted)"
    )
    events_buffer_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024 * 1024, description="The same bound in bytes of encoded events"
    )
    schema_wait_s: float = Field(
        default=20.0, ge=0, description="At start, wait this long for the schema head (0: don't); /ready reports it"
    )
    access_log: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            v = orjson.loads(v) if v.startswith("[") else [k.strip() for k in v.split(",") if k.strip()]
        return v or None

    @field_validator("api_keys")
    @classmethod
    def _check_hashed(cls, v: list[SecretStr] | None) -> list[SecretStr] | None:
        for key in v or ():
            raw = key.get_secret_value()
            if raw.startswith("sha256:") and not HASHED_KEY.match(raw):
                raise ValueError("a hashed key is 'sha256:' and 64 lowercase hex digits")
        return v

    @field_validator("admin_allow_cidrs", "cors_allow_origins", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip().startswith("["):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    rate_limits: RateLimitOptions = Field(
        default_factory=RateLimitOptions, description="Shared request/token budgets (rate_limits.py)"
    )
    response_cache: ResponseCacheOptions = Field(
        default_factory=ResponseCacheOptions, description="Exact-match response cache (response_cache.py)"
    )
    request_log: RequestLogOptions = Field(
        default_factory=RequestLogOptions,
        description="Opt-in storage of prompts and replies, redacted and capped (request_log.py)",
    )
    images: ImageOptions = Field(
        default_factory=ImageOptions, description="Remote image URLs fetched for Ollama backends (images.py)"
    )
    shaping: ShapingOptions = Field(
        default_factory=ShapingOptions, description="Reasoning blocks, JSON fences, signature (shaping.py)"
    )
    paired_sampling: PairedSamplingOptions = Field(
        default_factory=PairedSamplingOptions,
        description="A bounded share of chat requests also answered by a second model and judged (paired_sampling.py)",
    )


class GatewaySettings(CommonSettings):
    """The gateway's settings: the shared ones plus ``gateway``."""

    gateway: GatewayOptions = Field(default_factory=GatewayOptions)

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if self.environment == "prod" and self.admin_key is None:
            raise ValueError(
                "TURNOUT_ADMIN_KEY is not set: in prod the admin API needs a key "
                "(or a file turnout_admin_key in TURNOUT_SECRETS_DIR)"
            )
        if self.environment == "prod" and self.gateway.api_keys:
            for key in self.gateway.api_keys:
                if key.get_secret_value().lower() in _PLACEHOLDER_KEYS:
                    raise ValueError("a gateway API key is a placeholder; set real client keys in prod")
        return self
