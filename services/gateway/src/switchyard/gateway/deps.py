"""Request dependencies as ``Annotated`` aliases: the gateway state and the authenticated client."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from switchyard.gateway.errors import Unauthorized
from switchyard.gateway.state import GatewayState


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.state.gw
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_client(request: Request, gw: StateDep) -> str | None:
    """The client's id: its key id when client keys are configured (401 without a valid one),
    else its address."""
    if not gw.client_keys:
        return request.client.host if request.client else None
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    key = key.strip()
    found: str | None = None
    for known, client_id in gw.client_keys.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            found = client_id
    if found is None:
        raise Unauthorized("Incorrect API key provided")
    return found


ClientDep = Annotated[str | None, Depends(get_client)]
