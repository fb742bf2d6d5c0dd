"""``turnout_sync_*`` metrics, built per registry (never at import)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from turnout.common import metrics as common_metrics

STREAMS = ("requests", "feedback")
ROW_OUTCOMES = ("matched", "unmatched", "skipped")
SKIP_REASONS = ("duplicate", "malformed", "trimmed")


@dataclass(frozen=True)
class SyncMetrics:
    """The sync worker's Prometheus series (events stored and skipped, benchmark rows and imports)."""

    events_stored: Counter
    events_skipped: Counter
    benchmark_rows: Counter
    benchmark_imports: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> SyncMetrics:
        """Register the series in ``registry`` with every label value pre-set."""
        ns = {"namespace": "turnout", "subsystem": "sync"}
        m = cls(
            events_stored=Counter(
                "events_stored", "Events stored in Postgres, by stream", ["stream"], registry=registry, **ns
            ),
            events_skipped=Counter(
                "events_skipped",
                "Events not stored: duplicate (already stored), malformed (dead-lettered), trimmed (gone)",
                ["stream", "reason"],
                registry=registry,
                **ns,
            ),
            benchmark_rows=Counter(
                "benchmark_rows",
                "Benchmark file rows, by outcome (matched, unmatched, skipped as malformed)",
                ["outcome"],
                registry=registry,
                **ns,
            ),
            benchmark_imports=Counter(
                "benchmark_imports", "Benchmark file imports, by outcome", ["outcome"], registry=registry, **ns
            ),
        )
        for s in STREAMS:
            m.events_stored.labels(s)
            for r in SKIP_REASONS:
                m.events_skipped.labels(s, r)
        for o in ROW_OUTCOMES:
            m.benchmark_rows.labels(o)
        for o in ("ok", "error", "skipped"):
            m.benchmark_imports.labels(o)
        return m


def queue_depth_gauge(registry: CollectorRegistry = REGISTRY) -> Gauge:
    """``turnout_sync_queue_depth{queue}``: jobs due in the sync's arq queue (KEDA scales on it)."""
    return common_metrics.queue_depth_gauge("sync", registry)
