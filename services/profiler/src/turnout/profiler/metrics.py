"""``turnout_profiler_*`` metrics, built per registry (never at import)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from turnout.common import metrics as common_metrics

OUTCOMES = ("ok", "error")
PROFILE_OUTCOMES = ("ok", "partial", "failed", "skipped", "error")


@dataclass(frozen=True)
class ProfilerMetrics:
    """The profiler's Prometheus series (discoveries, catalog changes, profiles)."""

    discoveries: Counter
    models_discovered: Gauge
    discovery_duration: Histogram
    catalog_changes: Counter
    profiles: Counter
    profile_duration: Histogram

    @classmethod
    def create(cls, backends: Iterable[str] = (), registry: CollectorRegistry = REGISTRY) -> ProfilerMetrics:
        """Register the series in ``registry`` with label values pre-set for ``backends``."""
        ns = {"namespace": "turnout", "subsystem": "profiler"}
        m = cls(
            discoveries=Counter(
                "discoveries",
                "Model discoveries per backend, by outcome (ok, error)",
                ["backend", "outcome"],
                registry=registry,
                **ns,
            ),
            models_discovered=Gauge(
                "models_discovered",
                "Models a backend listed at its last discovery",
                ["backend"],
                namespace="turnout",
                subsystem="profiler",
                registry=registry,
            ),
            discovery_duration=Histogram(
                "discovery_duration_seconds",
                "One discovery run over the backends",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                registry=registry,
                **ns,
            ),
            catalog_changes=Counter(
                "catalog_changes", "Discovery runs that changed the catalog", registry=registry, **ns
            ),
            profiles=Counter(
                "profiles",
                "Model profiling runs by outcome (ok, partial, failed, skipped, error)",
                ["outcome"],
                registry=registry,
                **ns,
            ),
            profile_duration=Histogram(
                "profile_duration_seconds",
                "One model's profiling run (warm-up, suite, probes)",
                buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
                registry=registry,
                **ns,
            ),
        )
        for outcome in PROFILE_OUTCOMES:
            m.profiles.labels(outcome)
        for b in backends:
            m.models_discovered.labels(b)
            for outcome in OUTCOMES:
                m.discoveries.labels(b, outcome)
        return m


def queue_depth_gauge(registry: CollectorRegistry = REGISTRY) -> Gauge:
    """``turnout_profiler_queue_depth{queue}``: jobs due in the profiler's arq queue (KEDA scales on it)."""
    return common_metrics.queue_depth_gauge("profiler", registry)
