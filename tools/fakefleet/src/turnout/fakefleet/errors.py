"""Error bodies in each dialect, built in one place.

Handlers raise :class:`FleetError`; the listener's middleware renders it the way the real server
would for that path: Ollama's ``{"error": "..."}`` under ``/api/*`` and OpenAI's
``{"error": {"message", "type", "param", "code"}}`` under ``/v1/*``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class FleetError(Exception):
    """An error answer: HTTP status, message, and (OpenAI dialect) type/code/param."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None, type_: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_


class Dropped(Exception):
    """The connection was dropped on purpose (``close``/``hang`` failure modes): send nothing."""


def model_not_found_ollama(model: str) -> FleetError:
    return FleetError(404, f"model '{model}' not found")


def model_not_found_openai(model: str) -> FleetError:
    return FleetError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def ollama_body(message: str) -> dict[str, Any]:
    return {"error": message}


def openai_body(err: FleetError) -> dict[str, Any]:
    kind = err.type or _OPENAI_TYPES.get(err.status, "server_error" if err.status >= 500 else "invalid_request_error")
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


def render(err: FleetError, *, openai: bool) -> web.Response:
    body = openai_body(err) if openai else ollama_body(err.message)
    return web.Response(status=err.status, body=orjson.dumps(body), content_type="application/json")
