"""Every error the gateway shows a client, in OpenAI's shape: ``{"error": {message, type, param, code}}``.

This is the only module that builds error JSON: the exception handlers, the body-size
middleware, the SSE error event sent when a stream breaks after its first byte and the
NDJSON error line of the Ollama endpoints all call :func:`error_body`. Each endpoint answers in
its own clients' shape (:func:`dialect_error_response`): Ollama's ``{"error": "message"}`` under
``/api/``, Anthropic's ``{"type": "error", "error": {type, message}}`` under ``/v1/messages``.

Errors::

    TurnoutError (turnout.common.errors)
    ├── GatewayError                    raised by the gateway itself (status, type, code, param)
    │   ├── InvalidRequest         400  malformed JSON, missing or invalid values, unservable request
    │   │   └── ImageRefused       400  a remote image URL that may not or cannot be fetched (images.py)
    │   ├── InvalidType            422  a field of the wrong type
    │   ├── Unauthorized           401  missing or unknown client key
    │   ├── Forbidden              403  admin API from an address it is not open to
    │   ├── ModelNotFound          404  the requested model does not exist
    │   ├── NotFound               404  another resource (a response id, a route) does not exist
    │   ├── BodyTooLarge           413  request body over ``max_body_bytes``
    │   ├── UnsupportedMediaType   415  a body that is not ``application/json``
    │   ├── RateLimited            429  every candidate answered 429, or a gateway rate limit is spent
    │   ├── ClientGone             499  the client went away (never sent; recorded)
    │   ├── UpstreamFailed         502  every candidate failed with an HTTP error or a broken reply
    │   ├── NoBackendAvailable     503  no candidate, none could be reached, or all are cooling down
    │   ├── ShuttingDown           503  the drain grace ran out (a stream gets it as its last event)
    │   └── UpstreamTimedOut       504  the candidates timed out
    └── BackendError (common)
        └── BrokenReply            502  a 2xx reply whose body is not what its dialect promises

Library exceptions are mapped too: ``BackendStatusError`` (4xx passed through, else 502),
``BackendUnavailable`` (503), ``BackendTimeout`` (504), FastAPI's ``RequestValidationError``
(422, or 400 for malformed JSON) and Starlette's ``HTTPException`` (its status).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from turnout.common.errors import BackendError, BackendStatusError, BackendTimeout, BackendUnavailable, TurnoutError

log = logging.getLogger(__name__)

JSON_MEDIA = "application/json"


class GatewayError(TurnoutError):
    """An error the gateway answers with its own status, OpenAI ``type``, ``code`` and ``param``."""

    status = 500
    type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retry_after_s is not None or headers:
            self.headers = {**(headers or {})}
            if retry_after_s is not None:
                self.headers["retry-after"] = str(retry_after_s)


class BrokenReply(BackendError):
    """The backend answered 2xx with a body that is not what its dialect promises."""


class InvalidRequest(GatewayError):
    """400: the body breaks the API's rules (the message names the parameter)."""

    status = 400
    type = "invalid_request_error"


class ImageRefused(InvalidRequest):
    """400: an image URL the gateway will not fetch (scheme, host or size refused)."""

    code = "image_url_refused"


