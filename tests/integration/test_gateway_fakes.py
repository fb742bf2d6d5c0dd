"""Test doubles for the gateway tests (no tests here): a fake backend speaking the real OpenAI
SSE and Ollama NDJSON wire formats on loopback, a scorer stand-in served by a real
:class:`RpcServer`, and the gateway itself under a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ollama
import openai
import orjson
import pytest
import uvicorn
from aiohttp import web
from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.rpc import EXPLAIN_V1, ROUTE_V1, RpcContext, RpcServer
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.explain import ExplainReplyV1
from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1
from turnout.devstack.infra import free_port
from turnout.gateway.app import create_app
from turnout.gateway.header_guard import guarded_protocol
from turnout.gateway.settings import GatewayOptions, GatewaySettings
from turnout.gateway.state import GatewayState

REPLY_TEXT = ["Hello", " from", " the", " fake", " backend."]
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@dataclass
class FakeBackend:
    """One fake backend. ``mode``: ``ok``; ``status`` (answer ``fail_status``); ``slow`` (wait
    ``slow_s``, 5 s, before answering, recording when the client goes away); ``hang`` (stream a chunk, then wait,
    recording when the client goes away); ``break`` (stream a chunk, then drop the connection);
    ``non_object`` (valid JSON that is not an object: a whole reply ``[1, 2]``, a stream event
    ``data: [1]``); ``drip`` (stream a chunk every 0.3 s, then finish normally); ``whole`` (the
    stream's every event in one write with its head, with a ``Content-Length``: it all arrives at once);
    ``late_end`` (a stream's last message, ``[DONE]`` or ``done``, then ``slow_s`` before its body ends)."""

    name: str
    kind: str = "openai"
    mode: str = "ok"
    fail_status: int = 500
    slow_s: float = 5.0
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    include_usage_seen: list[bool] = field(default_factory=list)
    cookies_seen: list[str | None] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return f"{base}/v1" if self.kind == "openai" else base

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/v1/completions", self._openai_completions)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        app.router.add_get("/v1/models", self._openai_models)
        app.router.add_post("/api/chat", self._ollama_chat)
        app.router.add_post("/api/generate", self._ollama_generate)
        app.router.add_post("/api/embed", self._ollama_embed)
        app.router.add_get("/api/tags", self._ollama_tags)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> dict[str, Any] | web.Response:
        body = orjson.loads(await request.read())
        self.received.append(body)
        self.paths.append(request.path)
        self.cookies_seen.append(request.headers.get("Cookie"))
        if self.mode == "slow":
            try:
                await asyncio.sleep(self.slow_s)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.mode == "non_object" and not body.get("stream"):
            return web.Response(body=b"[1, 2]", content_type="application/json")
        if self.mode == "status":
            err = {"error": {"message": f"{self.name} is failing", "type": "server_error"}}
            return web.Response(body=orjson.dumps(err), status=self.fail_status, content_type="application/json")
        return body

    async def _hang(self, response: web.StreamResponse) -> web.StreamResponse:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return response

    # --- OpenAI dialect ------------------------------------------------------------------------

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        model = body["model"]
        if not body.get("stream"):
            reply = {
                "id": "chatcmpl-upstream",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(REPLY_TEXT)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
            }
            resp = web.Response(body=orjson.dumps(reply), content_type="application/json")
            resp.set_cookie("lb-affinity", f"{self.name}-{len(self.received)}")  # as cloud load balancers do
            return resp
        self.include_usage_seen.append(bool((body.get("stream_options") or {}).get("include_usage")))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c = {
                "id": "chatcmpl-upstream",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(c) + b"\n\n"

        if self.mode == "whole":
            events = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in REPLY_TEXT)]
            events.append(chunk({}, "stop") + b"data: [DONE]\n\n")
            return web.Response(body=b"".join(events), headers={"Content-Type": "text/event-stream"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "non_object":
            await resp.write(b"data: [1]\n\n")
            return resp
        await resp.write(chunk({"role": "assistant", "content": ""}))
        if self.mode in ("hang", "break"):
            await resp.write(chunk({"content": "partial"}))
            if self.mode == "break":
                assert request.transport is not None
                request.transport.close()
                return resp
            return await self._hang(resp)
        for piece in REPLY_TEXT:
            if self.mode == "drip":
                await asyncio.sleep(0.3)
            await resp.write(chunk({"content": piece}))
        await resp.write(chunk({}, "stop"))
        if self.include_usage_seen[-1]:
            usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
            u = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1, "model": model}
            await resp.write(b"data: " + orjson.dumps({**u, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        if self.mode == "late_end":
            await asyncio.sleep(self.slow_s)
        return resp

    async def _openai_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        reply = {
            "id": "cmpl-upstream",
            "object": "text_completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "text": " world", "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
        return web.Response(body=orjson.dumps(reply), content_type="application/json")

    async def _openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.25, float(i)]} for i in range(len(inputs))]
        reply = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
        return web.Response(body=orjson.dumps(reply), content_type="application/json")

    async def _openai_models(self, _: web.Request) -> web.Response:
        data = [{"id": "gpt-fake-8b", "object": "model", "owned_by": self.name}]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    # --- Ollama dialect ------------------------------------------------------------------------

    @staticmethod
    def _ollama_done(model: str, **extra: Any) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": "2025-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "prompt_eval_count": 9,
            "eval_count": 5,
            **extra,
        }

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        model = body["model"]
        tools = bool(body.get("tools"))
        if not body.get("stream", True):
            message: dict[str, Any] = {"role": "assistant", "content": "" if tools else "".join(REPLY_TEXT)}
            if tools:
                message["tool_calls"] = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
            return web.json_response(self._ollama_done(model, message=message))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        if self.mode == "hang":
            line = {"model": model, "created_at": "x", "message": {"role": "assistant", "content": "partial"}}
            await resp.write(orjson.dumps({**line, "done": False}) + b"\n")
            return await self._hang(resp)
        for piece in REPLY_TEXT:
            line = {
                "model": model,
                "created_at": "x",
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            await resp.write(orjson.dumps(line) + b"\n")
        await resp.write(orjson.dumps(self._ollama_done(model, message={"role": "assistant", "content": ""})) + b"\n")
        if self.mode == "late_end":
            await asyncio.sleep(self.slow_s)
        return resp

    async def _ollama_generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        model = body["model"]
        if not body.get("stream", True):
            return web.json_response(self._ollama_done(model, response=" world"))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(orjson.dumps({"model": model, "response": " world", "done": False}) + b"\n")
        await resp.write(orjson.dumps(self._ollama_done(model, response="")) + b"\n")
        return resp

    async def _ollama_embed(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        if isinstance(body, web.Response):
            return body
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[0.5, -0.25, float(i)] for i in range(len(inputs))]
        return web.json_response({"model": body["model"], "embeddings": vectors, "prompt_eval_count": 4})

    async def _ollama_tags(self, _: web.Request) -> web.Response:
        models = [
            {"name": "llama3.2:3b", "model": "llama3.2:3b", "size": 1, "details": {}},
            {"name": "llava:7b", "model": "llava:7b", "size": 1, "details": {}},
            {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest", "size": 1, "details": {}},
        ]
        return web.json_response({"models": models})


# --- the scorer stand-in -----------------------------------------------------------------------

Decide = Callable[[RouteRequestV1], RouteReplyV1]


async def response_cache_holds(redis_url: str, keys: Keys, n: int, *, timeout_s: float = 10.0) -> None:
    """Wait until the gateway's response cache holds ``n`` entries: a miss's answer is written
    after the response goes (``ResponseCache.store_later``), so a client that asks again at once
    may still miss."""
    deadline = time.monotonic() + timeout_s
    async with Redis.from_url(redis_url) as redis:
        while int(await redis.zcard(keys.response_cache("index"))) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"the response cache did not reach {n} entries in {timeout_s} s")
            await asyncio.sleep(0.02)


def fixed(*candidates: tuple[str, str, str]) -> Decide:
    """A scorer that always answers these (model, backend, upstream_model) candidates."""

    def decide(_: RouteRequestV1) -> RouteReplyV1:
        return RouteReplyV1(
            candidates=[CandidateV1(model=m, backend=b, upstream_model=u, score=1.0) for m, b, u in candidates]
        )

    return decide


@dataclass
class FakeScorer:
    redis_url: str
    keys: Keys
    decide: Decide
    seen: list[RouteRequestV1] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)
    """When each request was decided (wall time)."""
    delay_s: float = 0.0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeScorer]:
        server = RpcServer(self.redis_url, self.keys, replica_id="fake-scorer")

        async def handle(req: RouteRequestV1, _: RpcContext) -> RouteReplyV1:
            self.seen.append(req)
            self.seen_at.append(time.time())
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return self.decide(req)

        async def explain(req: RouteRequestV1, _: RpcContext) -> ExplainReplyV1:
            return ExplainReplyV1(candidates=self.decide(req).candidates)

        server.register(ROUTE_V1, handle)
        server.register(EXPLAIN_V1, explain)
        task = asyncio.create_task(server.serve())
        try:
            await _until(lambda: server.connected)
            yield self
        finally:
            await server.stop()
            task.cancel()  # don't wait out the 1 s BLPOP; serve() still clears its heartbeat
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)


