"""Bring back a service that exited without being asked to.

:class:`Restarter` is ticked by whoever watches a :class:`~turnout.devstack.stack.Stack` (the
``run`` command's loop, the fault bench). A service that exits unexpectedly is reported once —
its exit code and last lines, i.e. why — and started again after a jittered exponential back-off
(1 s, 2 s, 4 s … up to 30 s), which starts over once a run lasted ``healthy_after_s``. The fleet
and the stores are not restarted here (their ports would change under the services).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from turnout.devstack.stack import SERVICES, Stack

Say = Callable[[str], None]


@dataclass(slots=True)
class _Pending:
    due: float
    failures: int


class Restarter:
    def __init__(
        self,
        stack: Stack,
        say: Say,
        *,
        base_s: float = 1.0,
        max_s: float = 30.0,
        healthy_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stack = stack
        self._say = say
        self._base = base_s
        self._max = max_s
        self._healthy_after_s = healthy_after_s
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._failures: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}

    def tick(self) -> None:
        now = self._clock()
        for name, rc in self._stack.dead():
            if name not in SERVICES or name in self._pending:
                continue
            ran_s = now - self._started_at.get(name, now - self._healthy_after_s)
            failures = 0 if ran_s >= self._healthy_after_s else self._failures.get(name, 0)
            ceiling = min(self._max, self._base * 2**failures)
            delay = random.uniform(ceiling / 2, ceiling)
            self._failures[name] = failures + 1
            self._pending[name] = _Pending(due=now + delay, failures=failures + 1)
            self._say(f"{name} exited unexpectedly (exit code {rc}); restarting it in {delay:.1f}s. Its last lines:")
            for line in self._stack.procs[name].last_lines(15).splitlines():
                self._say(f"  {line}")
        for name, pending in list(self._pending.items()):
            if now >= pending.due:
                del self._pending[name]
                self._stack.start_service(name)
                self._started_at[name] = now
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._say(f"{name} restarted (restart #{self.restarts[name]})")


__all__ = ["Restarter"]
