"""Pure ASGI middleware (no ``BaseHTTPMiddleware``): request id, body size limit, access metrics."""

from __future__ import annotations

import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnout.common.logging import request_id_var
from turnout.gateway.errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType, error_body, gateway_error_body
from turnout.gateway.metrics import PATHS, GatewayMetrics

REQUEST_ID_HEADER = b"x-request-id"
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_KNOWN_PATHS = frozenset(PATHS)


def new_request_id() -> str:
    # ids need to be unique, not secret: Mersenne Twister (reseeded after fork) spares a urandom syscall
    """A fresh ``req-`` id (unique, not secret)."""
    return f"req-{random.getrandbits(96):024x}"


class EdgeMiddleware:
    """Around every HTTP request, in one layer (one wrapper of ``send``, not one per concern):

    * **request id** — take a well-formed incoming ``X-Request-ID`` or make one; set
      ``request_id_var``; echo it on the response;
    * **body limit** — 413 before reading more than ``max_bytes``: at once from
      ``Content-Length``, else by counting the chunks as the app reads them (the app's read
      raises :class:`BodyTooLarge`);
    * **JSON only** — a request with a method that may carry a body (POST …) must say
      ``Content-Type: application/json`` (or ``…+json``), else 415 before the app sees it:
      ``text/plain`` and form bodies, which any web page can make a browser send without a
      CORS preflight, are never parsed as JSON (CSRF);
    * **NUL bytes** — a path or query string holding a NUL byte is 400 (no database or Redis
      key ever sees one);
    * **access metrics** — count every request by method, path (known paths only) and status;
      time it to the last byte.
    """

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, max_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid: str | None = None
        length: int | None = None
        ctype: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if rid is None and _VALID_REQUEST_ID.match(value):
                    rid = value.decode("ascii")
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
            elif name == b"content-type":
                ctype = value
        if rid is None:
            rid = new_request_id()
        raw_id = rid.encode("ascii")
        token = request_id_var.set(rid)
        status = 500

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, raw_id)]
            await send(message)

        try:
            refusal = _refusal(scope, ctype)
            if refusal is not None:
                await _send_error(send_wrapped, refusal)
            elif scope["method"] in ("GET", "HEAD") or (length is not None and 0 <= length <= self.max_bytes):
                await self.app(scope, receive, send_wrapped)  # the server enforces Content-Length
            elif length is not None and length > self.max_bytes:
                await self._reject(send_wrapped)
            else:
                await self.app(scope, self._counting(receive), send_wrapped)
        finally:
            request_id_var.reset(token)
            path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
            m = self.metrics
            m.child(m.http_requests, scope["method"], path, str(status)).inc()
            m.child(m.http_duration, path).observe(time.perf_counter() - start)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body is larger than {limit} bytes")
            return message

        return counting_receive

    async def _reject(self, send: Send) -> None:  # 413
        body = error_body(413, f"request body is larger than {self.max_bytes} bytes", code="request_too_large")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def is_json_type(ctype: bytes | None) -> bool:
    """Whether a Content-Type is JSON (``application/json`` or ``application/*+json``)."""
    if ctype is None:
        return False
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _refusal(scope: Scope, ctype: bytes | None) -> InvalidRequest | UnsupportedMediaType | None:
    if b"%00" in scope["query_string"] or "\x00" in scope["path"]:
        return InvalidRequest("NUL bytes are not allowed in the path or query string", code="invalid_value")
    if scope["method"] not in _NO_BODY_METHODS and not is_json_type(ctype):
        return UnsupportedMediaType("Content-Type must be application/json")
    return None


async def _send_error(send: Send, err: InvalidRequest | UnsupportedMediaType) -> None:
    body = gateway_error_body(err)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
