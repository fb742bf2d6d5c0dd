"""Request dependencies as ``Annotated`` aliases: the gateway state and the authenticated client.

Both are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
more than the whole forwarding hot path. The model endpoints (``/v1/chat/completions`` …) are
plain Starlette routes that call :func:`resolve` instead: FastAPI's dependency solving alone
costs about as much as forwarding the request (see ``routes/openai.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from turnout.gateway.auth import client_by_key
from turnout.gateway.state import GatewayState


async def get_state(request: Request) -> GatewayState:
    """FastAPI dependency: the gateway's state."""
    state: GatewayState = request.state.gw
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_client(request: Request, gw: StateDep) -> str | None:
    """FastAPI dependency: the authenticated client (a key id or the address), or ``None``."""
    return client_of(request, gw)


ClientDep = Annotated[str | None, Depends(get_client)]


def resolve(request: Request) -> tuple[GatewayState, str | None]:
    """The state and the authenticated client, for routes that skip dependency injection."""
    gw: GatewayState = request.state.gw
    return gw, client_of(request, gw)


def client_of(request: Request, gw: GatewayState) -> str | None:
    """The client's id: its key id when client keys are configured (401 without a valid one),
    else its address."""
    if not gw.client_keys:
        return request.client.host if request.client else None
    return client_by_key(request, gw.client_keys)
