"""``create_app(settings)``: the FastAPI app and its lifespan.

One lifespan composes one context per resource on an ``AsyncExitStack``: the Redis client,
the aiohttp session used by forwarding, the scorer RPC client, a small Postgres engine for
``/ready``, and the background tasks (catalog snapshot refresh, in-flight publishing, request
event publishing). They close in reverse order; pending events and in-flight deltas are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError
from starlette.middleware.cors import CORSMiddleware

from turnout.common.circuits import CircuitPolicy, CircuitStore
from turnout.common.db.session import make_engine
from turnout.common.http import make_session
from turnout.common.links import make_redis
from turnout.common.rpc import ROUTE_V1, RpcClient
from turnout.common.rpc.client import new_client_id
from turnout.common.rpc.resp import RespLink
from turnout.common.schemas.events import EVENT_FIELD, FeedbackEventV1
from turnout.common.supervise import Supervisor
from turnout.gateway.api_schemas import document
from turnout.gateway.audit import AuditMiddleware
from turnout.gateway.auth import AdminGuard, client_key_ids
from turnout.gateway.catalog import CatalogView
from turnout.gateway.circuits import Breakers
from turnout.gateway.drain import Drain
from turnout.gateway.errors import register_error_handlers
from turnout.gateway.events import EventPublisher
from turnout.gateway.forwarding import Forwarder
from turnout.gateway.hot_path import HotRoutes
from turnout.gateway.images import ImageFetcher
from turnout.gateway.inflight import InflightTracker
from turnout.gateway.metrics import build_metrics
from turnout.gateway.middleware import EdgeMiddleware
from turnout.gateway.paired_sampling import PairedSampler
from turnout.gateway.pipeline import Pipeline
from turnout.gateway.rate_limits import RateLimiter
from turnout.gateway.request_log import RequestLog
from turnout.gateway.routes import (
    admin_catalog,
    admin_circuits,
    admin_live,
    admin_requests,
    admin_routing,
    admin_vram,
    anthropic_messages,
    ollama,
    ollama_info,
    openai,
    ops,
    responses,
    ui,
)
from turnout.gateway.routing import Router
from turnout.gateway.settings import GatewaySettings
from turnout.gateway.state import GatewayState
from turnout.gateway.ui import AdminCookie
from turnout.gateway.upstream_limits import ReadBounds, Slots, TimeoutCache

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess: bool = False,
    drain: Drain | None = None,
) -> FastAPI:
    """Build the gateway. ``registry`` defaults to a fresh one (so that tests can build several
    apps in one process); ``__main__`` passes the process-wide registry and the :class:`Drain`
    its server moves on SIGTERM."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = build_metrics(registry)
    metrics.init_backends(b.name for b in settings.backends)
    opts = settings.gateway
    drain = drain if drain is not None else Drain(prestop_delay_s=opts.prestop_delay_s, grace_s=opts.drain_grace_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            keys = settings.keys
            redis = make_redis(settings.redis_url, settings.link)
            stack.push_async_callback(redis.aclose)
            session = make_session(connect_timeout_s=opts.connect_timeout_s)
            stack.push_async_callback(session.close)
            gateway_id = new_client_id("gateway")
            rpc = RpcClient(
                settings.redis_url,
                keys,
                client_id=gateway_id,
                watch=(ROUTE_V1,),
                registry=registry,
                link=settings.link,
            )
            await stack.enter_async_context(rpc)
            engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s, pool_size=1)
            stack.push_async_callback(engine.dispose)

            catalog = CatalogView(
                redis,
                keys,
                settings.backends,
                session,
                refresh_s=opts.catalog_refresh_s,
                backend_models_ttl_s=opts.backend_models_ttl_s,
            )
            with contextlib.suppress(TimeoutError, RedisError, OSError):  # the refresh loop retries
                async with asyncio.timeout(2.0):
                    await catalog.refresh()
            inflight = InflightTracker(redis, keys, gateway_id, publish_s=opts.inflight_publish_s)
            events_link = RespLink(settings.redis_url, link=settings.link)
            stack.callback(events_link.close)
            events = EventPublisher(
                events_link,
                keys,
                metrics,
                maxlen=opts.events_maxlen,
                max_queue=opts.events_buffer,
                max_bytes=opts.events_buffer_bytes,
                request_log=RequestLog(opts.request_log),
            )
            router = Router(
                rpc,
                catalog,
                metrics,
                virtual_model=opts.virtual_model,
                timeout_s=opts.route_timeout_s,
                gateway_id=gateway_id,
            )
            images = ImageFetcher(opts.images)
            stack.push_async_callback(images.close)
            policy = CircuitPolicy(
                failure_threshold=opts.circuit_failures,
                status_failure_threshold=opts.circuit_status_failures,
                base_cooldown_s=opts.circuit_cooldown_s,
                max_cooldown_s=opts.circuit_max_cooldown_s,
            )
            breakers = Breakers(CircuitStore(redis, keys, policy), metrics, refresh_s=opts.circuit_refresh_s)
            bounds = ReadBounds(
                ttfb_factor=opts.ttfb_factor,
                gap_factor=opts.gap_factor,
                read_min_s=min(opts.read_min_s, opts.read_timeout_s),
                read_max_s=opts.read_timeout_s,
                read_unprofiled_s=opts.read_unprofiled_s,
                unprofiled_min_tokens_per_s=opts.unprofiled_min_tokens_per_s,
                load_wait_max_s=opts.load_wait_max_s,
            )
            timeouts = TimeoutCache(bounds, opts.connect_timeout_s)
            catalog.on_change = timeouts.use_catalog
            timeouts.use_catalog(catalog.by_name)
            forwarder = Forwarder(
                settings.backends,
                session,
                metrics,
                inflight,
                connect_timeout_s=opts.connect_timeout_s,
                read_timeout_s=opts.read_timeout_s,
                max_attempts=opts.max_attempts,
                images=images,
                breakers=breakers,
                slots=Slots(opts.max_connections_per_backend, opts.slot_wait_s),
                timeouts=timeouts,
            )
            pipeline = Pipeline(
                router,
                forwarder,
                events,
                metrics,
                opts.shaping,
                log_bodies=opts.request_log.enabled,
                default_max_tokens=opts.default_max_tokens,
            )
            if opts.rate_limits.enabled:
                pipeline.limiter = RateLimiter(opts.rate_limits, settings.redis_url, keys, metrics)
                stack.push_async_callback(pipeline.limiter.close)
            sup = Supervisor("gateway", registry)
            if opts.paired_sampling.enabled:

                async def feedback(ev: FeedbackEventV1) -> None:
                    await redis.xadd(
                        keys.feedback_events,
                        {EVENT_FIELD: ev.model_dump_json()},
                        maxlen=opts.events_maxlen,
                        approximate=True,
                    )

                pipeline.sampler = PairedSampler(opts.paired_sampling, forwarder, session, feedback)
                stack.push_async_callback(pipeline.sampler.close)
            state = GatewayState(
                settings=settings,
                redis=redis,
                session=session,
                rpc=rpc,
                engine=engine,
                catalog=catalog,
                inflight=inflight,
                events=events,
                pipeline=pipeline,
                breakers=breakers,
                drain=drain,
                metrics=metrics,
                registry=registry,
                client_keys=client_key_ids(opts.api_keys),
                admin_guard=AdminGuard.of(settings),
                started_at=int(time.time()),
                multiprocess=multiprocess,
                supervisor=sup,
            )
            sup.start("catalog-refresh", catalog.run)
            sup.start("inflight-publish", inflight.run)
            sup.start("event-publish", events.run)
            sup.start("circuit-refresh", breakers.run)
            sup.start("drain-watch", lambda: drain.watch(pipeline.end_streams))

            async def stop_background() -> None:
                await sup.stop()
                await events.close()
                await inflight.close()

            stack.push_async_callback(stop_background)
            log.info(
                "gateway ready: %d backend(s), virtual model %s, scorer deadline %.0f ms",
                len(settings.backends),
                opts.virtual_model,
                opts.route_timeout_s * 1000,
            )
            yield {"gw": state}

    app = FastAPI(
        **_no_native_telemetry(),
        title="Turnout gateway",
        summary="One OpenAI- and Ollama-compatible endpoint in front of a fleet of LLM backends",
        version="0.1.0",
        lifespan=lifespan,
    )
    register_error_handlers(app)
    # the model endpoints: plain Starlette routes, first in the router (see routes/openai.py)
    hot = [*openai.hot_routes, *ollama.hot_routes]
    app.router.routes.extend(hot)
    app.include_router(openai.router)
    app.include_router(ollama.router)
    app.include_router(ollama_info.router)
    app.include_router(responses.router)
    app.include_router(anthropic_messages.router)
    app.include_router(ops.router)
    if opts.metrics_port is None:
        app.include_router(ops.metrics_router)
    app.include_router(admin_circuits.router)
    document(app, hot)
    app.include_router(admin_vram.router)
    app.include_router(admin_routing.router)
    app.include_router(admin_catalog.router)
    app.include_router(admin_requests.router)
    app.include_router(admin_live.router)
    app.include_router(ui.router)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(AdminCookie)
    # the model endpoints' POSTs skip the layers in between (hot_path.py), the edge still around them
    app.add_middleware(HotRoutes, routes=hot, handlers=app.exception_handlers)
    # request id, access metrics, body limit, JSON-only bodies around every request, and CORS
    # outside them when configured (the last added is the outermost)
    app.add_middleware(EdgeMiddleware, metrics=metrics, max_bytes=opts.max_body_bytes)
    if opts.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id", "x-turnout-quality"],
            expose_headers=["x-request-id", "x-turnout-model", "x-turnout-backend", "retry-after"],
            max_age=600,
        )
    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.16x instruments every request with OpenTelemetry when a provider is set up, and
    asks the global providers on every request to find out; metrics here are Prometheus, so turn it
    off (it measured ~20-50 µs a request)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
