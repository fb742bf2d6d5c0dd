"""VRAM-aware routing in the scorer: the glue between the ranking, the planner (``vram.py``)
and the order executor (``vram_actions.py``).

* **State** (:meth:`VramCoordinator.refresh`, every ``refresh_s`` off the request path): every
  host's :class:`HostStateV1`, the gateways' in-flight counters (:mod:`turnout.common.inflight`: a
  model with requests in flight is *busy*), loads made room for but not yet reported
  (``vram:pending:<host>``) and last-use times (``vram:last_used:<host>``, LRU order shared by
  replicas). Each refresh builds an immutable ``{host: HostVram}`` view.
* **Decision** (:meth:`decide`, in the ``route`` handler, no I/O): the reply's candidates
  become planner :class:`Option` s (host from the agent that watches the candidate's backend;
  need from ``/api/ps`` measurements, the catalog's profiled ``vram_bytes`` or the estimate);
  the planner's choice moves to the front of the list with the reason in its ``reasons``, and
  each candidate whose model is not loaded on its host carries the expected load time
  (``load_s``, :func:`load_estimates`), which the gateway adds, capped, to its first-byte bound.
  With the candidates' expected waits (``waits``), a loaded replica with too many requests
  ahead gives way to a loaded one with room (the planner's admission step, ``vram.py``).
* **Orders** (:meth:`route`): a decision with orders (``evict``; ``fits`` for a model slow to
  load) starts them in the background under the host lock and waits for the unloads at most
  ``evict_wait_s`` (bounded by the RPC deadline). Room made in time: the best candidate goes
  first. Otherwise the first candidate that needs no orders goes first and the orders carry on,
  so the next request finds room. A ``preload`` decision (a resident model serves this request
  while the best one loads) starts its orders and does not wait.
  Local overlays (loads reserved, models being unloaded) keep concurrent decisions of this
  replica from double-counting memory before the agent reports the change. A load reserved
  behind unloads is *awaiting room* until they are done: concurrent decisions count its bytes
  but send no request to it (the backend would refuse it, out of memory); they go to a resident
  model within the margin or the first candidate that needs no orders, as the evicting request
  itself does when its room is late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.aio import cancel_and_wait, raise_if_cancelling
from turnout.common.inflight import read_inflight
from turnout.common.keys import Keys
from turnout.common.schemas.fleet import HostStateV1
from turnout.common.schemas.route import RouteReplyV1
from turnout.common.schemas.vram import HostBudgetV1, VramStatusV1
from turnout.common.vram_lock import pending_loads
from turnout.scorer.catalog import ModelTable
from turnout.scorer.vram import (
    Decision,
    DecisionKind,
    HostVram,
    Option,
    ResidentModel,
    VramConfig,
    VramOptions,
    host_vram,
    measured_sizes,
    model_need,
    plan,
)
from turnout.scorer.vram_actions import VramActions
from turnout.scorer.vram_reply import Ranked, Rework, attempt_order, load_estimates, wait_estimates

log = logging.getLogger(__name__)

LOCAL_PENDING_S = 10.0
PLANNED_KEPT = 4096
"""Decisions kept per view and overlaid hosts (``VramCoordinator._planned``)."""
_QUOTES_SCORES = frozenset({DecisionKind.RESIDENT_WITHIN_MARGIN, DecisionKind.PRELOAD})
"""Decisions whose reasons end by quoting the chosen and the best candidate's scores (kept with
the rest of the reason, the scores quoted anew); a ``busy`` one quotes waits: never kept."""
STATUS_TTL_S = 10


@dataclass(frozen=True, slots=True)
class VramView:
    hosts: Mapping[str, HostVram] = field(default_factory=lambda: MappingProxyType({}))
    backend_host: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    measured: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    states: tuple[HostStateV1, ...] = ()


class VramCoordinator:
    def __init__(
        self,
        opts: VramOptions,
        *,
        redis: Redis,
        keys: Keys,
        actions: VramActions | None,
        refresh_s: float = 0.5,
        evict_wait_s: float = 0.5,
        replica: str = "",
    ) -> None:
        self.opts = opts
        self.replica = replica
        self.cfg = VramConfig.from_options(opts)
        self._redis = redis
        self._keys = keys
        self._actions = actions
        self._refresh_s = refresh_s
        self._evict_wait_s = evict_wait_s
        self._catalog = ModelTable.build(())
        self.view = VramView()
        self._last_used: dict[tuple[str, str], float] = {}
        self._dirty_last_used: dict[str, dict[str, float]] = {}
        self._local_pending: dict[str, dict[str, tuple[int, float]]] = {}
        self._unloading: dict[str, set[str]] = {}
        self._awaiting_room: dict[str, set[str]] = {}
        """Loads reserved behind unloads still under way (host -> models): not routable until the room is made."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._measured: dict[str, int] = {}
        self._needs: dict[tuple[str, str], tuple[int, bool]] = {}
        self._needs_of: tuple[VramView, ModelTable] = (self.view, self._catalog)
        self._overlaid: dict[str, tuple[_Overlay, HostVram]] = {}
        """host -> its overlays as last applied and the host they gave (:meth:`_hosts_now`)."""
        self._overlays_version = 0
        """Bumped by every change to the overlays (:meth:`_overlays_changed`)."""
        self._hosts_memo: tuple[Mapping[str, HostVram], int, float, float, Mapping[str, HostVram]] = (
            self.view.hosts,
            0,
            0.0,
            0.0,
            self.view.hosts,
        )
        """The view's hosts, the overlays' version, and the times between which the overlaid hosts
        built from them hold (a reservation expires), with those hosts."""
        self._seen: dict[tuple[str, str, str], _Seen] = {}
        self._planned: dict[tuple[tuple[int, ...], int, tuple[bool, ...]], tuple[Decision, str | None]] = {}
        """The planner's decisions, which read no score nor wait beyond which candidates are within
        the score margin and which are admitted: (candidates seen, the first one past the margin,
        admitted or not each) -> the decision and, for one that quotes the scores, its reason
        before them; kept with ``_seen``."""
        self._seen_of: tuple[VramView, ModelTable, Mapping[str, HostVram]] = (self.view, self._catalog, self.view.hosts)
        self.decisions: dict[str, int] = {}

    # --- state -------------------------------------------------------------------------------

    def update_catalog(self, table: ModelTable) -> None:
        """The scorer's catalog table (the one the ranking reads): each candidate's memory need."""
        self._catalog = table

    async def refresh(self) -> None:
        states = await self._read_states()
        backend_host = {s.backend: s.host for s in states if s.backend}
        busy: dict[str, set[str]] = {}
        pending: dict[str, dict[str, int]] = {}
        inflight = await read_inflight(self._redis, self._keys)
        for s in states:
            if s.backend:
                busy[s.host] = {m for (b, m), n in inflight.items() if b == s.backend and n > 0}
            pending[s.host] = await pending_loads(self._redis, self._keys, s.host)
            arrived = set(pending[s.host]) & {m.name for m in s.loaded_models}
            if arrived:  # the agent reports them now: no longer pending
                await self._redis.hdel(self._keys.vram_pending(s.host), *arrived)  # type: ignore[misc]
                pending[s.host] = {m: b for m, b in pending[s.host].items() if m not in arrived}
            for model, ts in (await self._redis.hgetall(self._keys.vram_last_used(s.host))).items():  # type: ignore[misc]
                key = (s.host, model.decode())
                self._last_used[key] = max(self._last_used.get(key, 0.0), float(ts))
        await self._flush_last_used()
        now = time.time()
        hosts: dict[str, HostVram] = {}
        for s in states:
            local = {m: b for m, (b, until) in self._local_pending.get(s.host, {}).items() if until > now}
            kept = {m: v for m, v in self._local_pending.pop(s.host, {}).items() if v[1] > now}
            if kept:
                self._local_pending[s.host] = kept
            h = host_vram(
                s,
                self.cfg,
                last_used={m: t for (h_, m), t in self._last_used.items() if h_ == s.host},
                busy=busy.get(s.host, set()),
                pending={**pending.get(s.host, {}), **local},
            )
            if h is not None:
                hosts[s.host] = h
        # a model the agent reports loaded is no longer pending; one it no longer lists is unloaded
        for s in states:
            loaded = {m.name for m in s.loaded_models}
            if s.host in self._local_pending:
                for m in loaded & set(self._local_pending[s.host]):
                    self._local_pending[s.host].pop(m, None)
            if s.host in self._unloading:
                self._unloading[s.host] &= loaded
        self._overlays_changed()
        for name, size in measured_sizes(states).items():  # remembered after an unload too
            self._measured[name] = max(size, self._measured.get(name, 0))
        self.view = VramView(
            hosts=MappingProxyType(hosts),
            backend_host=MappingProxyType(backend_host),
            measured=MappingProxyType(dict(self._measured)),
            states=tuple(states),
        )
        status = self.status(busy, {h: {**pending.get(h, {})} for h in hosts})
        await self._redis.set(self._keys.vram_status, status.model_dump_json(), ex=STATUS_TTL_S)

    def status(self, busy: Mapping[str, set[str]], pending: Mapping[str, Mapping[str, int]]) -> VramStatusV1:
        """The budgets and policy as ``GET /admin/vram`` shows them."""
        hosts = self._hosts_now()
        return VramStatusV1(
            ts=time.time(),
            replica=self.replica,
            enabled=self.opts.enabled,
            budget_fraction=self.opts.budget_fraction,
            max_total_gb=dict(self.opts.max_total_gb),
            pinned=dict(self.opts.pinned),
            score_margin=self.opts.score_margin,
            hosts=[
                HostBudgetV1(
                    host=h.host,
                    budget_bytes=h.budget_bytes,
                    used_bytes=h.used_bytes,
                    available_bytes=h.available_bytes,
                    pinned=sorted(h.pinned),
                    busy=sorted(busy.get(h.host, set())),
                    pending=dict(pending.get(h.host, {})),
                    last_used={m: t for (host, m), t in self._last_used.items() if host == h.host},
                )
                for h in hosts.values()
            ],
            unmanaged=sorted(s.host for s in self.view.states if s.host not in hosts),
            decisions=dict(self.decisions),
        )

    async def _read_states(self) -> list[HostStateV1]:
        raw_hosts = await self._redis.zrange(self._keys.fleet_hosts, 0, -1)
        hosts = [h.decode() if isinstance(h, bytes) else str(h) for h in raw_hosts]
        if not hosts:
            return []
        states = []
        for raw in await self._redis.mget([self._keys.fleet_host(h) for h in hosts]):
            if raw is None:
                continue
            with contextlib.suppress(orjson.JSONDecodeError, ValidationError):
                states.append(HostStateV1.model_validate(orjson.loads(raw)))
        return states

    async def _flush_last_used(self) -> None:
        dirty, self._dirty_last_used = self._dirty_last_used, {}
        for host, models in dirty.items():
            await self._redis.hset(self._keys.vram_last_used(host), mapping=models)  # type: ignore[misc]
            await self._redis.expire(self._keys.vram_last_used(host), 24 * 3600)

    async def run(self) -> None:
        """Refresh forever (a background task of the scorer)."""
        failing = False
        while True:
            raise_if_cancelling()
            try:
                await self.refresh()
                failing = False
            except (RedisError, OSError) as exc:
                log.debug("VRAM state refresh failed: %s", exc)
            except Exception:
                if not failing:
                    log.exception("VRAM state refresh failed")
                failing = True
            await asyncio.sleep(self._refresh_s)

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks))

    async def is_busy(self, host: str, model: str) -> bool:
        """Right now (not as of the last refresh): is a request in flight on ``model`` at ``host``?"""
        backends = {b for b, h in self.view.backend_host.items() if h == host}
        inflight = await read_inflight(self._redis, self._keys)
        return any(n > 0 for (b, m), n in inflight.items() if b in backends and m == model)

    # --- decision ----------------------------------------------------------------------------

    def _hosts_now(self) -> Mapping[str, HostVram]:
        """The refreshed view with this replica's overlays: local reservations, unloads under way.
        The same mapping is answered while neither the view nor the overlays changed (a version
        bumped by each change) and no reservation in it expired; else only the hosts whose
        overlays, as they apply now, differ from those they were last built with are rebuilt
        (a rebuild was ~15 µs a host, and the scan of every host's overlays ~5 µs, every decision)."""
        hosts = self.view.hosts
        now = time.time()
        base, version, since, until, out = self._hosts_memo
        if base is hosts and version == self._overlays_version and since <= now < until:
            return out
        touched = {h for d in (self._local_pending, self._unloading, self._awaiting_room) for h, v in d.items() if v}
        overlays = []
        expires = float("inf")
        for host in sorted(touched):
            h = hosts.get(host)
            if h is None:
                continue
            waiting = frozenset(self._awaiting_room.get(host, ()))
            extra = []
            for m, (b, end) in self._local_pending.get(host, {}).items():
                if end > now and not h.holds(m):
                    extra.append((m, b, m in waiting))
                    expires = min(expires, end)
            leaving = frozenset(self._unloading.get(host, ()))
            if extra or leaving or waiting:
                overlays.append(_Overlay(h, tuple(extra), leaving, waiting))
        rebuilt: Mapping[str, HostVram] = hosts
        if overlays:
            rebuilt = dict(hosts)
            for o in overlays:
                done = self._overlaid.get(o.base.host)
                if done is None or done[0] != o:
                    done = self._overlaid[o.base.host] = (o, o.apply(now))
                rebuilt[o.base.host] = done[1]
            if out is not hosts and out.keys() == rebuilt.keys() and all(out[k] is v for k, v in rebuilt.items()):
                rebuilt = out  # the same hosts: the same mapping (what was worked out for it holds)
        self._hosts_memo = (hosts, self._overlays_version, now, expires, rebuilt)
        return rebuilt

    def _overlays_changed(self) -> None:
        self._overlays_version += 1

    def options(self, candidates: Sequence[Ranked], waits: Sequence[float] | None = None) -> list[Option]:
        """The planner's view of the candidates; ``waits``: each one's expected wait for a slot
        (``RoutingEngine.expected_waits``), for the admission step."""
        seen = self._seen_now(candidates, self._hosts_now())
        return _options(seen, candidates, waits)

    def _seen_now(self, candidates: Sequence[Ranked], hosts: Mapping[str, HostVram]) -> list[_Seen]:
        """What the planner knows of each candidate beside its score and wait (:class:`_Seen`),
        worked out once per view, catalog and overlaid hosts (all immutable, replaced whole)."""
        if self._seen_of[0] is not self.view or self._seen_of[1] is not self._catalog or self._seen_of[2] is not hosts:
            self._seen_of = (self.view, self._catalog, hosts)
            self._seen = {}
            self._planned = {}
        known = self._seen
        out = []
        for c in candidates:
            key = (c.model, c.upstream_model, c.backend)
            s = known.get(key)
            if s is None:
                s = known[key] = self._see(c, hosts)
            out.append(s)
        return out

    def _see(self, c: Ranked, hosts: Mapping[str, HostVram]) -> _Seen:
        needs = self._needs_now()
        need = needs.get((c.model, c.upstream_model))
        if need is None:
            need = needs[(c.model, c.upstream_model)] = self._need(c.model, c.upstream_model)
        host = self.view.backend_host.get(c.backend)
        h = hosts.get(host) if host is not None else None
        serves = h is not None and h.serves(c.upstream_model)
        load = None if h is None or serves else round(self.cfg.load_s(need[0]), 2)
        resident = h is not None and serves and not h.awaits_room(c.upstream_model)
        return _Seen(c.upstream_model, host, need[0], need[1], h, serves, load, resident)

    def _needs_now(self) -> dict[tuple[str, str], tuple[int, bool]]:
        """Each (model, upstream model)'s memory need and whether it embeds, worked out once per
        view and catalog (both immutable, replaced whole)."""
        if self._needs_of[0] is not self.view or self._needs_of[1] is not self._catalog:
            self._needs_of = (self.view, self._catalog)
            self._needs = {}
        return self._needs

    def _need(self, model: str, upstream: str) -> tuple[int, bool]:
        entry = self._catalog.spec(model)
        need, _ = model_need(
            upstream,
            self.cfg,
            measured=self.view.measured,
            catalog_bytes=entry.vram_bytes if entry else None,
            params_b=entry.params_b if entry else None,
            quant=entry.quant if entry else None,
        )
        return need, entry.embedding if entry else False

    def preview(self, reply: RouteReplyV1) -> tuple[RouteReplyV1, Decision | None]:
        """What :meth:`decide` would do now, with no bookkeeping (``/admin/explain``)."""
        if not self.opts.enabled or not reply.candidates or not self.view.hosts:
            return reply, None
        options, hosts = self.options(reply.candidates), self._hosts_now()
        decision = plan(options, hosts, self.cfg)
        if decision is None:
            return reply, None
        return _rework(options, hosts, self.cfg, decision, None).on_reply(reply), decision

    def fallback_if_late(self, reply: RouteReplyV1) -> str | None:
        """The model :meth:`route` falls back to when an ``evict`` decision's room is not ready in
        time (``None``: it keeps the first candidate)."""
        alt = self._first_without_orders(self.options(reply.candidates[1:]))
        return reply.candidates[alt + 1].model if alt is not None else None

    def would_decide(self, candidates: int) -> bool:
        """Whether :meth:`decide` would look at a reply with ``candidates`` candidates (``False``:
        it returns the reply as it is)."""
        return self.opts.enabled and candidates > 0 and bool(self.view.hosts)

    def decide(
        self, candidates: Sequence[Ranked], waits: Sequence[float] | None = None
    ) -> tuple[Rework | None, Decision | None]:
        """The planner's decision for a reply's candidates and what it changes in the reply
        (``None``, ``None``: it leaves the reply as it is)."""
        if not self.would_decide(len(candidates)):
            return None, None
        hosts = self._hosts_now()
        seen = self._seen_now(candidates, hosts)
        best = seen[0]
        cfg = self.cfg
        limit = cfg.admit_wait_s
        if best.resident and (limit <= 0 or (waits[0] if waits is not None else 0.0) <= limit):
            # plan's first step, as plan takes it: the best candidate is loaded and admitted
            assert best.h is not None
            return self._decided(
                seen, Decision(0, DecisionKind.RESIDENT, f"{best.model} is loaded on {best.h.host}"), waits
            )
        # what plan reads of the scores and waits: where the score margin ends, who is admitted
        floor = candidates[0].score - cfg.score_margin
        cut = next((i for i in range(1, len(candidates)) if candidates[i].score < floor), len(candidates))
        admitted = tuple(w <= limit for w in waits) if waits is not None else (0.0 <= limit,) * len(candidates)
        key = (tuple(map(id, seen)), cut, admitted)
        kept = self._planned.get(key)
        if kept is not None:
            decision, before = kept
            if before is not None:
                quoted = before + _quoted(candidates, decision.choice)
                decision = Decision(decision.choice, decision.kind, quoted, decision.orders)
            return self._decided(seen, decision, waits)
        planned = plan(_options(seen, candidates, waits), hosts, cfg)
        if planned is None:
            return None, None
        decision = planned
        if len(self._planned) < PLANNED_KEPT:
            if decision.kind in _QUOTES_SCORES:
                quoted = _quoted(candidates, decision.choice)
                before = decision.reason.removesuffix(quoted)
                scores = (f"{candidates[decision.choice].score:.3f}", f"{candidates[0].score:.3f}")
                if before != decision.reason and not any(x in before for x in scores):
                    self._planned[key] = (decision, before)
            elif decision.kind is not DecisionKind.BUSY:
                self._planned[key] = (decision, None)
        return self._decided(seen, decision, waits)

    def _decided(
        self, seen: Sequence[_Seen], decision: Decision, waits: Sequence[float] | None
    ) -> tuple[Rework, Decision]:
        """A decision's bookkeeping (counted, its model's last use, a load the backend makes
        reserved) and its changes to the reply."""
        kind = decision.kind
        self.decisions[kind.value] = self.decisions.get(kind.value, 0) + 1
        chosen = seen[decision.choice]
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "vram %s -> #%d: %s; options %s",
                kind,
                decision.choice,
                decision.reason,
                [(o.model, o.host, round(o.need_bytes / 2**30, 2), o.serves) for o in seen],
            )
        if chosen.host is not None:
            self._touch(chosen.host, chosen.model)
            h = chosen.h
            if (kind is DecisionKind.FITS or kind is DecisionKind.FALLBACK) and h is not None and not decision.orders:
                if not h.holds(chosen.model):
                    self._reserve_local(chosen.host, chosen.model, chosen.need_bytes)
        return _rework_seen(seen, decision, waits), decision

    def _touch(self, host: str, model: str) -> None:
        now = time.time()
        self._last_used[(host, model)] = now
        self._dirty_last_used.setdefault(host, {})[model] = now

    def _reserve_local(self, host: str, model: str, nbytes: int) -> None:
        self._local_pending.setdefault(host, {})[model] = (nbytes, time.time() + LOCAL_PENDING_S)
        self._overlays_changed()

    # --- orders ------------------------------------------------------------------------------

    async def route(
        self, reply: RouteReplyV1, *, remaining_s: float | None = None, waits: Sequence[float] | None = None
    ) -> RouteReplyV1:
        """:meth:`rework` applied to a validated reply."""
        rework = await self.rework(reply.candidates, remaining_s=remaining_s, waits=waits)
        return rework.on_reply(reply) if rework is not None else reply

    async def rework(
        self, candidates: Sequence[Ranked], *, remaining_s: float | None = None, waits: Sequence[float] | None = None
    ) -> Rework | None:
        """:meth:`decide`, then carry out an ``evict`` decision's orders (module docstring); what
        the decision changes in the reply (``None``: nothing)."""
        decided, decision = self.decide(candidates, waits)
        if decided is None or decision is None or not decision.orders or self._actions is None:
            return decided
        host = decision.orders[0].host
        load = decision.orders[-1]
        self._reserve_local(host, load.model, load.bytes)
        self._unloading.setdefault(host, set()).update(o.model for o in decision.orders[:-1])
        if len(decision.orders) > 1:  # no request goes to the model before its unloads are done
            self._awaiting_room.setdefault(host, set()).add(load.model)
        self._overlays_changed()
        room = asyncio.get_running_loop().create_future()

        def on_room(ok: bool) -> None:
            self._awaiting_room.get(host, set()).discard(load.model)
            self._overlays_changed()
            if not room.done():
                room.set_result(ok)

        task = asyncio.create_task(self._carry_out(host, decision, on_room), name=f"vram-orders:{host}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if decision.kind is DecisionKind.PRELOAD:  # a resident model serves this one: no wait
            return decided
        wait = self._evict_wait_s if remaining_s is None else max(0.0, min(self._evict_wait_s, remaining_s - 0.01))
        try:
            async with asyncio.timeout(wait):
                made = await asyncio.shield(room)
        except TimeoutError:
            made = False
        if made:
            return decided
        ordered = [candidates[i] for i in decided.order()]
        alt = self._first_without_orders(self.options(ordered[1:]))
        if alt is None:
            return decided
        n = len(ordered)
        return decided.then(
            [alt + 1, *(i for i in range(n) if i != alt + 1)], f"vram: room for {load.model} on {host} is not ready yet"
        )

    def _first_without_orders(self, options: list[Option]) -> int | None:
        hosts = self._hosts_now()
        for i, opt in enumerate(options):
            h = hosts.get(opt.host) if opt.host is not None else None
            if h is None or h.ready(opt.model) or h.room_for(opt.need_bytes):
                return i
        return None

    async def _carry_out(self, host: str, decision: Decision, on_room: Callable[[bool], None]) -> None:
        assert self._actions is not None
        try:
            run = await self._actions.execute(host, decision.orders, on_room=on_room)
            if not run.completed:
                self._local_pending.get(host, {}).pop(decision.orders[-1].model, None)
        except Exception:
            log.exception("VRAM orders for %s failed", host)
            self._local_pending.get(host, {}).pop(decision.orders[-1].model, None)
        finally:
            self._awaiting_room.get(host, set()).discard(decision.orders[-1].model)
            self._unloading.get(host, set()).difference_update(o.model for o in decision.orders[:-1])
            self._overlays_changed()
            with contextlib.suppress(RedisError, OSError):
                await self.refresh()


def _rework(
    options: Sequence[Option],
    hosts: Mapping[str, HostVram],
    cfg: VramConfig,
    decision: Decision,
    waits: Sequence[float] | None,
) -> Rework:
    """A decision's changes to the reply: the load and wait estimates, the planner's choice first."""
    loads = load_estimates(options, hosts, cfg)
    return Rework(tuple(loads), tuple(wait_estimates(waits, len(loads)))).then(
        attempt_order(options, hosts, decision.choice), f"vram: {decision.reason}"
    )


@dataclass(frozen=True, slots=True)
class _Overlay:
    """A host as the refresh read it and this replica's overlays on it as they apply now: loads
    reserved (model, bytes, awaiting room), models being unloaded, loads awaiting room."""

    base: HostVram
    extra: tuple[tuple[str, int, bool], ...]
    leaving: frozenset[str]
    waiting: frozenset[str]

    def apply(self, now: float) -> HostVram:
        """The host with the overlays (a reserved load counts as used at ``now``: it is busy,
        never evicted, so when does not matter)."""
        h = self.base
        extra = [ResidentModel(m, b, now, busy=True, loading=True, awaiting_room=w) for m, b, w in self.extra]
        resident = [
            ResidentModel(f"{m.name} (unloading)", m.bytes, m.last_used, busy=True)
            if m.name in self.leaving
            else replace(m, awaiting_room=True)
            if m.name in self.waiting and m.loading
            else m
            for m in h.resident
        ]
        gpu_free = h.gpu_free_bytes
        if gpu_free is not None:
            gpu_free = max(0, gpu_free - sum(r.bytes for r in extra))
        return replace(h, gpu_free_bytes=gpu_free, resident=(*resident, *extra))


@dataclass(frozen=True, slots=True)
class _Seen:
    """A candidate as the planner sees it beside its score and wait, on the hosts as overlaid."""

    model: str
    """Its upstream model (what the backend lists)."""
    host: str | None
    need_bytes: int
    embedding: bool
    h: HostVram | None
    """Its host's view (``None``: unmanaged)."""
    serves: bool
    """Loaded on its host and reported (not a load under way)."""
    load_s: float | None
    """The reply's load estimate (:func:`~turnout.scorer.vram_reply.load_estimates`)."""
    resident: bool
    """Serving and not awaiting room: :func:`~turnout.scorer.vram.plan` routes to it as ``resident``
    when it is the best candidate (and the admission step lets it be)."""


def _quoted(candidates: Sequence[Ranked], choice: int) -> str:
    """How a ``resident_within_margin`` or ``preload`` reason ends (``vram.py``): the chosen and
    the best candidate's scores."""
    return f"({candidates[choice].score:.3f} vs {candidates[0].score:.3f})"


def _options(seen: Sequence[_Seen], candidates: Sequence[Ranked], waits: Sequence[float] | None) -> list[Option]:
    if waits is None:
        return [
            Option(s.model, s.host, c.score, s.need_bytes, s.embedding, 0.0)
            for s, c in zip(seen, candidates, strict=True)
        ]
    return [
        Option(s.model, s.host, c.score, s.need_bytes, s.embedding, w)
        for s, c, w in zip(seen, candidates, waits, strict=True)
    ]


def _rework_seen(seen: Sequence[_Seen], decision: Decision, waits: Sequence[float] | None) -> Rework:
    """:func:`_rework` from what is known of the candidates (loads and what serves worked out once)."""
    n = len(seen)
    choice = decision.choice
    rest = [i for i in range(n) if i != choice]
    order = (choice, *(i for i in rest if seen[i].serves), *(i for i in rest if not seen[i].serves))
    loads = tuple([s.load_s for s in seen])
    return Rework(loads, tuple(wait_estimates(waits, n)), ((order, f"vram: {decision.reason}"),))
