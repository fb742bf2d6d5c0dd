"""The gpu-agent service: resources, the publishing loop and the ops endpoints.

``running_agent(settings)`` composes one context manager per resource (Redis, the backend
HTTP session, the GPU reader, the ops server) and runs :meth:`Agent.run` in a task; ``serve``
holds it until ``stop`` is set. Ops: ``/health``, ``/ready`` (Redis answers and the state in
Redis is fresh), ``/metrics``, and ``/state`` (the last host state, for people).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from turnout.common.aio import wait_or_cancel
from turnout.common.backends.clients import client_for
from turnout.common.http import make_session
from turnout.common.links import make_redis
from turnout.common.ops import build_ops_app, ops_server
from turnout.common.rpc.server import RpcServer
from turnout.common.supervise import Supervisor
from turnout.gpu_agent.agent import Agent
from turnout.gpu_agent.detect import agent_reader
from turnout.gpu_agent.gpus import GpuReader
from turnout.gpu_agent.metrics import GpuAgentMetrics
from turnout.gpu_agent.orders import OrderExecutor
from turnout.gpu_agent.settings import GpuAgentSettings

log = logging.getLogger(__name__)


def build_reader(settings: GpuAgentSettings) -> GpuReader | None:
    """The configured GPU readers (``detect.py``; none when a manual memory budget replaces them)."""
    if settings.memory_budget_bytes is not None:
        return None
    backend = settings.local_backend()
    reader, found = agent_reader(settings.gpu_agent.readers, backend_url=backend.url if backend else None)
    if found.error:
        log.warning("%s", found.error)
    return reader


@dataclass(frozen=True, slots=True)
class Running:
    """A started agent: the agent, its ops server and its publishing loop."""

    agent: Agent
    ops: web.AppRunner
    loop: asyncio.Task[None]

    @property
    def ops_port(self) -> int:
        """The port the ops endpoints listen on."""
        return int(self.ops.addresses[0][1])


@asynccontextmanager
async def running_agent(
    settings: GpuAgentSettings, *, reader: GpuReader | None = None, registry: CollectorRegistry = REGISTRY
) -> AsyncIterator[Running]:
    """Start the agent (Redis, backend client, GPU readers, order executor, ops server) for the context."""
    opts = settings.gpu_agent
    async with AsyncExitStack() as stack:
        redis = make_redis(settings.redis_url, settings.link)
        stack.push_async_callback(redis.aclose)
        session = make_session(limit=8, limit_per_host=4, connect_timeout_s=2.0)
        stack.push_async_callback(session.close)
        backend_cfg = settings.local_backend()
        backend = client_for(backend_cfg, session, timeout_s=opts.backend_timeout_s) if backend_cfg else None
        if reader is None:
            reader = build_reader(settings)
        if reader is not None:
            stack.callback(reader.close)
        metrics = GpuAgentMetrics.create(registry)
        agent = Agent(settings, redis=redis, reader=reader, backend=backend, metrics=metrics)
        log.info(
            "gpu-agent for host %s: GPUs from %s, loaded models from %s, every %.1fs (TTL %.1fs)",
            opts.host,
            f"a manual budget of {opts.gpu_memory_gb} GB"
            if reader is None and opts.gpu_memory_gb
            else (reader.name if reader is not None else "nothing"),
            f"{backend_cfg.name} ({backend_cfg.url})" if backend_cfg else "no backend",
            opts.interval_s,
            opts.ttl_s,
        )

        async def redis_ok() -> bool:
            return bool(await redis.ping())

        async def published() -> bool:
            return agent.healthy

        async def gpus_seen() -> bool:
            return agent.last_state is not None and len(agent.last_state.gpus) >= opts.expect_gpus

        checks: dict[str, Callable[[], Awaitable[bool]]] = {"redis": redis_ok, "published": published}
        if opts.expect_gpus:
            checks["gpus"] = gpus_seen

        async def state(_: web.Request) -> web.Response:
            if agent.last_state is None:
                return web.json_response({"status": "starting"}, status=503)
            return web.Response(body=agent.last_state.model_dump_json(), content_type="application/json")

        sup = Supervisor("gpu-agent", registry)
        stack.push_async_callback(sup.stop)
        ops = build_ops_app(
            "gpu-agent",
            checks,
            registry=registry,
            extra_routes=[web.get("/state", state)],
            tasks=sup.state,
        )
        runner = await stack.enter_async_context(ops_server(ops, opts.ops_host, opts.ops_port))
        stopping = asyncio.Event()
        loop = sup.start("agent-loop", partial(agent.run, stopping))
        orders: asyncio.Task[None] | None = None
        server: RpcServer | None = None
        if backend is not None and opts.serve_orders:
            server = RpcServer(
                settings.redis_url,
                settings.keys,
                replica_id=f"gpu-agent-{opts.host}",
                registry=registry,
                link=settings.link,
            )

            async def publish_now() -> None:
                await agent.tick()

            OrderExecutor(backend, opts.host, on_change=publish_now).register(server)
            orders = sup.start("orders", server.serve)
        try:
            yield Running(agent, runner, loop)
        finally:
            stopping.set()
            if server is not None and orders is not None:
                await server.stop()
                await wait_or_cancel(orders, timeout_s=10)
            await wait_or_cancel(loop, timeout_s=10)


async def serve(settings: GpuAgentSettings, *, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (SIGTERM/SIGINT in ``__main__``)."""
    async with running_agent(settings):
        await stop.wait()
        log.info("gpu-agent stopping")
