"""Supervised background tasks: a loop that crashes is logged, counted and restarted.

``sup = Supervisor("scorer", registry)`` then ``sup.start("fleet-loop", scorer.fleet_loop)``
(a coroutine *function*: each restart calls it again). When the coroutine raises, the crash is
logged once with its traceback (repeats of the same error at WARNING without one), counted in
``turnout_<svc>_task_restarts_total{task}``, and the task starts again after a jittered
exponential back-off that resets once it has run for ``healthy_after_s``. A coroutine that
returns normally is done and stays done. ``sup.state()`` is what ``/ready`` bodies show:
``{task: {"running": bool, "restarts": n, "last_error": str | None}}``. ``await sup.stop()``
cancels every task and waits for them, bounded (:func:`~turnout.common.aio.cancel_and_wait`); a
task asked to stop is not restarted, even when the cancellation was lost on the way (redis-py on
Python 3.11, see :mod:`turnout.common.aio`) and the coroutine crashed or returned instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from turnout.common.aio import CANCEL_GRACE_S, cancel_and_wait, raise_if_cancelling
from turnout.common.links import Backoff

log = logging.getLogger(__name__)

TaskFn = Callable[[], Awaitable[Any]]


@cache
def _restarts_counter(service: str, registry: CollectorRegistry) -> Counter:
    return Counter(
        "task_restarts",
        "Background tasks restarted after they crashed",
        ["task"],
        namespace="turnout",
        subsystem=service.replace("-", "_"),
        registry=registry,
    )


@dataclass(slots=True)
class TaskState:
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"running": self.running, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    def __init__(
        self,
        service: str,
        registry: CollectorRegistry = REGISTRY,
        *,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 10.0,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.service = service
        self._restarts = _restarts_counter(service, registry)
        self._base = backoff_base_s
        self._max = backoff_max_s
        self._healthy_after_s = healthy_after_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, TaskState] = {}

    def start(self, name: str, fn: TaskFn) -> asyncio.Task[None]:
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name!r} is already supervised")
        self._states[name] = TaskState()
        self._restarts.labels(name)  # the series exists from the start, at 0
        task = asyncio.create_task(self._run(name, fn), name=f"supervised:{name}")
        self._tasks[name] = task
        return task

    async def _run(self, name: str, fn: TaskFn) -> None:
        state = self._states[name]
        backoff = Backoff(self._base, self._max)
        last_error: str | None = None
        while True:
            raise_if_cancelling()  # asked to stop while it ran: not restarted
            started = time.monotonic()
            state.running = True
            try:
                await fn()
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as exc:
                state.running = False
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.exception("background task %s crashed; restarting it", name)
                else:
                    log.warning("background task %s crashed again (%s); restarting it", name, error)
                last_error = state.last_error = error
                state.restarts += 1
                self._restarts.labels(name).inc()
                if time.monotonic() - started >= self._healthy_after_s:
                    backoff.reset()
                await asyncio.sleep(backoff.next())
            else:
                state.running = False
                state.done = True
                return

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in self._states.items()}

    def healthy(self) -> bool:
        """Every task is running (or returned normally)."""
        return all(s.running or s.done for s in self._states.values())

    async def stop(self, *, grace_s: float = CANCEL_GRACE_S) -> None:
        """Cancel every task and wait for them: ``2 * grace_s`` at most (see
        :func:`~turnout.common.aio.cancel_and_wait`)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(tasks, grace_s=grace_s)


__all__ = ["Supervisor", "TaskState"]
