"""The model endpoints' POSTs, handed to their endpoint straight after the edge middleware.

A ``POST /v1/chat/completions`` (or any of the model endpoints, :data:`routes.openai.hot_routes`
and :data:`routes.ollama.hot_routes`) went through six ASGI layers between
:class:`~turnout.gateway.middleware.EdgeMiddleware` and its endpoint, each a coroutine frame,
and two of them a wrapper of ``send`` as well: the admin-cookie and audit middleware (which only
act on ``/ui`` and ``/admin``), Starlette's ``ExceptionMiddleware`` and its route-level twin,
FastAPI's ``AsyncExitStackMiddleware`` (files of FastAPI routes), the router's scan of the routes
in front and ``Route.handle``. :class:`HotRoutes` sits right inside the edge middleware and runs
those endpoints itself, with the same exception handling: an exception with a handler registered
on the app (:func:`turnout.gateway.errors.register_error_handlers`) is answered by it (a
``RuntimeError`` if the response had started, as Starlette does); any other goes up to
``ServerErrorMiddleware`` as before. Everything else (other paths, other methods, a
``root_path``) goes down the usual stack; the routes stay in the router (and the OpenAPI
document) as they were.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """Pure ASGI (see the module docstring). ``handlers``: the app's exception handlers
    (``app.exception_handlers``, read when an exception comes: handlers added later count)."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[Route], handlers: Mapping[Any, Callable[..., Any]]) -> None:
        self.app = app
        self._endpoints: dict[str, Endpoint] = {}
        for route in routes:
            if route.methods != {"POST"} or not inspect.iscoroutinefunction(route.endpoint):
                raise ValueError(f"{route.path}: only async POST endpoints take the hot path")
            self._endpoints[route.path] = route.endpoint
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self._endpoints.get(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["endpoint"] = endpoint  # what the router would have set
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            response = await endpoint(request)
            await response(scope, receive, sender)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            if started:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            if inspect.iscoroutinefunction(handler):
                answer = await handler(request, exc)
            else:
                answer = await run_in_threadpool(handler, request, exc)
            if answer is not None:
                await answer(scope, receive, sender)
            exc.__traceback__ = None  # as Starlette: a reused exception instance must not grow

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        """The handler Starlette's ``ExceptionMiddleware`` would pick: by status for an
        ``HTTPException``, else by the exception's classes, nearest first; none for the ones
        ``ServerErrorMiddleware`` answers (``Exception``, 500)."""
        handlers = self._handlers
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None