def snapshot(*models: CatalogModelV1) -> bytes:
    return CatalogSnapshotV1(version="test", models=list(models), ts=time.time()).model_dump_json().encode()


def catalog_model(name: str, backend: str, upstream: str, params_b: float, **caps: bool) -> CatalogModelV1:
    return CatalogModelV1(
        name=name,
        params_b=params_b,
        capabilities=CapabilitiesV1(**caps),
        replicas=[ReplicaV1(backend=backend, upstream_model=upstream)],
    )


# --- the gateway under uvicorn -----------------------------------------------------------------


@dataclass
class RunningGateway:
    url: str
    settings: GatewaySettings
    server: uvicorn.Server
    clients: list[openai.AsyncOpenAI | ollama.AsyncClient] = field(default_factory=list)

    def openai(self, **kw: Any) -> openai.AsyncOpenAI:
        """An OpenAI SDK client on this gateway, closed when the gateway stops."""
        options: dict[str, Any] = {"api_key": "unused", "max_retries": 0, "timeout": 10, **kw}
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", **options)
        self.clients.append(client)
        return client

    def ollama(self) -> ollama.AsyncClient:
        """An Ollama client on this gateway, closed when the gateway stops."""
        client = ollama.AsyncClient(host=self.url)
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()

    def app_state(self) -> GatewayState:
        """The state the app's lifespan built (the uvicorn lifespan keeps what it yielded)."""
        state: GatewayState = self.server.lifespan.state["gw"]  # type: ignore[attr-defined]
        return state


