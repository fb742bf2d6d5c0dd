"""Mutable fleet state: model residency and VRAM per listener, injected failures, request counts.

Residency follows Ollama's scheduler closely enough for routing tests: a request loads its
model (taking ``load_ms``), the model stays for ``keep_alive`` after its last request
(``keep_alive: 0`` unloads it when idle, a negative one keeps it forever), and a model that
does not fit in ``vram_total_bytes`` fails with Ollama's out-of-memory error — or, with
``on_overflow: evict``, first pushes idle models out, least recently used first.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turnout.fakefleet.config import FleetConfig, ListenerSpec, ModelSpec, Overflow
from turnout.fakefleet.skill import AnswerBook

FOREVER_S = 10 * 365 * 24 * 3600.0
"""How far ahead ``expires_at`` lies for a model kept forever (Ollama shows a far-future date too)."""

FAIL_MODES = ("500", "error", "hang", "close", "cut", "ok")
"""``500``/``error``: answer an error status; ``hang``: never answer; ``close``: drop the connection
before answering; ``cut``: start streaming, then drop the connection; ``ok``: back to normal."""


def human_bytes2(n: int) -> str:
    """Ollama's ``format.HumanBytes2``: binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


class OutOfMemory(Exception):
    def __init__(self, need: int, available: int) -> None:
        super().__init__(
            f"model requires more system memory ({human_bytes2(need)}) than is available ({human_bytes2(available)})"
        )
        self.need = need
        self.available = available


@dataclass(slots=True)
class Resident:
    spec: ModelSpec
    ready_at: float  # monotonic: when loading is over
    keep_alive: float | None
    expires_at: float | None = None  # wall clock, set when the model goes idle; None while busy
    busy: int = 0
    last_used: float = 0.0
    unload_when_idle: bool = False


