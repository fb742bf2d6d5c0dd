"""Gateway settings: the shared :class:`CommonSettings` plus ``gateway`` options
(``TURNOUT_GATEWAY__PORT``, ``TURNOUT_GATEWAY__API_KEYS='["key-1","key-2"]'`` …)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from turnout.common.settings import CommonSettings
from turnout.gateway.paired_sampling import PairedSamplingOptions
from turnout.gateway.response_cache import ResponseCacheOptions

_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "sk-test", "test"}


class GatewayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    virtual_model: str = Field(default="turnout/auto", min_length=1, description="The 'route for me' model name")
    route_timeout_s: float = Field(default=0.1, gt=0, le=10, description="Deadline of the scorer's route RPC")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="Larger request bodies get 413")
    max_prompt_chars: int = Field(default=8000, ge=256, description="Prompt text sent to the scorer, bounded")
    list_real_models: bool = Field(default=True, description="List real models after the virtual one in /v1/models")
    api_keys: list[SecretStr] | None = Field(
        default=None, description="Client keys; when set, /v1 and /api require 'Authorization: Bearer <key>'"
    )
    connect_timeout_s: float = Field(default=3.0, gt=0, description="Per attempt: TCP connect to a backend")
    read_timeout_s: float = Field(
        default=120.0, gt=0, description="Per attempt: wait for the first byte, and between two stream chunks"
    )
    max_attempts: int = Field(default=3, ge=1, le=10, description="Candidates tried before giving up")
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
    ready_requires_scorer: bool = Field(default=True, description="/ready fails while no scorer heartbeat is seen")
    schema_wait_s: float = Field(
        default=20.0, ge=0, description="At start, wait this long for the schema head (0: don't); /ready reports it"
    )
    access_log: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [k.strip() for k in v.split(",") if k.strip()]
        return v or None

    response_cache: ResponseCacheOptions = Field(
        default_factory=ResponseCacheOptions, description="Exact-match response cache (response_cache.py)"
    )
    paired_sampling: PairedSamplingOptions = Field(
        default_factory=PairedSamplingOptions,
        description="A bounded share of chat requests also answered by a second model and judged (paired_sampling.py)",
    )


class GatewaySettings(CommonSettings):
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if self.environment == "prod" and self.gateway.api_keys:
            for key in self.gateway.api_keys:
                if key.get_secret_value().lower() in _PLACEHOLDER_KEYS:
                    raise ValueError("a gateway API key is a placeholder; set real client keys in prod")
        return self
