"""What the gpu-agents last published, joined per replica with the catalog table.

* :class:`FleetState` — which models are loaded where (by backend, or by host for backends the
  agents know only by host), which backends are down, free memory per backend and host, and
  requests in flight per (backend, upstream model) as the gateways count them, and the circuits
  the gateways opened (:mod:`turnout.common.circuits`).
* :class:`ReplicaTable` — the join: one row per replica of :class:`~turnout.scorer.catalog.ModelTable`
  (same order as its ``rep_*`` arrays) with resident / healthy / no room / free share / in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from turnout.common.schemas.fleet import HostStateV1
from turnout.scorer.catalog import B, F, I, ModelTable, frozen


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet as routing sees it: loaded models, unhealthy backends, free memory, in-flight load."""

    resident: frozenset[tuple[str, str]] = frozenset()
    """(backend, upstream model) loaded in memory."""
    resident_on_host: frozenset[tuple[str, str]] = frozenset()
    """(host, upstream model) loaded in memory, for backends joined to agents by host."""
    unhealthy: frozenset[str] = frozenset()
    """Backends their agent reports down."""
    free_by_backend: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    free_by_host: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    inflight: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    """(backend, upstream model) -> requests in flight (the gateways' shared counters)."""
    hosts: int = 0
    open_backends: frozenset[str] = frozenset()
    """Backends whose circuit the gateways opened (:mod:`turnout.common.circuits`): filtered out."""
    open_replicas: frozenset[tuple[str, str]] = frozenset()
    """(backend, upstream model) pairs whose circuit is open: filtered out."""
    gpus_by_backend: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """GPUs behind each backend its agent reports: with the backend's models-per-GPU limit, how
    many models it keeps loaded at once (the queue-wait estimate, ``terms.expected_wait_s``)."""

    @classmethod
    def from_hosts(
        cls, states: Iterable[HostStateV1], inflight: Mapping[tuple[str, str], int] | None = None
    ) -> FleetState:
        """The fleet state from the gpu-agents' host states and the gateways' in-flight counts."""
        resident: set[tuple[str, str]] = set()
        on_host: set[tuple[str, str]] = set()
        unhealthy: set[str] = set()
        free_backend: dict[str, int] = {}
        free_host: dict[str, int] = {}
        gpus: dict[str, int] = {}
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
                    gpus[s.backend] = len(s.gpus)
        return cls(
            resident=frozenset(resident),
            resident_on_host=frozenset(on_host),
            unhealthy=frozenset(unhealthy),
            free_by_backend=MappingProxyType(free_backend),
            free_by_host=MappingProxyType(free_host),
            inflight=MappingProxyType(dict(inflight or {})),
            hosts=n,
            gpus_by_backend=MappingProxyType(gpus),
        )


@dataclass(frozen=True, slots=True)
class ReplicaTable:
    """One row per (model, backend) replica, with the fleet state the gpu-agents reported."""

    model: I
    backend: tuple[str, ...]
    upstream: tuple[str, ...]
    resident: B
    healthy: B
    no_room: B
    free_frac: F
    """Free VRAM share on the replica's host, relative to the roomiest backend (NaN unknown)."""
    inflight: F
    circuit_open: B
    """The gateways' circuit breaker for the replica (or for its whole backend) is open."""
    tokens_per_s: F
    """The replica's model's decode speed (the catalog's, measured or estimated): the ``wait`` term's clock."""

    @property
    def size(self) -> int:
        """The number of replicas."""
        return len(self.backend)

    @classmethod
    def build(cls, table: ModelTable, fleet: FleetState | None = None) -> ReplicaTable:
        """The join of the catalog's replicas with the fleet: resident by backend, else by host;
        no room when not resident and the known need exceeds the known free memory."""
        fleet = fleet or FleetState()
        r = len(table.rep_backend)
        resident = np.zeros(r, dtype=bool)
        no_room = np.zeros(r, dtype=bool)
        top = max(fleet.free_by_backend.values(), default=0)
        for j in range(r):
            backend, upstream, host = table.rep_backend[j], table.rep_upstream[j], table.rep_host[j]
            loaded = (backend, upstream) in fleet.resident or (
                host is not None and (host, upstream) in fleet.resident_on_host
            )
            resident[j] = loaded
            if not loaded:
                free = fleet.free_by_backend.get(backend)
                if free is None and host is not None:
                    free = fleet.free_by_host.get(host)
                need = table.rep_vram[j]
                no_room[j] = free is not None and not np.isnan(need) and need > free
        known = fleet.free_by_backend
        free_frac = np.array([known[b] / top if top > 0 and b in known else np.nan for b in table.rep_backend])
        return cls(
            model=table.rep_model,
            backend=table.rep_backend,
            upstream=table.rep_upstream,
            resident=frozen(resident),
            healthy=frozen(np.array([b not in fleet.unhealthy for b in table.rep_backend], dtype=bool)),
            no_room=frozen(no_room),
            free_frac=frozen(free_frac),
            inflight=frozen(
                np.array(
                    [float(fleet.inflight.get(k, 0)) for k in zip(table.rep_backend, table.rep_upstream, strict=True)],
                    dtype=np.float64,
                )
            ),
            circuit_open=_open(table, fleet.open_backends, fleet.open_replicas),
            tokens_per_s=frozen(table.tokens_per_s[table.rep_model]),
        )

    @classmethod
    def from_specs(
        cls,
        table: ModelTable,
        *,
        resident: frozenset[tuple[str, str]] = frozenset(),
        unhealthy: frozenset[str] = frozenset(),
        free_frac: Mapping[str, float] | None = None,
        no_room: frozenset[tuple[str, str]] = frozenset(),
        inflight: Mapping[tuple[str, str], int] | None = None,
        open_backends: frozenset[str] = frozenset(),
        open_replicas: frozenset[tuple[str, str]] = frozenset(),
    ) -> ReplicaTable:
        """Explicit per-replica state (tests and benches): (backend, upstream) sets, free share by backend."""
        keys = list(zip(table.rep_backend, table.rep_upstream, strict=True))
        free_frac = free_frac or {}
        inflight = inflight or {}
        return cls(
            model=table.rep_model,
            backend=table.rep_backend,
            upstream=table.rep_upstream,
            resident=frozen(np.array([k in resident for k in keys], dtype=bool)),
            healthy=frozen(np.array([k[0] not in unhealthy for k in keys], dtype=bool)),
            no_room=frozen(np.array([k in no_room for k in keys], dtype=bool)),
            free_frac=frozen(np.array([free_frac.get(k[0], np.nan) for k in keys], dtype=np.float64)),
            inflight=frozen(np.array([float(inflight.get(k, 0)) for k in keys], dtype=np.float64)),
            circuit_open=_open(table, open_backends, open_replicas),
            tokens_per_s=frozen(table.tokens_per_s[table.rep_model]),
        )


def _open(table: ModelTable, backends: frozenset[str], pairs: frozenset[tuple[str, str]]) -> B:
    keys = zip(table.rep_backend, table.rep_upstream, strict=True)
    return frozen(np.array([b in backends or (b, u) in pairs for b, u in keys], dtype=bool))
