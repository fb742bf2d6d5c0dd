"""The scorer service: keeps a live index of the catalog and the fleet, and answers ``scorer.route``.

State flows one way, off the request path:

* catalog — loaded from Postgres (:func:`turnout.common.catalog.load_snapshot`) at start, on
  every ``keys.catalog_changed`` message and every ``catalog_refresh_s``; the snapshot is written
  to ``keys.catalog_snapshot`` (JSON :class:`CatalogSnapshotV1`) for the gateways' fallback;
* fleet — the gpu-agents' ``HostStateV1`` keys (members of ``keys.fleet_hosts``), re-read on
  ``keys.fleet_changed`` and every ``fleet_poll_s``.

Each load hands the new state to the :class:`~turnout.scorer.engine.RoutingEngine` (analysis,
rules, scoring, learned term, routing cache) that answers ``scorer.route`` and ``scorer.explain``:
it builds one immutable catalog table (:class:`~turnout.scorer.catalog.ModelTable`) that the
ranking and the VRAM planner both read, joins the fleet to it per replica, and swaps references;
a request never waits on Postgres. Also off the request path: operator rules (file polled every ``rules_poll_s``),
the learned index and the feedback term (Postgres, every ``learned_refresh_s``), and control
messages on ``keys.scorer_control`` (``reload``, ``invalidate_cache``) from ``/admin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnout.common import router_priors
from turnout.common.aio import raise_if_cancelling, wait_or_cancel
from turnout.common.catalog import load_snapshot
from turnout.common.circuits import CircuitStore, blocked
from turnout.common.db.migrate import wait_for_head
from turnout.common.db.session import DB_UNAVAILABLE, make_engine, make_sessionmaker
from turnout.common.http import make_session
from turnout.common.inflight import read_inflight_at
from turnout.common.links import make_redis
from turnout.common.metrics import QueueDepths
from turnout.common.ops import build_ops_app, ops_server
from turnout.common.rpc import EXPLAIN_V1, ROUTE_V1, RpcClient, RpcContext, RpcServer
from turnout.common.rpc.client import new_client_id
from turnout.common.schemas.explain import ExplainReplyV1, VramExplainV1
from turnout.common.schemas.fleet import HostStateV1
from turnout.common.schemas.route import RouteReplyV1, RouteRequestV1
from turnout.common.supervise import Supervisor
from turnout.embeddings.static import default_embedder
from turnout.scorer import router_train
from turnout.scorer.caches import DecisionMemo, DecisionMemoMetrics, RouteCacheConfig, RoutingCache
from turnout.scorer.classifier import LLMClassifier
from turnout.scorer.engine import Answer, RoutingEngine, classifier_config, engine_config, explain_reply
from turnout.scorer.fleet import FleetState
from turnout.scorer.learned import LearnedIndex
from turnout.scorer.learned_loader import load_feedback, load_profile_outcomes
from turnout.scorer.learned_prior import RouterPrior, load_prior
from turnout.scorer.metrics import ScorerMetrics
from turnout.scorer.rules import RulesStore
from turnout.scorer.settings import ScorerSettings
from turnout.scorer.vram_actions import VramActions
from turnout.scorer.vram_reply import Ranked, Rework
from turnout.scorer.vram_routing import VramCoordinator

log = logging.getLogger(__name__)

RETRY_S = 2.0
_UNAVAILABLE: tuple[type[BaseException], ...] = (*DB_UNAVAILABLE, RedisError)
"""Postgres or Redis down or slow: logged without a traceback and retried."""


def replica_id() -> str:
    """This scorer process's id: host name and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Scorer:
    """One scorer replica: the routing engine, its reload loops and the RPC handlers."""

    def __init__(
        self,
        settings: ScorerSettings,
        *,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: ScorerMetrics,
        engine: RoutingEngine | None = None,
    ) -> None:
        self._settings = settings
        self._opts = settings.scorer
        self._keys = settings.keys
        self._settings_link = settings.link
        self._redis = redis
        self._circuits = CircuitStore(redis, self._keys)
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self.engine = engine or RoutingEngine(engine_config(settings.scorer))
        metrics.inflight_read.set_function(self.engine.inflight_read)
        metrics.inflight_noted.set_function(self.engine.inflight_noted)
        self._written_version: str | None = None
        self._catalog_wanted = asyncio.Event()
        self._fleet_wanted = asyncio.Event()
        self.catalog_loaded = False
        self.reloads = 0
        self.vram: VramCoordinator | None = None
        self._base_prior = self.engine.prior
        self._training: asyncio.Task[None] | None = None

    # --- the RPC handler (hot path) ------------------------------------------------------

    async def route(self, req: RouteRequestV1, ctx: RpcContext) -> RouteReplyV1 | bytes:
        """``scorer.route``: the ranked candidates for a request, re-ordered by the VRAM planner.
        A decision made now goes out as JSON bytes encoded directly from the ranking's plain
        values (:meth:`Answer.wire`, no model built: the gateway validates the reply on receipt),
        with the planner's changes (:class:`~turnout.scorer.vram_reply.Rework`) made to those
        values; a routing-cache hit is a reply model, changed as a model."""
        budget = ctx.remaining - self._opts.routing.decision_reserve_s
        out = await self.engine.route_answer(req, budget_s=budget)
        if isinstance(out, Answer):
            ranking, cands = out.ranking, out.candidates
            rework = await self._rework(cands, ctx)
            if rework is None:
                self._routed(req, cands[0] if cands else None, ranking.analysis.category, ranking.unservable_code)
                return out.wire()
            self._routed(req, cands[rework.order()[0]], ranking.analysis.category, ranking.unservable_code)
            return orjson.dumps(rework.on_fields(out.fields()))
        rework = await self._rework(out.candidates, ctx)
        reply = rework.on_reply(out) if rework is not None else out
        first = reply.candidates[0] if reply.candidates else None
        self._routed(req, first, reply.analysis.category, reply.unservable_code)
        return reply

    async def _rework(self, candidates: Sequence[Ranked], ctx: RpcContext) -> Rework | None:
        """What the VRAM planner changes in a reply with these candidates: resident-within-margin
        vs making room (vram_routing.py), and the admission step; ``None``: nothing."""
        if self.vram is None or not self.vram.would_decide(len(candidates)):
            return None
        waits = self.engine.expected_waits(candidates)
        return await self.vram.rework(candidates, remaining_s=ctx.remaining, waits=waits)

    def _routed(self, req: RouteRequestV1, first: Ranked | None, category: str, unservable_code: str | None) -> None:
        """A decision handed out: its first candidate counts as in flight there for the request's
        expected time or until the gateways' counts hold it (``notes.py``), and the decision is
        counted."""
        if first is not None:
            self.engine.note_routed(first.backend, first.upstream_model, req)
        m = self._metrics
        m.child(m.decisions, category).inc()
        if unservable_code is not None:
            m.child(m.unservable, unservable_code).inc()

    async def explain(self, req: RouteRequestV1, ctx: RpcContext) -> ExplainReplyV1:  # noqa: ARG002
        """``scorer.explain``: the whole ranking with every term, and what the VRAM planner would do."""
        ranking = await self.engine.explain(req)
        out = explain_reply(ranking, self.engine.rules.current.version)
        out.learned = self.engine.learned_info()
        if self.vram is not None and out.candidates:
            before = out.candidates[0].model
            planned, decision = self.vram.preview(RouteReplyV1(candidates=out.candidates))
            if decision is not None:
                out.candidates = planned.candidates
                chosen = planned.candidates[0].model
                out.vram = VramExplainV1(
                    kind=decision.kind.value,
                    reason=decision.reason,
                    ranked_first=before,
                    chosen=chosen,
                    orders=[f"{o.action} {o.model} on {o.host}" for o in decision.orders],
                    if_late=self.vram.fallback_if_late(planned) if decision.orders else None,
                )
                if chosen != before:
                    out.notes.append(
                        f"VRAM planner: {chosen} instead of {before} ({decision.kind.value}: {decision.reason})"
                    )
        out.model = out.candidates[0].model if out.candidates else None
        return out

    # --- rules, learned index, control messages -----------------------------------------

    async def reload_learned(self) -> None:
        """Rebuild the learned index and the feedback term from Postgres, then swap them in."""
        r = self._opts.routing
        embedder = self.engine.embedder
        async with self._sessionmaker() as session:
            index = LearnedIndex(embedder.dims) if embedder is not None else None
            n = await load_profile_outcomes(session, index, embedder) if index is not None and embedder else 0
            fb = await load_feedback(session, index, half_life_days=r.feedback_half_life_days)
        if index is not None and len(index):
            index.prepare()  # off the first lookup's path
            self.engine.learned = index
        self.engine.set_feedback(fb.by_model)
        log.info(
            "learned index: %d graded prompts, %d feedback outcomes, feedback on %d models",
            n,
            fb.outcomes,
            len(fb.by_model),
        )

    async def reload_prior(self) -> None:
        """Swap in the active router prior from Redis — a trained one when activated, else the
        shipped one when ``routing.prior`` is on, else none; a malformed or mismatched artefact
        keeps the current prior."""
        embedder = self.engine.embedder
        if embedder is None:
            return
        try:
            raw = await router_priors.load_active(self._redis, self._keys)
            prior = RouterPrior.from_json(raw) if raw is not None else self._base_prior
        except (ValueError, RedisError, OSError) as exc:
            log.warning("router prior reload failed (%s); keeping %s", exc, self._prior_version())
            return
        if prior is not None and prior.dims != embedder.dims:
            log.warning(
                "router prior %s has %d dims, the embedder %d: ignored", prior.version, prior.dims, embedder.dims
            )
            return
        current = self.engine.prior.version if self.engine.prior is not None else None
        new = prior.version if prior is not None else None
        if new != current:
            self.engine.prior = prior
            if self.engine.cache is not None:
                await self.engine.cache.invalidate()
            log.info("router prior %s active", new or "none")

    def _prior_version(self) -> str:
        return self.engine.prior.version if self.engine.prior is not None else "none"

    def train_router(self) -> None:
        """Fit a router prior on this deployment's data in the background (one replica at a time)."""
        if self._training is not None and not self._training.done():
            return
        self._training = asyncio.create_task(self._train_router(), name="router-train")

    async def stop_training(self) -> None:
        """Cancel a router training in progress (at shutdown; its lock expires by itself)."""
        if self._training is not None and not self._training.done():
            await wait_or_cancel(self._training, timeout_s=0)

    async def _train_router(self) -> None:
        lock = f"{self._keys.router_prior_active}:training"
        if not await self._redis.set(lock, replica_id(), nx=True, ex=600):
            return  # another replica is training
        try:
            embedder = self.engine.embedder
            base = self.engine.prior or self._base_prior or load_prior()
            if embedder is None:
                return
            async with self._sessionmaker() as session:
                data = await router_train.collect(session, embedder)
            held = router_train.holdout_mask(data.keys)
            prior = await asyncio.to_thread(router_train.train, data.subset(~held), base=base)
            version = await router_priors.publish(self._redis, self._keys, prior.to_json())
            log.info("router prior %s trained on %s and activated", version, prior.notes)
        except router_train.NotEnoughData as exc:
            log.warning("router prior not trained: %s", exc)
        except Exception:  # the task's boundary: a bug shows with its traceback, the active prior stays
            log.exception("router prior training failed")
        finally:
            await self._redis.delete(lock)

    async def learned_loop(self) -> None:
        """Rebuild the learned index every ``learned_refresh_s``; a failure keeps the previous one."""
        while True:
            raise_if_cancelling()
            try:
                await self.reload_learned()
            except _UNAVAILABLE as exc:
                log.warning("learned index reload failed (%s); keeping the previous one", exc)
            except Exception:  # the loop's boundary: a bug shows with its traceback, the old index stays
                log.exception("learned index reload failed; keeping the previous one")
            await self.reload_prior()
            await asyncio.sleep(self._opts.routing.learned_refresh_s)

    async def control(self, data: bytes | str) -> None:
        """Act on a control message (reload, invalidate the cache, reload or train the router prior)."""
        try:
            action = orjson.loads(data).get("action")
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("ignoring malformed control message")
            return
        if action == "reload":
            ok = self.engine.rules.reload()
            self.request_catalog_reload()
            log.info("reload requested: rules %s", "reloaded" if ok else "kept (invalid file)")
        elif action == "invalidate_cache" and self.engine.cache is not None:
            removed = await self.engine.cache.invalidate()
            log.info("routing cache invalidated: %d keys", removed)
        elif action == "reload_prior":
            await self.reload_prior()
        elif action == "train_router":
            self.train_router()

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
        changed = snapshot.version != self.engine.table.version or not self.catalog_loaded
        if changed:
            self.engine.set_catalog(snapshot)
            if self.vram is not None:
                self.vram.update_catalog(self.engine.table)
            self._metrics.catalog_models.set(self.engine.table.size)
            log.info("catalog %s loaded: %d routable models", snapshot.version, self.engine.table.size)
        self.catalog_loaded = True
        rules = self.engine.rules.current
        written = f"{snapshot.version}.{rules.version}"
        if written != self._written_version:
            hidden = [m.name for m in snapshot.models if not rules.is_allowed(m.name)]
            published = snapshot.model_copy(update={"hidden": hidden})
            await self._redis.set(self._keys.catalog_snapshot, published.model_dump_json())
            self._written_version = written
        return changed

    def request_catalog_reload(self) -> None:
        """Wake the catalog loop now."""
        self._catalog_wanted.set()

    async def load_until_ready(self) -> None:
        """First load, retried until Postgres and Redis answer."""
        while True:
            try:
                await self.reload_catalog()
                return
            except _UNAVAILABLE as exc:
                log.warning("catalog load failed (%s); retrying in %.0fs", exc, RETRY_S)
            except Exception:  # bad catalog data or a bug: shown with its traceback, then retried
                log.exception("catalog load failed; retrying in %.0fs", RETRY_S)
            await asyncio.sleep(RETRY_S)

    async def catalog_loop(self) -> None:
        """Reload the catalog every ``catalog_refresh_s``, or at once when asked."""
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._opts.catalog_refresh_s):
                    await self._catalog_wanted.wait()
            self._catalog_wanted.clear()
            try:
                await self.reload_catalog()
            except _UNAVAILABLE as exc:
                log.warning("catalog reload failed (%s); keeping catalog %s", exc, self.engine.table.version)
            except Exception:  # the loop's boundary: a bug shows with its traceback, the old catalog stays
                log.exception("catalog reload failed; keeping catalog %s", self.engine.table.version)
            else:
                continue
            await asyncio.sleep(RETRY_S)
            self._catalog_wanted.set()

    # --- fleet ---------------------------------------------------------------------------

    async def refresh_fleet(self) -> bool:
        """Re-read every host's state and what the gateways share (in-flight counts, open
        circuits); True when the fleet view changed."""
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
        # what the gateways share: requests in flight (the busy term) and open circuits (a filter)
        inflight = await read_inflight_at(self._redis, self._keys)
        open_backends, open_replicas = blocked(await self._circuits.read_all())
        fleet = replace(
            FleetState.from_hosts(states, inflight.counts),
            open_backends=open_backends,
            open_replicas=open_replicas,
        )
        self._metrics.fleet_hosts.set(fleet.hosts)
        if fleet == self.engine.fleet:
            return False
        self.engine.set_fleet(fleet, taken_at=inflight.taken_at)
        return True

    async def refresh_load(self) -> None:
        """The in-flight counts every live gateway shares (:func:`read_inflight_at`), handed to the
        engine's busy term; they replace the decisions it noted that they hold (``notes.py``)."""
        read = await read_inflight_at(self._redis, self._keys)
        self.engine.set_load(read.counts, read.taken_at)

    async def load_loop(self) -> None:
        """Re-read the gateways' in-flight counts every ``load_poll_s``."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self._opts.load_poll_s)
            try:
                await self.refresh_load()
            except (RedisError, OSError) as exc:
                log.debug("in-flight refresh failed: %s", exc)

    def request_fleet_refresh(self) -> None:
        """Wake the fleet loop now."""
        self._fleet_wanted.set()

    async def fleet_loop(self) -> None:
        """Re-read the fleet's state every ``shared_poll_s``, or at once when asked."""
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._opts.shared_poll_s):
                    await self._fleet_wanted.wait()
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
            self._keys.scorer_control: None,
        }
        backoff = 0.05
        while True:
            conn = make_redis(redis_url, self._settings_link, block_s=1.0)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                backoff = 0.05
                self.request_catalog_reload()
                self.request_fleet_refresh()
                while True:
                    raise_if_cancelling()
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    action = channels.get(channel)
                    if channel == self._keys.scorer_control:
                        await self.control(msg["data"])
                    elif action is not None:
                        action()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("catalog/fleet subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(RedisError, OSError):
                    await conn.aclose()


@dataclass(frozen=True, slots=True)
class Running:
    """A started scorer: the replica, its RPC server and the task serving it."""

    scorer: Scorer
    server: RpcServer
    serving: asyncio.Task[None]


@asynccontextmanager
async def routing_engine(
    settings: ScorerSettings, redis: Redis, registry: CollectorRegistry
) -> AsyncIterator[RoutingEngine]:
    """The routing engine with its rules, embedder, routing cache and (optional) classifier."""
    opts = settings.scorer
    r = opts.routing
    rules = RulesStore(
        Path(r.rules_file) if r.rules_file else None, poll_s=r.rules_poll_s, default_aliases=opts.aliases
    )
    cache = None
    if r.route_cache.enabled:
        c = r.route_cache
        cfg = RouteCacheConfig(
            ttl_s=c.ttl_s,
            semantic=c.semantic,
            threshold=c.threshold,
            capacity=c.capacity,
            lookup_timeout_s=c.lookup_timeout_s,
        )
        cache = RoutingCache(redis, settings.keys, cfg, registry=registry)
    embedder = default_embedder()
    prior = load_prior(r.prior_file) if r.prior_file else load_prior() if r.prior else None
    ccfg = classifier_config(r)
    async with AsyncExitStack() as stack:
        classifier = None
        if ccfg is not None:
            session = make_session(limit=16, limit_per_host=8, connect_timeout_s=ccfg.timeout_s)
            stack.push_async_callback(session.close)
            classifier = LLMClassifier(ccfg, session)
            stack.push_async_callback(classifier.close)
        ecfg = engine_config(opts)
        yield RoutingEngine(
            ecfg,
            rules=rules,
            embedder=embedder,
            learned=LearnedIndex(embedder.dims),
            prior=prior,
            classifier=classifier,
            cache=cache,
            memo=DecisionMemo(ecfg.memo_size, DecisionMemoMetrics.create(registry)),
        )


@asynccontextmanager
async def vram_coordinator(
    settings: ScorerSettings,
    redis: Redis,
    registry: CollectorRegistry,
    *,
    replica: str,
    metrics: ScorerMetrics | None = None,
) -> AsyncIterator[VramCoordinator]:
    """VRAM-aware routing: its own RPC client for ``gpu.order.<host>`` orders, the executor
    (per-host lock, action log) and the coordinator that the route handler consults."""
    opts = settings.scorer.vram
    orders = RpcClient(
        settings.redis_url, settings.keys, client_id=new_client_id("scorer-vram"), registry=registry, link=settings.link
    )
    await orders.start()
    coordinator: VramCoordinator | None = None

    async def busy(host: str, model: str) -> bool:
        return coordinator is not None and await coordinator.is_busy(host, model)

    actions = VramActions(
        redis,
        settings.keys,
        orders,
        replica=f"scorer-{replica}",
        opts=opts,
        busy=busy,
        counter=metrics.vram_orders if metrics is not None else None,
    )
    coordinator = VramCoordinator(
        opts, redis=redis, keys=settings.keys, actions=actions, refresh_s=opts.refresh_s,
        evict_wait_s=opts.evict_wait_s, replica=f"scorer-{replica}",
    )  # fmt: skip
    try:
        yield coordinator
    finally:
        await coordinator.close()
        await orders.close()


@asynccontextmanager
async def running_scorer(
    settings: ScorerSettings, *, registry: CollectorRegistry = REGISTRY, rid: str | None = None
) -> AsyncIterator[Running]:
    """The whole service: ops endpoints, first catalog load, RPC server and refresh loops."""
    await wait_for_head(settings.database_url, timeout_s=settings.scorer.schema_wait_s)
    async with AsyncExitStack() as stack:
        engine = make_engine(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s, pool_size=2)
        stack.push_async_callback(engine.dispose)
        redis = make_redis(settings.redis_url, settings.link)
        stack.push_async_callback(redis.aclose)
        metrics = ScorerMetrics.create(registry)
        routing = await stack.enter_async_context(routing_engine(settings, redis, registry))
        scorer = Scorer(settings, redis=redis, sessionmaker=make_sessionmaker(engine), metrics=metrics, engine=routing)
        rid = rid or replica_id()
        if settings.scorer.vram.enabled:
            scorer.vram = await stack.enter_async_context(
                vram_coordinator(settings, redis, registry, replica=rid, metrics=metrics)
            )
        server = RpcServer(
            settings.redis_url,
            settings.keys,
            link=settings.link,
            replica_id=rid,
            max_concurrency=settings.scorer.max_concurrency,
            registry=registry,
        )
        server.register(ROUTE_V1, scorer.route)
        server.register(EXPLAIN_V1, scorer.explain)

        async def redis_ok() -> bool:
            return bool(await redis.ping())

        async def catalog_ok() -> bool:
            return scorer.catalog_loaded

        async def rpc_ok() -> bool:
            return server.connected

        checks: dict[str, Callable[[], Awaitable[bool]]] = {"redis": redis_ok, "catalog": catalog_ok, "rpc": rpc_ok}
        backlog = QueueDepths(
            metrics.rpc_backlog,
            lambda: redis,
            lists={m.label: settings.keys.rpc_queue(m.name, m.version) for m in (ROUTE_V1, EXPLAIN_V1)},
        )
        sup = Supervisor("scorer", registry)
        stack.push_async_callback(sup.stop)
        ops = build_ops_app("scorer", checks, registry=registry, tasks=sup.state, refresh=[backlog.refresh])
        await stack.enter_async_context(ops_server(ops, settings.scorer.ops_host, settings.scorer.ops_port))

        await scorer.load_until_ready()
        await scorer.reload_prior()
        with contextlib.suppress(RedisError, OSError):
            await scorer.refresh_fleet()
        sup.start("catalog-loop", scorer.catalog_loop)
        sup.start("fleet-loop", scorer.fleet_loop)
        sup.start("load-loop", scorer.load_loop)
        sup.start("catalog-listener", partial(scorer.listen, settings.redis_url))
        sup.start("rules-watch", routing.rules.watch)
        if settings.scorer.routing.learned:
            sup.start("learned-loop", scorer.learned_loop)
        if scorer.vram is not None:
            sup.start("vram-refresh", scorer.vram.run)
        serving = sup.start("rpc-server", server.serve)
        try:
            yield Running(scorer, server, serving)
        finally:
            await server.stop()
            await wait_or_cancel(serving, timeout_s=10)
            await scorer.stop_training()
            await sup.stop()


async def serve(settings: ScorerSettings, *, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (SIGTERM/SIGINT in ``__main__``) or the RPC server dies."""
    async with running_scorer(settings) as running:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, running.serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.serving.done() and not running.serving.cancelled():
            running.serving.result()
        log.info("scorer stopping")
