"""The gateway's side of the shared circuit breakers (:mod:`turnout.common.circuits`).

* **Which circuit a failure counts against.** The backend's (model ``""``) when it cannot be
  reached or refuses the gateway (connection error, 401/403); the (backend, upstream model)
  one when that model fails (5xx, a broken or non-object reply, a timeout, 404). A 429 is the
  backend's own back-pressure and counts against nothing.
* **How soon it opens.** ``circuit_failures`` (3) consecutive failures; a model that answered
  5xx, ``circuit_status_failures`` (1): the backend is up and says the model failed, and a
  cooldown of one (backend, model) pair costs little while its other replicas and models serve.
  Opening tells the scorer at once (``fleet_changed``), so it stops ranking the pair first.
* **Admission** reads a local view of every circuit that is not closed-and-clean, refreshed
  every ``refresh_s`` (and at once after this gateway saw a circuit open): with everything
  closed, admitting a candidate is two dict lookups and no Redis call. A circuit cooling down
  blocks; one whose cooldown is over lets exactly one request through, the gateway that wins
  the shared probe lease.
* **Redis away:** the view keeps its last state and failures are not counted (the request
  path never waits on it beyond ``redis_timeout_s``); requests flow as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

from turnout.common.aio import raise_if_cancelling
from turnout.common.circuits import CircuitState, CircuitStore, CircuitV1
from turnout.common.errors import BackendError, BackendStatusError, BackendTimeout, BackendUnavailable
from turnout.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
STATE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
BACKEND_WIDE = ""
BACKEND_LABEL = "*"
"""The ``model`` label of a backend-wide circuit."""


def circuit_of(exc: BaseException) -> str | None:
    """``"backend"``, ``"model"`` or ``None`` (counts against nothing)."""
    if isinstance(exc, BackendStatusError):
        if exc.status == 429 or (400 <= exc.status < 500 and exc.status not in (401, 403, 404, 408)):
            return None
        return "backend" if exc.status in (401, 403) else "model"
    if isinstance(exc, BackendUnavailable) and not isinstance(exc, BackendTimeout):
        return "backend"
    if isinstance(exc, BackendError):
        return "model"
    return None


class Breakers:
    """This gateway's admission and failure counting on the shared circuits, with a local view."""

    def __init__(
        self,
        store: CircuitStore,
        metrics: GatewayMetrics,
        *,
        refresh_s: float = 0.5,
        redis_timeout_s: float = 0.25,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._refresh_s = refresh_s
        self._timeout_s = redis_timeout_s
        self.view: dict[tuple[str, str], CircuitV1] = {}
        self._labelled: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()

    # --- the request path ---------------------------------------------------------------------

    async def admit(self, backend: str, model: str) -> bool:
        """Whether a request may go to ``model`` on ``backend`` now (winning a probe if needed)."""
        if not self.view:
            return True
        now = time.time()
        for key in ((backend, BACKEND_WIDE), (backend, model)):
            c = self.view.get(key)
            if c is None or c.state is CircuitState.CLOSED:
                continue
            if c.blocks(now):
                return False
            won = await self._redis(self.store.probe(*key, now=now))
            if not won:
                return False
            self.view[key] = c.model_copy(
                update={"state": CircuitState.HALF_OPEN, "probe_until": now + self.store.policy.probe_lease_s}
            )
        return True

    def retry_after_s(self, backend: str, model: str) -> float:
        """Seconds until a blocked candidate may be tried again (0 when it is not blocked)."""
        now = time.time()
        waits = [0.0]
        for key in ((backend, BACKEND_WIDE), (backend, model)):
            c = self.view.get(key)
            if c is not None and c.blocks(now):
                waits.append((c.until if c.state is CircuitState.OPEN else c.probe_until) - now)
        return max(waits)

    async def failure(self, backend: str, model: str, exc: BaseException) -> None:
        """Count a failed attempt against the circuit it belongs to (none for a 429)."""
        which = circuit_of(exc)
        if which is None:
            return
        key = (backend, BACKEND_WIDE if which == "backend" else model)
        # a model that answered 5xx said so itself: its circuit opens sooner than on timeouts
        answered = which == "model" and isinstance(exc, BackendStatusError) and exc.status >= 500
        threshold = self.store.policy.status_failure_threshold if answered else None
        result = await self._redis(self.store.failure(*key, type(exc).__name__, threshold=threshold))
        if result is None:
            return
        state, until = result
        c = self.view.get(key) or CircuitV1(backend=key[0], model=key[1])
        if state is CircuitState.OPEN:
            self._wake.set()  # re-read soon; this gateway blocks it at once
            if c.state is not CircuitState.OPEN:  # once per opening, not per blocked request
                log.warning(
                    "circuit %s/%s open for %.0fs: %s",
                    key[0],
                    key[1] or BACKEND_LABEL,
                    max(until - time.time(), 0.0),
                    str(exc)[:200] or type(exc).__name__,
                )
        self.view[key] = c.model_copy(update={"state": state, "failures": c.failures + 1, "until": until})

    async def success(self, backend: str, model: str) -> None:
        """Report a success to the backend's and the model's circuits that are in the local view and not open."""
        if not self.view:
            return
        for key in ((backend, BACKEND_WIDE), (backend, model)):
            c = self.view.get(key)
            if c is not None and c.state is not CircuitState.OPEN:
                await self._redis(self.store.success(*key))
                self.view.pop(key, None)

    async def _redis(self, call: Awaitable[T]) -> T | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("circuit state not shared (Redis: %s)", type(exc).__name__)
            return None

    # --- the shared view ----------------------------------------------------------------------

    async def refresh(self) -> list[CircuitV1]:
        """Re-read every circuit from Redis into the local view and the state gauges."""
        circuits = await self.store.read_all()
        self.view = {(c.backend, c.model): c for c in circuits}
        seen = set()
        for c in circuits:
            label = (c.backend, c.model or BACKEND_LABEL)
            seen.add(label)
            self._metrics.circuit_state.labels(*label).set(STATE_VALUE[c.state])
        for label in self._labelled - seen:
            self._metrics.circuit_state.labels(*label).set(0)  # closed again
        self._labelled |= seen
        return circuits

    async def run(self) -> None:
        """Refresh the view every ``refresh_s``, or at once when woken (a circuit opened here)."""
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.debug("circuit refresh failed: %s", exc)
