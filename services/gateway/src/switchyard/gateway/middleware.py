"""Pure ASGI middleware (no ``BaseHTTPMiddleware``): request id, body size limit, access metrics."""

from __future__ import annotations

import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.common.logging import request_id_var
from switchyard.gateway.errors import BodyTooLarge, error_body
from switchyard.gateway.metrics import PATHS, GatewayMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_KNOWN_PATHS = frozenset(PATHS)


def new_request_id() -> str:
    # ids need to be unique, not secret: Mersenne Twister (reseeded after fork) spares a urandom syscall
    return f"req-{random.getrandbits(96):024x}"


class RequestIdMiddleware:
    """Take a well-formed incoming ``X-Request-ID`` or make one; set ``request_id_var``; echo it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _VALID_REQUEST_ID.match(value):
                    rid = value.decode("ascii")
                break
        if rid is None:
            rid = new_request_id()
        raw = rid.encode("ascii")
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, raw)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 before reading more than ``max_bytes``: at once from ``Content-Length``, else by counting
    the chunks as the app reads them (the app's read raises :class:`BodyTooLarge`)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length > self.max_bytes:
                    await self._reject(send)
                    return
                if length >= 0:  # the server enforces Content-Length; nothing more to count
                    await self.app(scope, receive, send)
                    return
                break
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

        await self.app(scope, counting_receive, send)

    async def _reject(self, send: Send) -> None:
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


class AccessMetricsMiddleware:
    """Count every HTTP request by method, path (known paths only) and status; time it to the last byte."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
            m = self.metrics
            m.child(m.http_requests, scope["method"], path, str(status)).inc()
            m.child(m.http_duration, path).observe(time.perf_counter() - start)
