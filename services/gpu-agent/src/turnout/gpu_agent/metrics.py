"""gpu-agent metrics, built per registry (never at import).

Per GPU, labelled ``{host, gpu, uuid, vendor}`` (``gpu`` is the device index):
``turnout_gpu_memory_{total,used,free}_bytes``, ``turnout_gpu_utilization_ratio`` (0..1),
``turnout_gpu_temperature_celsius``, ``turnout_gpu_power_watts``.
Per loaded model: ``turnout_gpu_agent_loaded_model_vram_bytes{host, model}``.
The agent itself: ``turnout_gpu_agent_publishes_total{outcome}``,
``turnout_gpu_agent_last_publish_timestamp_seconds``, ``turnout_gpu_agent_gpus{host}``
(devices read), ``turnout_gpu_agent_backend_up{host}``.

A label set that stops being reported (a GPU gone, a model unloaded, power no longer
readable) is removed, so dashboards never show stale values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from turnout.common.schemas.fleet import LoadedModelV1
from turnout.gpu_agent.gpus import GpuReading

GPU_LABELS = ("host", "gpu", "uuid", "vendor")
OUTCOMES = ("ok", "error")


@dataclass
class TrackedGauge:
    """A gauge whose label sets follow the latest reading: absent ones are removed."""

    gauge: Gauge
    current: set[tuple[str, ...]] = field(default_factory=set)

    def sync(self, values: Mapping[tuple[str, ...], float | None]) -> None:
        """Set the gauge to ``values`` and remove the label sets no longer present."""
        present = {labels for labels, v in values.items() if v is not None}
        for labels in self.current - present:
            self.gauge.remove(*labels)
        for labels, v in values.items():
            if v is not None:
                self.gauge.labels(*labels).set(v)
        self.current = present


@dataclass(frozen=True)
class GpuAgentMetrics:
    """The agent's Prometheus series per GPU and per loaded model."""

    memory_total: TrackedGauge
    memory_used: TrackedGauge
    memory_free: TrackedGauge
    utilization: TrackedGauge
    temperature: TrackedGauge
    power: TrackedGauge
    loaded_model_vram: TrackedGauge
    publishes: Counter
    last_publish: Gauge
    gpus: Gauge
    backend_up: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> GpuAgentMetrics:
        """Register the series in ``registry``."""

        def gauge(subsystem: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace="turnout", subsystem=subsystem, registry=registry)

        def per_gpu(name: str, doc: str) -> TrackedGauge:
            return TrackedGauge(gauge("gpu", name, doc, GPU_LABELS))

        m = cls(
            memory_total=per_gpu("memory_total_bytes", "GPU memory, total"),
            memory_used=per_gpu("memory_used_bytes", "GPU memory in use (all processes)"),
            memory_free=per_gpu("memory_free_bytes", "GPU memory free"),
            utilization=per_gpu("utilization_ratio", "Share of the last sample period a kernel ran (0..1)"),
            temperature=per_gpu("temperature_celsius", "GPU core temperature"),
            power=per_gpu("power_watts", "GPU power draw"),
            loaded_model_vram=TrackedGauge(
                gauge(
                    "gpu_agent", "loaded_model_vram_bytes", "VRAM a model on the local backend holds", ("host", "model")
                )
            ),
            publishes=Counter(
                "publishes",
                "Host state publishes to Redis, by outcome",
                ["outcome"],
                namespace="turnout",
                subsystem="gpu_agent",
                registry=registry,
            ),
            last_publish=gauge(
                "gpu_agent", "last_publish_timestamp_seconds", "Unix time of the last successful publish"
            ),
            gpus=gauge("gpu_agent", "gpus", "GPUs read in the last cycle", ("host",)),
            backend_up=gauge(
                "gpu_agent", "backend_up", "1 when the local backend answered in the last cycle", ("host",)
            ),
        )
        for outcome in OUTCOMES:
            m.publishes.labels(outcome)
        return m

    def observe(
        self, host: str, readings: Iterable[GpuReading], loaded: Iterable[LoadedModelV1], backend_ok: bool
    ) -> None:
        """Bring every series up to date with one observation."""
        rows = {(host, str(r.index), r.uuid, r.vendor): r for r in readings}
        self.memory_total.sync({k: _f(r.memory_total_bytes) for k, r in rows.items()})
        self.memory_used.sync({k: _f(r.memory_used_bytes) for k, r in rows.items()})
        self.memory_free.sync({k: _f(r.memory_free_bytes) for k, r in rows.items()})
        self.utilization.sync({k: r.utilization_ratio for k, r in rows.items()})
        self.temperature.sync({k: r.temperature_c for k, r in rows.items()})
        self.power.sync({k: r.power_w for k, r in rows.items()})
        self.loaded_model_vram.sync({(host, m.name): float(m.vram_bytes) for m in loaded})
        self.gpus.labels(host).set(len(rows))
        self.backend_up.labels(host).set(1 if backend_ok else 0)


def _f(v: int | None) -> float | None:
    return None if v is None else float(v)
