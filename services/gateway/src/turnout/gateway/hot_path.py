"""The way in: the gateway's own middleware first, then a short path for the model endpoints.

Every HTTP request passes the gateway's pure-ASGI edge middleware (request id, access
metrics, body limit). Then the model endpoints (``POST /v1/chat/completions``, ``/api/chat``
…: the :data:`hot_routes` of the route modules) go straight to their handler, and everything
else to the FastAPI app as usual. The handlers of the short path are plain Starlette endpoints
that raise the same exceptions as any route; they are answered by the same registered
exception handlers. What the short path skips is Starlette's per-request machinery around a
route (server-error and exception middleware, route matching over every route, the exception
wrapping of ``request_response``), which measured ~10 % of the gateway's CPU per forwarded
request on the 2-core box.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from turnout.gateway.metrics import GatewayMetrics
from turnout.gateway.middleware import EdgeMiddleware

Endpoint = Callable[[Request], Awaitable[Response]]


class GatewayApp(FastAPI):
    """FastAPI, entered through :meth:`use_hot_path`'s middleware and short path."""

    _entry: ASGIApp | None = None
    _hot: dict[str, Endpoint]

    def use_hot_path(
        self,
        routes: Iterable[Route],
        *,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        cors_origins: Sequence[str] = (),
    ) -> None:
        """Serve ``routes`` (POST endpoints) by the short path; wrap every request in the
        gateway's middleware, and in Starlette's (pure ASGI) ``CORSMiddleware`` when CORS
        origins are configured (off otherwise: no CORS header at all). The routes stay
        registered with the router too (so that another method on their path gets its 405 there)."""
        routes = list(routes)
        self._hot = {r.path: r.endpoint for r in routes}  # type: ignore[misc]
        self.router.routes.extend(routes)
        entry: ASGIApp = EdgeMiddleware(self._dispatch, metrics=metrics, max_bytes=max_body_bytes)
        if cors_origins:
            entry = CORSMiddleware(
                entry,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id", "x-turnout-quality"],
                expose_headers=["x-request-id", "x-turnout-model", "x-turnout-backend", "retry-after"],
                max_age=600,
            )
        self._entry = entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._entry is not None:
            await self._entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._hot.get(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The registered handler for ``exc``'s nearest class (as Starlette would pick it)."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                assert isinstance(response, Response)
                return response
        raise exc
