"""Carrying out the planner's orders: one sequence per host at a time, across every scorer
replica, each order recorded.

* **Lock.** :class:`~turnout.common.vram_lock.HostLock` on ``<prefix>:vram:lock:<host>`` (the
  profiler takes the same lock while it loads a model to profile). A replica that cannot get
  the lock within ``lock_wait_s`` gives up: someone else is changing that host, and the caller
  routes without orders.
* **Safety.** Right before each unload the model is re-checked for requests in flight
  (``busy`` callback, from the gateways' in-flight counters): a model that became busy is not
  unloaded and the rest of the sequence is abandoned. A failed unload abandons it too, so a
  load is only ordered when every unload before it succeeded: the budget holds.
* **Pending loads.** Once the room is made, the load is recorded in ``vram:pending:<host>``
  (bytes and an expiry) so that plans made before the agent reports the model count it.
* **Log.** Every order (done, failed or skipped) is one :class:`VramActionV1` in
  ``vram:actions`` (``LPUSH`` + ``LTRIM`` to ``actions_kept``), newest first, for ``/admin/vram``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from prometheus_client import Counter
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.errors import RpcError
from turnout.common.keys import Keys
from turnout.common.rpc.contract import RpcMethod, gpu_order_method
from turnout.common.schemas.vram import ModelOrderV1, OrderAction, OrderResultV1, VramActionV1
from turnout.common.vram_lock import PENDING_TTL_S, HostLock, clear_pending, reserve_pending
from turnout.scorer.vram import PlannedOrder, VramOptions

log = logging.getLogger(__name__)
BUSY_SKIP = "skipped: the model is serving a request"


class OrderCaller(Protocol):
    """What :class:`VramActions` needs from :class:`~turnout.common.rpc.client.RpcClient`."""

    async def call(
        self, method: RpcMethod[ModelOrderV1, OrderResultV1], body: ModelOrderV1, *, timeout: float
    ) -> OrderResultV1: ...


BusyCheck = Callable[[str, str], Awaitable[bool]]
"""``(host, model) -> True`` when a request is being served by that model on that host."""


@dataclass(slots=True)
class Execution:
    """What carrying out one host's orders did: whether the host lock was won, each action, success."""

    host: str
    locked: bool
    actions: list[VramActionV1] = field(default_factory=list)
    completed: bool = False
    """Every order succeeded (or there were none)."""


