"""The scorer service: keeps a live index of the catalog and the fleet, and answers ``scorer.route``.

State flows one way, off the request path:

* catalog — loaded from Postgres (:func:`switchyard.common.catalog.load_snapshot`) at start, on
  every ``keys.catalog_changed`` message and every ``catalog_refresh_s``; the snapshot is written
  to ``keys.catalog_snapshot`` (JSON :class:`CatalogSnapshotV1`) for the gateways' fallback;
* fleet — the gpu-agents' ``HostStateV1`` keys (members of ``keys.fleet_hosts``), re-read on
  ``keys.fleet_changed`` and every ``fleet_poll_s``.

Each load builds a new immutable :class:`LiveIndex` and swaps one reference; ``route`` only
reads that reference, so a request never waits on Redis or Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchyard.common.catalog import load_snapshot
from switchyard.common.db.migrate import wait_for_head
from switchyard.common.db.session import make_engine, make_sessionmaker
from switchyard.common.ops import build_ops_app, ops_server
from switchyard.common.rpc import ROUTE_V1, RpcContext, RpcServer
from switchyard.common.schemas.fleet import HostStateV1
from switchyard.common.schemas.route import RouteReplyV1, RouteRequestV1
from switchyard.scorer.index import CatalogIndex, FleetState, LiveIndex
from switchyard.scorer.metrics import ScorerMetrics
from switchyard.scorer.ranking import RankingConfig, rank
from switchyard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

RETRY_S = 2.0


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Scorer:
    def __init__(
        self,
        settings: ScorerSettings,
        *,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: ScorerMetrics,
    ) -> None:
        self._settings = settings
        self._opts = settings.scorer
        self._keys = settings.keys
        self._redis = redis
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._cfg = RankingConfig.from_options(settings.scorer)
        self._live = LiveIndex.build(CatalogIndex.empty(), FleetState())
        self._written_version: str | None = None
        self._catalog_wanted = asyncio.Event()
        self._fleet_wanted = asyncio.Event()
        self.catalog_loaded = False
        self.reloads = 0

    @property
    def live(self) -> LiveIndex:
        return self._live

    # --- the RPC handler (hot path) ------------------------------------------------------

    async def route(self, req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1:  # noqa: ARG002
        reply = rank(req, self._live, self._cfg)
        self._metrics.decisions.labels(reply.analysis.category).inc()
        if reply.unservable_code is not None:
            self._metrics.unservable.labels(reply.unservable_code).inc()
        return reply

    # --- catalog -------------------------------------------------------------------------

    async def reload_catalog(self) -> bool:
        """Load the catalog from Postgres; True when its version changed."""
        try:
            async with self._sessionmaker() as session:
                snapshot = await load_snapshot(session)
        except Exception:
            self._metrics.catalog_reloads.labels("error").inc()
            raise
        self._metrics.catalog_reloads.labels("ok").inc()
        self.reloads += 1
        changed = snapshot.version != self._live.catalog.version or not self.catalog_loaded
        if changed:
            index = CatalogIndex.build(snapshot, unknown_params_b=self._opts.unknown_params_b)
            self._live = LiveIndex.build(index, self._live.fleet)
            self._metrics.catalog_models.set(index.size)
            log.info("catalog %s loaded: %d routable models", snapshot.version, index.size)
        self.catalog_loaded = True
        if snapshot.version != self._written_version:
            await self._redis.set(self._keys.catalog_snapshot, snapshot.model_dump_json())
            self._written_version = snapshot.version
        return changed

    def request_catalog_reload(self) -> None:
        self._catalog_wanted.set()

    async def load_until_ready(self) -> None:
        """First load, retried until Postgres and Redis answer."""
        while True:
            try:
                await self.reload_catalog()
                return
            except (RedisError, OSError, Exception) as exc:
                log.warning("catalog load failed (%s); retrying in %.0fs", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def catalog_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._catalog_wanted.wait(), timeout=self._opts.catalog_refresh_s)
            self._catalog_wanted.clear()
            try:
                await self.reload_catalog()
            except Exception as exc:
                log.warning("catalog reload failed (%s); keeping catalog %s", exc, self._live.catalog.version)
                await asyncio.sleep(RETRY_S)
                self._catalog_wanted.set()

    # --- fleet ---------------------------------------------------------------------------

    async def refresh_fleet(self) -> bool:
        """Re-read every host's state; True when the fleet view changed."""
        members = await self._redis.zrange(self._keys.fleet_hosts, 0, -1)
        hosts = [h.decode() if isinstance(h, bytes) else str(h) for h in members]
        states: list[HostStateV1] = []
        if hosts:
            raws = await self._redis.mget([self._keys.fleet_host(h) for h in hosts])
            for host, raw in zip(hosts, raws, strict=True):
                if raw is None:
                    continue  # expired: the agent is gone
                try:
                    states.append(HostStateV1.model_validate(orjson.loads(raw)))
                except (orjson.JSONDecodeError, ValidationError) as exc:
                    log.warning("ignoring malformed fleet state of %s: %s", host, exc)
        fleet = FleetState.from_hosts(states)
        self._metrics.fleet_hosts.set(fleet.hosts)
        if fleet == self._live.fleet:
            return False
        self._live = LiveIndex.build(self._live.catalog, fleet)
        return True

    def request_fleet_refresh(self) -> None:
        self._fleet_wanted.set()

    async def fleet_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fleet_wanted.wait(), timeout=self._opts.fleet_poll_s)
            self._fleet_wanted.clear()
            try:
                await self.refresh_fleet()
            except (RedisError, OSError) as exc:
                log.debug("fleet refresh failed: %s", exc)

    # --- notifications -------------------------------------------------------------------

    async def listen(self, redis_url: str) -> None:
        """Subscribe to ``catalog_changed`` and ``fleet_changed``; reconnect with back-off, and
        reload after every (re)subscription since messages sent meanwhile are lost."""
        channels = {
            self._keys.catalog_changed: self.request_catalog_reload,
            self._keys.fleet_changed: self.request_fleet_refresh,
        }
        backoff = 0.05
        while True:
            conn = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=None)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                backoff = 0.05
                self.request_catalog_reload()
                self.request_fleet_refresh()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    action = channels.get(channel)
                    if action is not None:
                        action()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("catalog/fleet subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await conn.aclose()


@dataclass(frozen=True, slots=True)
class Running:
    scorer: Scorer
    server: RpcServer
    serving: asyncio.Task[None]


@asynccontextmanager
async def running_scorer(
    settings: ScorerSettings, *, registry: CollectorRegistry = REGISTRY, rid: str | None = None
) -> AsyncIterator[Running]:
    """The whole service: ops endpoints, first catalog load, RPC server and refresh loops."""
    await wait_for_head(settings.database_url, timeout_s=settings.scorer.schema_wait_s)
    async with AsyncExitStack() as stack:
        engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s, pool_size=2)
        stack.push_async_callback(engine.dispose)
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        stack.push_async_callback(redis.aclose)
        metrics = ScorerMetrics.create(registry)
        scorer = Scorer(settings, redis=redis, sessionmaker=make_sessionmaker(engine), metrics=metrics)
        server = RpcServer(
            settings.redis_url,
            settings.keys,
            replica_id=rid or replica_id(),
            max_concurrency=settings.scorer.max_concurrency,
            registry=registry,
        )
        server.register(ROUTE_V1, scorer.route)

        async def redis_ok() -> bool:
            return bool(await redis.ping())

        async def catalog_ok() -> bool:
            return scorer.catalog_loaded

        async def rpc_ok() -> bool:
            return server.connected

        checks: dict[str, Callable[[], Awaitable[bool]]] = {"redis": redis_ok, "catalog": catalog_ok, "rpc": rpc_ok}
        ops = build_ops_app("scorer", checks, registry=registry)
        await stack.enter_async_context(ops_server(ops, settings.scorer.ops_host, settings.scorer.ops_port))

        await scorer.load_until_ready()
        with contextlib.suppress(RedisError, OSError):
            await scorer.refresh_fleet()
        tasks = [
            asyncio.create_task(scorer.catalog_loop(), name="catalog-loop"),
            asyncio.create_task(scorer.fleet_loop(), name="fleet-loop"),
            asyncio.create_task(scorer.listen(settings.redis_url), name="catalog-listener"),
        ]
        serving = asyncio.create_task(server.serve(), name="rpc-server")
        try:
            yield Running(scorer, server, serving)
        finally:
            await server.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(serving, timeout=10)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


async def serve(settings: ScorerSettings, *, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (SIGTERM/SIGINT in ``__main__``) or the RPC server dies."""
    async with running_scorer(settings) as running:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, running.serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.serving.done() and not running.serving.cancelled():
            running.serving.result()
        log.info("scorer stopping")