@contextlib.asynccontextmanager
async def run_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        http=guarded_protocol(settings.gateway.max_header_bytes, settings.gateway.header_timeout_s),  # as __main__
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await _until(lambda: server.started or task.done(), timeout=15)
        if task.done():
            task.result()
        running = RunningGateway(url=f"http://127.0.0.1:{port}", settings=settings, server=server)
        try:
            yield running
        finally:
            await running.close_clients()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


# --- fixtures (imported by the test modules) ---------------------------------------------------


@dataclass
class Fleet:
    alpha: FakeBackend
    beta: FakeBackend
    olla: FakeBackend

    def backends(self, *extra: dict[str, Any]) -> list[dict[str, Any]]:
        out = [{"name": b.name, "kind": b.kind, "url": b.url} for b in (self.alpha, self.beta, self.olla)]
        return [*out, *extra]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    f = Fleet(FakeBackend("alpha"), FakeBackend("beta"), FakeBackend("olla", kind="ollama"))
    for b in (f.alpha, f.beta, f.olla):
        await b.start()
    try:
        yield f
    finally:
        for b in (f.alpha, f.beta, f.olla):
            await b.stop()


@pytest.fixture
def make_settings(redis_url: str, database_url: str, key_prefix: str, fleet: Fleet) -> Callable[..., GatewaySettings]:
    def make(*, backends: list[dict[str, Any]] | None = None, **gateway: Any) -> GatewaySettings:
        opts = {"route_timeout_s": 1.0, "catalog_refresh_s": 0.05, "inflight_publish_s": 0.05, **gateway}
        return GatewaySettings.load(
            environment="test",
            redis_url=redis_url,
            database_url=database_url,
            key_prefix=key_prefix,
            backends=backends if backends is not None else fleet.backends(),
            gateway=GatewayOptions(**opts),
        )

    return make
