"""Each RPC method declared once, with its types and version; client and server share these objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from switchyard.common.schemas.route import RouteReplyV1, RouteRequestV1

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
        return f"{self.name}.v{self.version}"


ROUTE_V1: RpcMethod[RouteRequestV1, RouteReplyV1] = RpcMethod("scorer.route", 1, RouteRequestV1, RouteReplyV1)

ALL_METHODS: tuple[RpcMethod[BaseModel, BaseModel], ...] = (ROUTE_V1,)  # type: ignore[assignment]