class Residency:
    """Which models one Ollama-dialect listener holds in (simulated) VRAM."""

    def __init__(
        self,
        spec: ListenerSpec,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.time_scale = time_scale
        self._clock = clock
        self._mono = monotonic
        self.models: dict[str, Resident] = {}
        self.loads: Counter[str] = Counter()
        self.unloads: Counter[str] = Counter()

    @property
    def used_bytes(self) -> int:
        return sum(r.spec.vram_bytes for r in self.models.values())

    def expire(self) -> None:
        now = self._clock()
        for name, r in list(self.models.items()):
            if r.busy == 0 and r.expires_at is not None and r.expires_at <= now:
                self._drop(name)

    def acquire(self, model: ModelSpec, keep_alive: float | None) -> float:
        """Mark the model busy, loading it if needed; returns the seconds left until it is loaded.

        Raises :class:`OutOfMemory` when it cannot fit.
        """
        self.expire()
        r = self.models.get(model.name)
        if r is None:
            self._make_room(model)
            load_s = model.load_ms / 1000 * self.time_scale
            r = Resident(model, ready_at=self._mono() + load_s, keep_alive=keep_alive)
            self.models[model.name] = r
            self.loads[model.name] += 1
        r.busy += 1
        r.keep_alive = keep_alive
        r.expires_at = None
        r.last_used = self._mono()
        return max(0.0, r.ready_at - self._mono())

    def release(self, name: str, keep_alive: float | None) -> None:
        r = self.models.get(name)
        if r is None:
            return
        r.busy = max(0, r.busy - 1)
        r.keep_alive = keep_alive
        r.last_used = self._mono()
        if r.busy:
            return
        if keep_alive == 0 or r.unload_when_idle:
            self._drop(name)
        else:
            r.expires_at = self._clock() + (FOREVER_S if keep_alive is None else keep_alive)

    def unload(self, name: str) -> bool:
        """``keep_alive: 0`` with no prompt: unload now, or as soon as the model is idle."""
        r = self.models.get(name)
        if r is None:
            return False
        if r.busy:
            r.unload_when_idle = True
        else:
            self._drop(name)
        return True

    def clear(self) -> None:
        self.models.clear()
        self.loads.clear()
        self.unloads.clear()

    def ps(self) -> list[tuple[ModelSpec, float]]:
        """Loaded models with their expiry (wall clock), longest time left first (as Ollama sorts them)."""
        self.expire()
        now = self._clock()
        rows = []
        for r in self.models.values():
            expires = r.expires_at
            if expires is None:  # busy: Ollama shows now + the session's keep_alive
                expires = now + (FOREVER_S if r.keep_alive is None else r.keep_alive)
            rows.append((r.spec, expires))
        rows.sort(key=lambda row: -row[1])
        return rows

    def _make_room(self, model: ModelSpec) -> None:
        total = self.spec.vram_total_bytes
        if total is None:
            return
        if self.used_bytes + model.vram_bytes > total and self.spec.on_overflow is Overflow.EVICT:
            idle = sorted((r for r in self.models.values() if r.busy == 0), key=lambda r: r.last_used)
            for r in idle:
                if self.used_bytes + model.vram_bytes <= total:
                    break
                self._drop(r.spec.name)
        if self.used_bytes + model.vram_bytes > total:
            raise OutOfMemory(model.vram_bytes, max(0, total - self.used_bytes))

    def _drop(self, name: str) -> None:
        if self.models.pop(name, None) is not None:
            self.unloads[name] += 1


# --- failures and statistics -------------------------------------------------------------------


@dataclass(slots=True)
class Failure:
    mode: str
    status: int = 500
    remaining: int | None = None  # None: until cleared


class Failures:
    """Failures injected through ``POST /_fleet/fail``, by (listener, model); either may be ``None``."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str | None, str | None], Failure] = {}

    def set(self, listener: str | None, model: str | None, failure: Failure) -> None:
        key = (listener, model)
        if failure.mode == "ok":
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = failure

    def clear(self) -> None:
        self._by_key.clear()

    def match_model(self, listener: str, model: str) -> Failure | None:
        """The failure set for this model (on this listener, or anywhere); counts one use of it."""
        return self._take((listener, model)) or self._take((None, model))

    def match_listener(self, listener: str) -> Failure | None:
        """The failure set for the whole listener (every endpoint but /_fleet/*); counts one use."""
        return self._take((listener, None))

    def _take(self, key: tuple[str | None, str | None]) -> Failure | None:
        failure = self._by_key.get(key)
        if failure is not None and failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                del self._by_key[key]
        return failure

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"listener": li, "model": m, "mode": f.mode, "status": f.status, "remaining": f.remaining}
            for (li, m), f in self._by_key.items()
        ]


@dataclass
class ListenerState:
    spec: ListenerSpec
    residency: Residency
    rng: random.Random
    port: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # model -> inference requests
    endpoints: Counter[str] = field(default_factory=Counter)  # path -> requests
    errors: Counter[str] = field(default_factory=Counter)  # model -> error answers (injected or not)

    def stats(self) -> dict[str, Any]:
        return {
            "dialect": str(self.spec.dialect),
            "port": self.port,
            "requests": dict(self.requests),
            "endpoints": dict(self.endpoints),
            "errors": dict(self.errors),
            "loads": dict(self.residency.loads),
            "unloads": dict(self.residency.unloads),
            "loaded": [r.spec.name for r in self.residency.models.values()],
            "vram_used_bytes": self.residency.used_bytes,
            "vram_total_bytes": self.spec.vram_total_bytes,
        }


class FleetState:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.time_scale = config.time_scale
        self.failures = Failures()
        self.book = AnswerBook.load(config.answer_book)
        self.listeners = {
            spec.name: ListenerState(
                spec=spec,
                residency=Residency(spec, time_scale=config.time_scale),
                rng=random.Random(f"{config.seed}:{spec.name}"),
            )
            for spec in config.listeners
        }

    def reset(self) -> None:
        self.failures.clear()
        for li in self.listeners.values():
            li.residency.clear()
            li.requests.clear()
            li.endpoints.clear()
            li.errors.clear()
            li.rng.seed(f"{self.config.seed}:{li.spec.name}")

    def delay(self, seconds: float) -> float:
        return seconds * self.time_scale
