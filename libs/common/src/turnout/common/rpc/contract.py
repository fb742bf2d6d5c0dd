"""Each RPC method declared once, with its types and version; client and server share these objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from turnout.common.schemas.explain import ExplainReplyV1
from turnout.common.schemas.route import RouteReplyV1, RouteRequestV1
from turnout.common.schemas.vram import ModelOrderV1, OrderResultV1

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RpcMethod(Generic[Req, Rep]):
    name: str
    version: int
    request: type[Req]
    reply: type[Rep]

    @property
    def label(self) -> str:
        """``name.vN``, as metrics and logs show the method."""
        return f"{self.name}.v{self.version}"


ROUTE_V1: RpcMethod[RouteRequestV1, RouteReplyV1] = RpcMethod("scorer.route", 1, RouteRequestV1, RouteReplyV1)
EXPLAIN_V1: RpcMethod[RouteRequestV1, ExplainReplyV1] = RpcMethod("scorer.explain", 1, RouteRequestV1, ExplainReplyV1)
"""The same decision as ``route`` with every candidate's per-term breakdown; for ``/admin/explain``."""

GPU_ORDER = "gpu.order"
_HOST_RE = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")


def gpu_order_method(host: str) -> RpcMethod[ModelOrderV1, OrderResultV1]:
    """``gpu.order.<host>`` v1: load/unload orders for one host's gpu-agent (one queue per host,
    served only by that host's agent; its heartbeat key says whether the agent is alive)."""
    if not _HOST_RE.match(host):
        raise ValueError(f"invalid host name for a GPU order queue: {host!r}")
    return RpcMethod(f"{GPU_ORDER}.{host}", 1, ModelOrderV1, OrderResultV1)


ALL_METHODS: tuple[RpcMethod[BaseModel, BaseModel], ...] = (  # type: ignore[assignment]
    ROUTE_V1,
    EXPLAIN_V1,
    gpu_order_method("example-host"),  # every host's queue shares these models: snapshotted once
)
