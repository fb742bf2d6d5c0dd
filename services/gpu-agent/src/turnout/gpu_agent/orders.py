"""Carrying out the router's load/unload orders on this host's backend (``gpu.order.<host>`` v1,
docs/rpc.md "GPU orders").

* unload: Ollama ``POST /api/generate {"model": m, "keep_alive": 0}``;
* load: ``POST /api/generate {"model": m}`` (an empty prompt loads the model and returns); an
  embedding model (``embedding`` in the order) ``POST /api/embed {"model": m}`` instead, since
  Ollama refuses to generate with one;

then ``/api/ps`` is polled until the model is gone (unload) or listed (load): the reply's
``ok`` means the backend agrees, and ``loaded_models`` is what it holds afterwards. Unloading
a model that is not loaded succeeds (orders are idempotent; an RPC may be retried). A backend
error comes back as ``ok: false`` with the error, never as an RPC failure. One order runs at a
time per agent; each one triggers an immediate state publish (``on_change``) so the scorers
see the new residency without waiting for the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from turnout.common.errors import BackendError
from turnout.common.rpc.contract import gpu_order_method
from turnout.common.rpc.server import RpcContext, RpcServer
from turnout.common.schemas.fleet import LoadedModelV1
from turnout.common.schemas.vram import ModelOrderV1, OrderAction, OrderResultV1

log = logging.getLogger(__name__)


class ResidencyBackend(Protocol):
    """The part of :class:`~turnout.common.backends.clients.BackendClient` orders use."""

    async def loaded(self) -> list[LoadedModelV1]: ...
    async def unload(self, model: str) -> None: ...
    async def preload(self, model: str, *, timeout_s: float = 120.0, embedding: bool = False) -> None: ...


OnOrder = Callable[[ModelOrderV1, OrderResultV1], None]


def same_model(listed: str, ordered: str) -> bool:
    """``llama3.2`` is ``llama3.2:latest``, as Ollama resolves it."""
    return listed == ordered or (":" not in ordered.rsplit("/", 1)[-1] and listed == f"{ordered}:latest")


class OrderExecutor:
    """Carries out the scorer's load/unload orders on the local backend, one at a time."""

    def __init__(
        self,
        backend: ResidencyBackend,
        host: str,
        *,
        poll_s: float = 0.1,
        on_change: Callable[[], Awaitable[None]] | None = None,
        on_order: OnOrder | None = None,
    ) -> None:
        self._backend = backend
        self.host = host
        self._poll_s = poll_s
        self._on_change = on_change
        self._on_order = on_order
        self._one_at_a_time = asyncio.Lock()

    def register(self, server: RpcServer) -> None:
        """Serve this host's order method on ``server``."""
        server.register(gpu_order_method(self.host), self.handle)

    async def handle(self, order: ModelOrderV1, ctx: RpcContext) -> OrderResultV1:
        """Carry out one order within its timeout and say whether the model is (un)loaded."""
        budget = max(0.001, min(order.timeout_s, ctx.remaining))
        async with self._one_at_a_time:
            start = time.monotonic()
            log.info("order from %s: %s %s (%s)", order.requested_by or "?", order.action.value, order.model,
                     order.reason or "no reason given")  # fmt: skip
            try:
                async with asyncio.timeout(budget):
                    ok, error, loaded = await self._carry_out(order, budget)
            except TimeoutError:
                ok, error, loaded = False, f"{order.action.value} {order.model}: not done within {budget:.1f}s", []
            result = OrderResultV1(
                ok=ok,
                host=self.host,
                action=order.action,
                model=order.model,
                error=error,
                duration_s=round(time.monotonic() - start, 4),
                loaded_models=loaded,
            )
        if self._on_order is not None:
            self._on_order(order, result)
        if self._on_change is not None:
            try:
                await self._on_change()
            except Exception:
                log.exception("publishing state after an order failed")
        if not ok:
            log.warning("order %s %s failed: %s", order.action.value, order.model, error)
        return result

    async def _carry_out(self, order: ModelOrderV1, budget: float) -> tuple[bool, str | None, list[LoadedModelV1]]:
        want_loaded = order.action is OrderAction.LOAD
        try:
            if want_loaded:
                # our own deadline fires first; an embedding model loads through the embeddings endpoint
                await self._backend.preload(order.model, timeout_s=budget + 1.0, embedding=order.embedding)
            else:
                await self._backend.unload(order.model)
        except BackendError as exc:
            return False, f"{type(exc).__name__}: {exc}", await self._loaded_or_empty()
        while True:
            try:
                loaded = await self._backend.loaded()
            except BackendError as exc:
                return False, f"/api/ps after {order.action.value}: {exc}", []
            present = any(same_model(m.name, order.model) for m in loaded)
            if present == want_loaded:
                return True, None, loaded
            await asyncio.sleep(self._poll_s)

    async def _loaded_or_empty(self) -> list[LoadedModelV1]:
        try:
            return await self._backend.loaded()
        except BackendError:
            return []
