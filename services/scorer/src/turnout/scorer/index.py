"""Immutable, array-shaped views of the catalog and the fleet, rebuilt when either changes and
read without locks or awaits by every ``route`` call.

* :class:`CatalogIndex` — one row per model (sizes, speed, benchmark score, context window,
  capability masks) and one row per replica (its model's row, backend, host).
* :class:`FleetState` — what the gpu-agents last published: which models are loaded where,
  which backends are down, free memory per host and backend.
* :class:`LiveIndex` — the two joined: per replica, resident / unhealthy / no room.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from turnout.common.schemas.fleet import HostStateV1

F = npt.NDArray[np.floating[Any]]
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.intp]  # noqa: E741

MIN_B = 0.5
MAX_B = 120.0
_LOG_SPAN = math.log2(MAX_B / MIN_B)


def power_of(params_b: float) -> float:
    """Model size on a 0..1 log scale: 0.5B → 0, 1B → 0.13, 8B → 0.5, 32B → 0.76, 70B → 0.9, 120B+ → 1."""
    return min(1.0, max(0.0, math.log2(max(params_b, 1e-3) / MIN_B) / _LOG_SPAN))


def size_of(power: float) -> float:
    """Inverse of :func:`power_of`, in billions."""
    return MIN_B * float(2.0 ** (power * _LOG_SPAN))


def estimated_tokens_per_s(active_b: float) -> float:
    """A rough single-GPU decode speed for a quantised model: 1B ≈ 250, 8B ≈ 72, 70B ≈ 19 tok/s."""
    return 250.0 / float(max(active_b, 0.05) ** 0.6)


def speed_of(tokens_per_s: float) -> float:
    """Speed on a 0..1 log scale: 5 tok/s → 0, 300 tok/s → 1."""
    return min(1.0, max(0.0, math.log(max(tokens_per_s, 1e-3) / 5.0) / math.log(60.0)))


A = TypeVar("A", bound=npt.NDArray[Any])


def _frozen(a: A) -> A:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    version: str
    models: tuple[CatalogModelV1, ...]
    by_name: Mapping[str, int]
    params_b: F
    size_known: B
    power: F
    tokens_per_s: F
    speed_measured: B
    speed: F
    benchmark: F
    context: F
    chat: B
    completion: B
    vision: B
    tools: B
    embedding: B
    coder: B
    replicas: tuple[ReplicaV1, ...]
    replica_model: I
    replica_vram: F
    size_labels: tuple[str, ...]
    """Per model: "8B" or "size unknown"."""
    speed_reasons: tuple[str, ...]
    """Per model: "~72 tok/s (estimated)"."""
    benchmark_reasons: tuple[str, ...]
    """Per model: "benchmark 0.71", or "" without one."""

    @property
    def size(self) -> int:
        return len(self.models)

    @classmethod
    def build(cls, snapshot: CatalogSnapshotV1, *, unknown_params_b: float = 8.0) -> CatalogIndex:
        models = tuple(m for m in snapshot.models if m.replicas)
        n = len(models)
        params = np.empty(n)
        known = np.zeros(n, dtype=bool)
        power = np.empty(n)
        tps = np.empty(n)
        measured = np.zeros(n, dtype=bool)
        bench = np.full(n, np.nan)
        ctx = np.full(n, np.inf)
        replicas: list[ReplicaV1] = []
        replica_model: list[int] = []
        replica_vram: list[float] = []
        for i, m in enumerate(models):
            total = m.params_b
            active = m.active_params_b if m.active_params_b is not None else total
            known[i] = total is not None
            total = total if total is not None else unknown_params_b
            active = active if active is not None else total
            params[i] = total
            effective = math.sqrt(total * active)  # MoE: between active and total
            power[i] = power_of(effective)
            if m.tokens_per_s:
                tps[i] = m.tokens_per_s
                measured[i] = True
            else:
                tps[i] = estimated_tokens_per_s(active)
            if m.benchmark is not None:
                bench[i] = m.benchmark
            if m.context_length:
                ctx[i] = m.context_length
            for r in m.replicas:
                replicas.append(r)
                replica_model.append(i)
                replica_vram.append(float(m.vram_bytes) if m.vram_bytes else np.nan)
        caps = [m.capabilities for m in models]
        speed = np.array([speed_of(t) for t in tps]) if n else np.empty(0)
        return cls(
            version=snapshot.version,
            models=models,
            by_name=MappingProxyType({m.name: i for i, m in enumerate(models)}),
            params_b=_frozen(params),
            size_known=_frozen(known),
            power=_frozen(power),
            tokens_per_s=_frozen(tps),
            speed_measured=_frozen(measured),
            speed=_frozen(speed),
            benchmark=_frozen(bench),
            context=_frozen(ctx),
            chat=_frozen(np.array([c.chat for c in caps], dtype=bool)),
            completion=_frozen(np.array([c.completion for c in caps], dtype=bool)),
            vision=_frozen(np.array([c.vision for c in caps], dtype=bool)),
            tools=_frozen(np.array([c.tools for c in caps], dtype=bool)),
            embedding=_frozen(np.array([c.embedding for c in caps], dtype=bool)),
            coder=_frozen(np.array([m.coder for m in models], dtype=bool)),
            replicas=tuple(replicas),
            replica_model=_frozen(np.array(replica_model, dtype=np.intp)),
            replica_vram=_frozen(np.array(replica_vram, dtype=np.float64)),
            size_labels=tuple(f"{m.params_b:g}B" if m.params_b is not None else "size unknown" for m in models),
            speed_reasons=tuple(
                f"~{t:.0f} tok/s ({'measured' if ms else 'estimated'})" for t, ms in zip(tps, measured, strict=True)
            ),
            benchmark_reasons=tuple(f"benchmark {m.benchmark:.2f}" if m.benchmark is not None else "" for m in models),
        )

    @classmethod
    def empty(cls) -> CatalogIndex:
        return cls.build(CatalogSnapshotV1())


@dataclass(frozen=True, slots=True)
class FleetState:
    resident: frozenset[tuple[str, str]] = frozenset()
    """(backend, upstream model) loaded in memory."""
    resident_on_host: frozenset[tuple[str, str]] = frozenset()
    """(host, upstream model) loaded in memory, for backends joined to agents by host."""
    unhealthy_backends: frozenset[str] = frozenset()
    free_by_backend: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    free_by_host: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    hosts: int = 0

    @classmethod
    def from_hosts(cls, states: Iterable[HostStateV1]) -> FleetState:
        resident: set[tuple[str, str]] = set()
        on_host: set[tuple[str, str]] = set()
        unhealthy: set[str] = set()
        free_backend: dict[str, int] = {}
        free_host: dict[str, int] = {}
        n = 0
        for s in states:
            n += 1
            loaded = [m.name for m in s.loaded_models]
            on_host.update((s.host, name) for name in loaded)
            if s.gpus:
                free_host[s.host] = s.memory_free_bytes
            if s.backend:
                resident.update((s.backend, name) for name in loaded)
                if not s.backend_ok:
                    unhealthy.add(s.backend)
                if s.gpus:
                    free_backend[s.backend] = s.memory_free_bytes
        return cls(
            resident=frozenset(resident),
            resident_on_host=frozenset(on_host),
            unhealthy_backends=frozenset(unhealthy),
            free_by_backend=MappingProxyType(free_backend),
            free_by_host=MappingProxyType(free_host),
            hosts=n,
        )


@dataclass(frozen=True, slots=True)
class LiveIndex:
    catalog: CatalogIndex
    fleet: FleetState
    resident: B
    unhealthy: B
    no_room: B

    @classmethod
    def build(cls, catalog: CatalogIndex, fleet: FleetState) -> LiveIndex:
        r = len(catalog.replicas)
        resident = np.zeros(r, dtype=bool)
        unhealthy = np.zeros(r, dtype=bool)
        no_room = np.zeros(r, dtype=bool)
        for j, rep in enumerate(catalog.replicas):
            loaded = (rep.backend, rep.upstream_model) in fleet.resident or (
                rep.host is not None and (rep.host, rep.upstream_model) in fleet.resident_on_host
            )
            resident[j] = loaded
            unhealthy[j] = rep.backend in fleet.unhealthy_backends
            if not loaded:
                free = fleet.free_by_backend.get(rep.backend)
                if free is None and rep.host is not None:
                    free = fleet.free_by_host.get(rep.host)
                need = catalog.replica_vram[j]
                no_room[j] = free is not None and not np.isnan(need) and need > free
        return cls(catalog, fleet, _frozen(resident), _frozen(unhealthy), _frozen(no_room))