class VramActions:
    """Carries out planned load/unload orders through the gpu-agents, one host at a time."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        caller: OrderCaller,
        *,
        replica: str,
        opts: VramOptions,
        busy: BusyCheck | None = None,
        clock: Callable[[], float] = time.time,
        counter: Counter | None = None,
    ) -> None:
        """``counter``: ``turnout_scorer_vram_orders_total{action,outcome}``, counted per recorded order."""
        self._redis = redis
        self._keys = keys
        self._caller = caller
        self._replica = replica
        self._opts = opts
        self._busy = busy
        self._counter = counter
        self._clock = clock

    def lock(self, host: str) -> HostLock:
        """The lock that makes one scorer at a time change ``host``'s memory."""
        return HostLock(self._redis, self._keys.vram_lock(host), ttl_s=self._opts.lock_ttl_s)

    async def execute(
        self, host: str, orders: Sequence[PlannedOrder], *, on_room: Callable[[bool], None] | None = None
    ) -> Execution:
        """Carry out ``orders`` (all for ``host``) in order under the host's lock.

        ``on_room(ok)`` is called once, as soon as every unload is done (``True``: the room is
        made, a request may go ahead and load its model) or has failed (``False``)."""
        told = False

        def tell(ok: bool) -> None:
            nonlocal told
            if on_room is not None and not told:
                told = True
                on_room(ok)

        try:
            return await self._execute(host, orders, tell)
        finally:
            tell(False)

    async def _execute(self, host: str, orders: Sequence[PlannedOrder], tell: Callable[[bool], None]) -> Execution:
        if any(o.host != host for o in orders):
            raise ValueError("every order of one execution must be for the same host")
        run = Execution(host=host, locked=False)
        async with self.lock(host).held(self._opts.lock_wait_s) as locked:
            run.locked = locked
            if not locked:
                log.info("VRAM orders for %s skipped: another replica holds its lock", host)
                return run
            for order in orders:
                if order.action is OrderAction.LOAD:
                    tell(True)
                action = await self._one(order)
                run.actions.append(action)
                await self.record(action)
                if not action.ok:
                    # a model that took a request since the plan is an expected race, not a failure
                    level = logging.INFO if action.error == BUSY_SKIP else logging.WARNING
                    log.log(level, "VRAM %s %s on %s failed (%s); abandoning the rest", order.action.value,
                            order.model, host, action.error)  # fmt: skip
                    return run
                await self._clear_pending(host, order.model)  # unloaded, or loaded and reported by the agent
            tell(True)
            run.completed = True
        return run

    async def reserve(self, host: str, model: str, nbytes: int, *, ttl_s: float = PENDING_TTL_S) -> None:
        """Count ``model`` as loading on ``host`` until the agent reports it (or ``ttl_s`` passes)."""
        await reserve_pending(self._redis, self._keys, host, model, nbytes, ttl_s=ttl_s, now=self._clock())

    async def _clear_pending(self, host: str, model: str) -> None:
        await clear_pending(self._redis, self._keys, host, model)

    async def _one(self, order: PlannedOrder) -> VramActionV1:
        start = self._clock()
        base = {
            "ts": start,
            "host": order.host,
            "action": order.action,
            "model": order.model,
            "reason": order.reason,
            "requested_by": self._replica,
            "freed_bytes": order.bytes if order.action is OrderAction.UNLOAD else 0,
            "needed_bytes": order.bytes if order.action is OrderAction.LOAD else 0,
        }
        if order.action is OrderAction.UNLOAD and self._busy is not None and await self._busy(order.host, order.model):
            return VramActionV1(**base, ok=False, error=BUSY_SKIP)
        if order.action is OrderAction.LOAD:
            await self.reserve(order.host, order.model, order.bytes)
        body = ModelOrderV1(
            action=order.action,
            model=order.model,
            reason=order.reason,
            requested_by=self._replica,
            timeout_s=self._opts.order_timeout_s,
            embedding=order.embedding,
        )
        try:
            result = await self._caller.call(
                gpu_order_method(order.host), body, timeout=self._opts.order_timeout_s + 5.0
            )
        except RpcError as exc:
            if order.action is OrderAction.LOAD:
                await self._clear_pending(order.host, order.model)
            return VramActionV1(
                **base, ok=False, error=f"{type(exc).__name__}: {exc}", duration_s=round(self._clock() - start, 4)
            )
        if not result.ok and order.action is OrderAction.LOAD:
            await self._clear_pending(order.host, order.model)
        return VramActionV1(**base, ok=result.ok, error=result.error, duration_s=round(self._clock() - start, 4))

    async def record(self, action: VramActionV1) -> None:
        """Count an action and keep it in the bounded recent-actions list in Redis."""
        if self._counter is not None:
            outcome = "ok" if action.ok else "skipped" if (action.error or "").startswith("skipped") else "failed"
            self._counter.labels(action.action.value, outcome).inc()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lpush(self._keys.vram_actions, action.model_dump_json())
                pipe.ltrim(self._keys.vram_actions, 0, self._opts.actions_kept - 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not record VRAM action: %s", exc)


async def recent_actions(redis: Redis, keys: Keys, limit: int = 100) -> list[VramActionV1]:
    """The latest VRAM actions, newest first (malformed entries skipped)."""
    out = []
    for raw in await redis.lrange(keys.vram_actions, 0, max(limit, 1) - 1):  # type: ignore[misc]
        with contextlib.suppress(orjson.JSONDecodeError, ValidationError):
            out.append(VramActionV1.model_validate(orjson.loads(raw)))
    return out
