"""The model catalog as the scorer loads it, and as gateways keep it for fallback routing."""

from __future__ import annotations

from pydantic import Field

from turnout.common.schemas import WireModel


class CapabilitiesV1(WireModel):
    chat: bool = True
    completion: bool = True
    vision: bool = False
    tools: bool = False
    embedding: bool = False
    json_mode: bool = True


class ReplicaV1(WireModel):
    backend: str
    upstream_model: str
    host: str | None = None
    kind: str | None = Field(
        default=None,
        description="The backend's API ('ollama' or 'openai'); None: not known (an older catalog). Ollama takes "
        "text input only, no token ids",
    )


class CatalogModelV1(WireModel):
    name: str
    family: str = ""
    params_b: float | None = None
    active_params_b: float | None = None
    quant: str | None = None
    context_length: int | None = None
    vram_bytes: int | None = None
    capabilities: CapabilitiesV1 = Field(default_factory=CapabilitiesV1)
    coder: bool = False
    replicas: list[ReplicaV1] = Field(default_factory=list)
    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    prefill_tokens_per_s: float | None = Field(
        default=None,
        description="prompt tokens processed per second, measured by the profiler where the backend reports it "
        "(or by timing a long prompt); None: not measured, the scorer derives a rate from ttft_ms",
    )
    quality: dict[str, float] = Field(default_factory=dict, description="category -> 0..1 (profiles)")
    benchmark: float | None = Field(default=None, description="normalised public benchmark score, 0..1")


class CatalogSnapshotV1(WireModel):
    v: int = 1
    version: str = ""
    models: list[CatalogModelV1] = Field(default_factory=list)
    ts: float = 0.0
    hidden: list[str] = Field(
        default_factory=list,
        description="Models the operator's rules block: never listed (/v1/models, /api/tags), never routed to "
        "for 'route for me'; a client that names one still gets it",
    )
