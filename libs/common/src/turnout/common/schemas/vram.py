"""VRAM management messages: orders the router sends to one host's gpu-agent, their outcome,
and the action records kept for ``GET /admin/vram``.

``gpu.order`` v1 travels over the typed RPC (docs/rpc.md, "GPU orders"): one queue per host,
``<prefix>:rpc:gpu.order.<host>:v1``, served by that host's agent only.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from turnout.common.schemas import WireModel
from turnout.common.schemas.fleet import LoadedModelV1


class OrderAction(StrEnum):
    LOAD = "load"
    UNLOAD = "unload"


class ModelOrderV1(WireModel):
    """Load or unload one model on the agent's local backend."""

    action: OrderAction
    model: str = Field(description="The model's name on the host's backend (upstream name)")
    reason: str = Field(default="", description="Why, in words (kept in the action log)")
    requested_by: str = Field(default="", description="Replica that issued the order (scorer-<host>-<pid>)")
    timeout_s: float = Field(default=120.0, gt=0, description="How long the agent may spend carrying it out")
    embedding: bool = Field(
        default=False, description="An embedding model: load it through the embeddings endpoint (Ollama /api/embed)"
    )


class OrderResultV1(WireModel):
    """What the agent did. ``ok`` is true when the backend's ``/api/ps`` agrees afterwards."""

    ok: bool
    host: str = ""
    action: OrderAction | None = None
    model: str = ""
    error: str | None = None
    duration_s: float = 0.0
    loaded_models: list[LoadedModelV1] = Field(
        default_factory=list, description="The backend's /api/ps after the order (empty if unreadable)"
    )


class VramActionV1(WireModel):
    """One load/unload the router ordered, as recorded in ``keys.vram_actions`` (newest first)."""

    ts: float
    host: str
    action: OrderAction
    model: str
    reason: str = ""
    requested_by: str = ""
    ok: bool = False
    error: str | None = None
    duration_s: float = 0.0
    freed_bytes: int = Field(default=0, description="Estimated bytes an unload frees (planner's view)")
    needed_bytes: int = Field(default=0, description="Estimated bytes a load needs (planner's view)")


class HostBudgetV1(WireModel):
    """The router's view of one host's memory, as a scorer last computed it."""

    host: str
    budget_bytes: int = 0
    used_bytes: int = Field(default=0, description="Models loaded, plus loads made room for (pending)")
    available_bytes: int = 0
    pinned: list[str] = Field(default_factory=list)
    busy: list[str] = Field(default_factory=list, description="Models serving a request right now")
    pending: dict[str, int] = Field(default_factory=dict, description="model -> bytes, loads not reported yet")
    last_used: dict[str, float] = Field(default_factory=dict)


class VramStatusV1(WireModel):
    """What a scorer replica publishes to ``keys.vram_status`` (short TTL) for ``GET /admin/vram``."""

    ts: float = 0.0
    replica: str = ""
    enabled: bool = True
    budget_fraction: float = 0.9
    max_total_gb: dict[str, float] = Field(default_factory=dict)
    pinned: dict[str, list[str]] = Field(default_factory=dict)
    score_margin: float = 0.0
    hosts: list[HostBudgetV1] = Field(default_factory=list)
    unmanaged: list[str] = Field(default_factory=list, description="Hosts without a known memory budget")
    decisions: dict[str, int] = Field(default_factory=dict, description="kind -> count since the replica started")
