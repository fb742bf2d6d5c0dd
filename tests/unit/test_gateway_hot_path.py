"""The model endpoints' POSTs go from the edge middleware straight to their endpoint, with the app's
exception handling; everything else goes down the usual stack."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from turnout.gateway.app import create_app
from turnout.gateway.errors import InvalidRequest
from turnout.gateway.hot_path import HotRoutes
from turnout.gateway.middleware import EdgeMiddleware
from turnout.gateway.settings import GatewaySettings


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


async def refuse(_: Request) -> Response:
    raise InvalidRequest("'messages' is required", param="messages", code="missing_field")


async def crash(_: Request) -> Response:
    raise ZeroDivisionError("bug")


async def teapot(_: Request) -> Response:
    raise HTTPException(418, "short and stout")


class BreaksMidway(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise InvalidRequest("too late to answer with an error")


async def midway(_: Request) -> Response:
    return BreaksMidway()


ROUTES = [
    Route("/echo", echo, methods=["POST"]),
    Route("/refuse", refuse, methods=["POST"]),
    Route("/crash", crash, methods=["POST"]),
    Route("/teapot", teapot, methods=["POST"]),
    Route("/midway", midway, methods=["POST"]),
]


class Inner:
    """The rest of the stack: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await JSONResponse({"inner": True})(scope, receive, send)


def handlers() -> dict[Any, Any]:
    """The gateway's own (``register_error_handlers``, called by ``create_app``)."""
    return create_app(GatewaySettings()).exception_handlers


async def call(app: HotRoutes, method: str, path: str, body: bytes = b"{}", root_path: str = "") -> list[Message]:
    sent: list[Message] = []
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": [], "query_string": b""}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_post_to_a_hot_route_reaches_its_endpoint_and_nothing_else() -> None:
    inner = Inner()
    app = HotRoutes(inner, routes=ROUTES, handlers=handlers())
    sent = await call(app, "POST", "/echo", b'{"a":1}')
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"a":1}'
    assert inner.paths == []


@pytest.mark.parametrize(
    ("method", "path", "root_path"),
    [("GET", "/echo", ""), ("POST", "/echo/", ""), ("POST", "/elsewhere", ""), ("POST", "/echo", "/prefix")],
)
async def test_anything_else_goes_down_the_stack(method: str, path: str, root_path: str) -> None:
    inner = Inner()
    app = HotRoutes(inner, routes=ROUTES, handlers=handlers())
    sent = await call(app, method, path, root_path=root_path)
    assert orjson.loads(sent[1]["body"]) == {"inner": True}
    assert inner.paths == [path]


async def test_a_gateway_error_is_answered_by_the_apps_handler() -> None:
    app = HotRoutes(Inner(), routes=ROUTES, handlers=handlers())
    sent = await call(app, "POST", "/refuse")
    assert sent[0]["status"] == 400
    assert orjson.loads(sent[1]["body"]) == {
        "error": {
            "message": "'messages' is required",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_field",
        }
    }


async def test_an_http_exception_is_answered_by_the_apps_handler() -> None:
    app = HotRoutes(Inner(), routes=ROUTES, handlers=handlers())
    sent = await call(app, "POST", "/teapot")
    assert sent[0]["status"] == 418
    assert orjson.loads(sent[1]["body"])["error"]["message"] == "short and stout"


async def test_an_exception_without_a_handler_goes_up_to_the_server_error_layer() -> None:
    app = HotRoutes(Inner(), routes=ROUTES, handlers=handlers())
    with pytest.raises(ZeroDivisionError):
        await call(app, "POST", "/crash")


async def test_an_error_after_the_response_started_is_not_answered_twice() -> None:
    app = HotRoutes(Inner(), routes=ROUTES, handlers=handlers())
    with pytest.raises(RuntimeError, match="response already started"):
        await call(app, "POST", "/midway")


def test_only_async_post_routes_take_the_hot_path() -> None:
    with pytest.raises(ValueError, match="only async POST"):
        HotRoutes(Inner(), routes=[Route("/get", echo, methods=["GET"])], handlers={})


def test_the_gateway_puts_its_model_endpoints_right_inside_the_edge_middleware() -> None:
    app = create_app(GatewaySettings())
    layer: Any = app.build_middleware_stack()
    while not isinstance(layer, EdgeMiddleware):
        layer = layer.app
    hot = layer.app
    assert isinstance(hot, HotRoutes)
    assert sorted(hot._endpoints) == [
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/api/generate",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    ]