class InvalidType(GatewayError):
    """422: a field has the wrong JSON type."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_type"


class Unauthorized(GatewayError):
    """401: no API key, or one the gateway does not know."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    """403: the admin API is closed to this client (its address, or no admin key set and not loopback)."""

    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class UnsupportedMediaType(GatewayError):
    """415: the body is not ``application/json``."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class ModelNotFound(GatewayError):
    """404: the requested model, alias or profile is not in the catalog."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    """404: no such resource (e.g. a dead letter id)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class BodyTooLarge(GatewayError):
    """413: the body is larger than ``max_body_bytes``."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """429: a rate limit is spent (the gateway's own or the backend's); ``Retry-After`` when known."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamFailed(GatewayError):
    """502: the backend failed (an HTTP error it sent, or a broken exchange)."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class NoBackendAvailable(GatewayError):
    """503: no backend could be reached (not configured here, circuit open, connection refused)."""

    status = 503
    type = "service_unavailable"
    code = "no_backend_available"


class ShuttingDown(GatewayError):
    """503: the gateway is draining and takes no new requests."""

    status = 503
    type = "service_unavailable"
    code = "shutdown"


class ClientGone(GatewayError):
    """The client disconnected before its reply (the status is never sent; events record 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed"


class UpstreamTimedOut(GatewayError):
    """504: the backend did not answer in time."""

    status = 504
    type = "timeout"
    code = "upstream_timeout"


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_PASSED_THROUGH = {400, 404, 413, 422}


def error_body(
    status: int, message: str, *, type: str | None = None, code: str | None = None, param: str | None = None
) -> bytes:
    """OpenAI's error JSON (``{"error": {message, type, param, code}}``); ``type`` follows the status when not given."""
    if type is None:
        type = _STATUS_TYPES.get(status, "server_error" if status < 502 else "upstream_error")
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def as_gateway_error(exc: BaseException) -> GatewayError:
    """Any exception as the :class:`GatewayError` a client should see."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, BackendStatusError):
        message = upstream_message(exc.body) or str(exc)
        if exc.status in _PASSED_THROUGH:
            err: GatewayError = {400: InvalidRequest, 404: ModelNotFound, 413: BodyTooLarge, 422: InvalidType}[
                exc.status
            ](message, code="upstream_" + str(exc.status))
            return err
        if exc.status == 429:
            return RateLimited(message)
        return UpstreamFailed(message)
    if isinstance(exc, BackendTimeout):
        return UpstreamTimedOut(str(exc))
    if isinstance(exc, BackendUnavailable):
        return NoBackendAvailable(str(exc))
    if isinstance(exc, BackendError):
        return UpstreamFailed(str(exc))
    return GatewayError("internal error", code="internal_error")


def upstream_message(body: bytes) -> str | None:
    """The message inside an upstream error body (OpenAI or Ollama shape), if there is one."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip() or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return None


def gateway_error_body(exc: GatewayError) -> bytes:
    """``exc`` as OpenAI's error JSON."""
    return error_body(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param)


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> Response:
    """Any exception as an OpenAI error response, with the status and headers its gateway error carries."""
    err = as_gateway_error(exc)
    if err.headers:
        headers = {**err.headers, **(headers or {})}
    return Response(gateway_error_body(err), status_code=err.status, media_type=JSON_MEDIA, headers=headers)


def sse_error_event(exc: BaseException) -> bytes:
    """The SSE event that ends a stream broken after its first byte (the OpenAI SDK raises on it)."""
    return b"data: " + gateway_error_body(as_gateway_error(exc)) + b"\n\n"


def ndjson_error_line(exc: BaseException) -> bytes:
    """Ollama's stream error line: ``{"error": "message"}``."""
    return orjson.dumps({"error": as_gateway_error(exc).message}) + b"\n"


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_body(exc: BaseException) -> bytes:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    err = as_gateway_error(exc)
    kind = _ANTHROPIC_TYPES.get(err.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": err.message}})


def anthropic_error_response(exc: BaseException) -> Response:
    """Any exception as an Anthropic error response (``/v1/messages``)."""
    err = as_gateway_error(exc)
    return Response(anthropic_error_body(err), status_code=err.status, media_type=JSON_MEDIA)


def anthropic_error_event(exc: BaseException) -> bytes:
    """The SSE ``error`` event that ends a Messages stream broken after its first byte."""
    return b"event: error\ndata: " + anthropic_error_body(exc) + b"\n\n"


ANTHROPIC_PATHS = ("/v1/messages",)


def dialect_error_response(path: str, exc: BaseException) -> Response:
    """An error in the shape the endpoint's own clients read: Ollama's under ``/api/``,
    Anthropic's under ``/v1/messages``, OpenAI's elsewhere."""
    if path.startswith("/api/"):
        return ollama_error_response(exc)
    if path.startswith(ANTHROPIC_PATHS):
        return anthropic_error_response(exc)
    return error_response(exc)


def ollama_error_response(exc: BaseException) -> Response:
    """Ollama clients read ``{"error": "message"}`` bodies."""
    err = as_gateway_error(exc)
    return Response(
        orjson.dumps({"error": err.message}), status_code=err.status, media_type=JSON_MEDIA, headers=err.headers
    )


# --- handlers ----------------------------------------------------------------------------------


def _loc(err: dict[str, Any]) -> str | None:
    parts = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


_VALUE_ERRORS = frozenset(
    {
        "value_error",
        "assertion_error",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "too_long",
        "too_short",
        "string_too_long",
        "string_too_short",
        "literal_error",
        "enum",
    }
)


async def _validation_handler(request: Request, exc: Exception) -> Response:
    """Pydantic-validated bodies (feedback, query parameters): malformed JSON, a missing field or a
    value out of bounds is 400; a value of the wrong type is 422."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    kind = first.get("type")
    if kind == "json_invalid":
        return dialect_error_response(
            request.url.path, InvalidRequest("request body is not valid JSON", code="invalid_json")
        )
    param = _loc(first)
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    text = f"{param}: {msg}" if param else msg
    if kind == "missing":
        err: GatewayError = InvalidRequest(
            f"'{param}' is a required property", param=param, code="missing_required_parameter"
        )
    elif kind == "extra_forbidden":
        err = InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter")
    elif kind in _VALUE_ERRORS:
        err = InvalidRequest(text, param=param, code="invalid_value")
    else:
        err = InvalidType(text, param=param)
    return dialect_error_response(request.url.path, err)


async def _http_handler(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method) in the shape of the path's dialect, so an
    Ollama client asking for an endpoint Turnout does not serve (``/api/pull``) reads a message."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    detail = str(exc.detail)
    if path.startswith("/api/"):
        if exc.status_code == 404:
            detail = f"{request.method} {path} is not served by Turnout (models are managed on its backends)"
        return Response(
            orjson.dumps({"error": detail}), status_code=exc.status_code, media_type=JSON_MEDIA, headers=exc.headers
        )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    body = error_body(exc.status_code, detail, code=code)
    return Response(body, status_code=exc.status_code, media_type=JSON_MEDIA, headers=exc.headers)


async def _gateway_handler(request: Request, exc: Exception) -> Response:
    return dialect_error_response(request.url.path, exc)


async def _unhandled_handler(_: Request, exc: Exception) -> Response:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return error_response(exc)


def register_error_handlers(app: FastAPI) -> None:
    """Route validation, HTTP, gateway, backend and unexpected errors through this module's JSON shapes."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(GatewayError, _gateway_handler)
    app.add_exception_handler(BackendError, _gateway_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
