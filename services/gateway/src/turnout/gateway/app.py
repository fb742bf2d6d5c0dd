"""``create_app(settings)``: the FastAPI app and its lifespan.

One lifespan composes one context per resource on an ``AsyncExitStack``: the Redis client,
the aiohttp session used by forwarding, the scorer RPC client, a small Postgres engine for
``/ready``, and the background tasks (catalog snapshot refresh, in-flight publishing, request
event publishing). They close in reverse order; pending events and in-flight deltas are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from turnout.common.db.session import make_engine
from turnout.common.http import make_session
from turnout.common.links import make_redis
from turnout.common.rpc import ROUTE_V1, RpcClient
from turnout.common.rpc.client import new_client_id
from turnout.common.rpc.resp import RespLink
from turnout.common.schemas.events import EVENT_FIELD, FeedbackEventV1
from turnout.common.supervise import Supervisor
from turnout.gateway.catalog import CatalogView
from turnout.gateway.errors import register_error_handlers
from turnout.gateway.events import EventPublisher
from turnout.gateway.forwarding import Forwarder
from turnout.gateway.hot_path import GatewayApp
from turnout.gateway.inflight import InflightTracker
from turnout.gateway.metrics import build_metrics
from turnout.gateway.paired_sampling import PairedSampler
from turnout.gateway.pipeline import Pipeline
from turnout.gateway.routes import admin_catalog, admin_routing, admin_vram, ollama, openai, ops
from turnout.gateway.routing import Router
from turnout.gateway.settings import GatewaySettings
from turnout.gateway.state import GatewayState

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000


def client_key_ids(settings: GatewaySettings) -> dict[str, str]:
    keys = settings.gateway.api_keys or []
    return {k.get_secret_value(): "key-" + hashlib.sha256(k.get_secret_value().encode()).hexdigest()[:10] for k in keys}


def create_app(
    settings: GatewaySettings, *, registry: CollectorRegistry | None = None, multiprocess: bool = False
) -> GatewayApp:
    """Build the gateway. ``registry`` defaults to a fresh one (so that tests can build several
    apps in one process); ``__main__`` passes the process-wide registry."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = build_metrics(registry)
    metrics.init_backends(b.name for b in settings.backends)
    opts = settings.gateway

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            keys = settings.keys
            redis = make_redis(settings.redis_url, settings.link)
            stack.push_async_callback(redis.aclose)
            session = make_session(connect_timeout_s=opts.connect_timeout_s)
            stack.push_async_callback(session.close)
            rpc = RpcClient(
                settings.redis_url,
                keys,
                client_id=new_client_id("gateway"),
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
                await asyncio.wait_for(catalog.refresh(), timeout=2.0)
            inflight = InflightTracker(redis, keys, publish_s=opts.inflight_publish_s)
            events_link = RespLink(settings.redis_url, link=settings.link)
            stack.callback(events_link.close)
            events = EventPublisher(
                events_link,
                keys,
                metrics,
                maxlen=opts.events_maxlen,
                max_queue=opts.events_buffer,
                max_bytes=opts.events_buffer_bytes,
            )
            router = Router(rpc, catalog, metrics, virtual_model=opts.virtual_model, timeout_s=opts.route_timeout_s)
            forwarder = Forwarder(
                settings.backends,
                session,
                metrics,
                inflight,
                connect_timeout_s=opts.connect_timeout_s,
                read_timeout_s=opts.read_timeout_s,
                max_attempts=opts.max_attempts,
            )
            sampler = None
            if opts.paired_sampling.enabled:

                async def feedback(ev: FeedbackEventV1) -> None:
                    await redis.xadd(
                        keys.feedback_events,
                        {EVENT_FIELD: ev.model_dump_json()},
                        maxlen=opts.events_maxlen,
                        approximate=True,
                    )

                sampler = PairedSampler(opts.paired_sampling, forwarder, session, feedback)
                stack.push_async_callback(sampler.close)
            state = GatewayState(
                settings=settings,
                redis=redis,
                session=session,
                rpc=rpc,
                engine=engine,
                catalog=catalog,
                inflight=inflight,
                events=events,
                pipeline=Pipeline(router, forwarder, events, metrics, sampler),
                metrics=metrics,
                registry=registry,
                client_keys=client_key_ids(settings),
                started_at=int(time.time()),
                multiprocess=multiprocess,
            )
            sup = Supervisor("gateway", registry)
            sup.start("catalog-refresh", catalog.run)
            sup.start("inflight-publish", inflight.run)
            sup.start("event-publish", events.run)

            async def stop_background() -> None:
                await sup.stop()
                await events.close()
                await inflight.close()

            stack.push_async_callback(stop_background)
            # Everything built so far (modules, schemas, routes, clients) lives as long as the
            # process: keep it out of the collector's generations, so that a full collection only
            # walks per-request garbage (it walked ~1M startup objects: ~80 ms p99 stalls).
            gc.collect()
            gc.freeze()
            # ...and collect the young generation every 10,000 net container allocations instead
            # of 700: each collection walks every object of the requests in flight, so at 16
            # concurrent requests the default spent ~35 µs of CPU per request (~7 %) re-walking
            # them; garbage cycles (rare here: reference counting frees the rest) live a little longer
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            log.info(
                "gateway ready: %d backend(s), virtual model %s, scorer deadline %.0f ms",
                len(settings.backends),
                opts.virtual_model,
                opts.route_timeout_s * 1000,
            )
            yield {"gw": state}

    app = GatewayApp(
        **_no_native_telemetry(),
        title="Turnout gateway",
        summary="One OpenAI- and Ollama-compatible endpoint in front of a fleet of LLM backends",
        version="0.1.0",
        lifespan=lifespan,
    )
    register_error_handlers(app)
    # request id, access metrics and the body limit around every request; the model endpoints
    # by the short path (see hot_path.py and routes/openai.py)
    app.use_hot_path([*openai.hot_routes, *ollama.hot_routes], metrics=metrics, max_body_bytes=opts.max_body_bytes)
    app.include_router(openai.router)
    app.include_router(ollama.router)
    app.include_router(ops.router)
    app.include_router(admin_vram.router)
    app.include_router(admin_routing.router)
    app.include_router(admin_catalog.router)
    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.16x instruments every request with OpenTelemetry when a provider is set up, and
    asks the global providers on every request to find out; metrics here are Prometheus, so turn it
    off (it measured ~20-50 µs a request)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
