"""What the gateway's ASGI layers cost a model-endpoint POST, with and without the hot path.

``python bench/gateway_layers.py`` builds the real app (``create_app``, its real middleware stack
from the outermost layer FastAPI builds down to the endpoint) twice: as configured, where
:class:`~turnout.gateway.hot_path.HotRoutes` hands ``POST /v1/chat/completions`` to its endpoint
right inside the edge middleware, and with that layer left out (the request then goes through the
admin-cookie and audit middleware, ``ExceptionMiddleware``, ``AsyncExitStackMiddleware``, the
router and the route). The endpoint itself is replaced in both by one that returns a small JSON
response at once, so what is timed is the layers (request id, access metrics, exception
handling, routing) and nothing of routing or forwarding. CPU time per request (``process_time``),
blocks of ``--n`` requests alternating between the two stacks, ``--rounds`` rounds; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from turnout.gateway.app import create_app
from turnout.gateway.hot_path import HotRoutes
from turnout.gateway.settings import GatewaySettings

PATH = "/v1/chat/completions"
BODY = b'{"model":"turnout/auto","messages":[{"role":"user","content":"Say hello in one word."}]}'


async def stub(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


def stack(*, hot: bool) -> ASGIApp:
    """The app's middleware stack, the chat endpoint stubbed, with or without the hot path."""
    app = create_app(GatewaySettings())
    for i, route in enumerate(app.router.routes):
        if isinstance(route, Route) and route.path == PATH and route.methods == {"POST"}:
            app.router.routes[i] = Route(PATH, stub, methods=["POST"])
            break
    stubbed = [Route(PATH, stub, methods=["POST"])]
    kept = []
    for m in app.user_middleware:
        if m.cls is HotRoutes:
            if not hot:
                continue
            m = Middleware(HotRoutes, routes=stubbed, handlers=app.exception_handlers)
        kept.append(m)
    app.user_middleware = kept
    return app.build_middleware_stack()


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def per_request_us(app: ASGIApp, n: int) -> float:
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    t0 = time.process_time()
    for _ in range(n):
        await app(scope(), receive, send)
    spent = time.process_time() - t0
    assert statuses == [200] * n, statuses[:3]
    return spent / n * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    stacks = {"hot path": stack(hot=True), "through the router": stack(hot=False)}
    for app in stacks.values():
        await per_request_us(app, 500)  # warm-up
    got: dict[str, list[float]] = {name: [] for name in stacks}
    for rnd in range(args.rounds):
        for name, app in list(stacks.items())[:: 1 if rnd % 2 == 0 else -1]:
            got[name].append(await per_request_us(app, args.n))
    base = got["through the router"]
    for name, values in got.items():
        print(f"{name:<20} {statistics.median(values):7.1f} µs CPU per request (median of {args.rounds})")
    diffs = [round(a - b, 1) for a, b in zip(got["hot path"], base, strict=True)]
    print(f"hot path - router: median {statistics.median(diffs):+.1f} µs per request, per round {diffs}")


if __name__ == "__main__":
    asyncio.run(main())
