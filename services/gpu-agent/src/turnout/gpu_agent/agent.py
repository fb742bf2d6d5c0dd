"""The agent's cycle: read the GPUs and the local backend's loaded models, publish the host state.

Every ``interval_s``:

1. read the GPUs (a :class:`GpuReader`, in a thread) and the backend's loaded models
   (Ollama ``/api/ps``; OpenAI-compatible servers have no such list: empty, and a
   ``/v1/models`` call says whether the server is up) — concurrently;
2. build a :class:`HostStateV1` (``gpu_error`` says why there are no GPUs; a GPU that reports
   no memory is left out and named in ``gpu_error``);
3. in one MULTI: ``SET keys.fleet_host(host) <json> PX ttl``, ``ZADD keys.fleet_hosts host now``
   (forgetting hosts silent for an hour), and ``PUBLISH keys.fleet_changed host`` when the
   state differs from the last one published, ignoring ``ts`` and the GPU telemetry that does
   not change routing (utilisation, temperature, power).

Redis or the backend going away costs a log line and a metric, never the agent: the next cycle
tries again. Stopping does not delete the key; it expires after ``ttl_s``, so a restart does
not make the host flicker out of the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.aio import raise_if_cancelling
from turnout.common.backends.clients import BackendClient
from turnout.common.backends.config import BackendKind
from turnout.common.errors import BackendError
from turnout.common.schemas.fleet import GpuProcessV1, GpuStateV1, HostStateV1, LoadedModelV1
from turnout.gpu_agent import __version__
from turnout.gpu_agent.errors import GpuUnavailable
from turnout.gpu_agent.gpus import GpuReader, GpuReading, manual_reading
from turnout.gpu_agent.metrics import GpuAgentMetrics
from turnout.gpu_agent.settings import GpuAgentSettings

log = logging.getLogger(__name__)

FORGET_HOSTS_AFTER_S = 3600.0
"""Members of ``keys.fleet_hosts`` silent this long are dropped from the set (their key is long gone)."""
_VOLATILE_GPU_FIELDS = frozenset({"utilization_pct", "temperature_c", "power_w", "processes"})
"""Published every cycle but no reason for a change notification (a process's memory moves with
its KV cache; the GPU's used memory, which is in the fingerprint, moves with it)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One tick's readings: the GPUs (or why not), the backend's loaded models and whether it answered."""

    readings: list[GpuReading]
    gpu_error: str | None
    loaded: list[LoadedModelV1]
    backend_ok: bool


def to_gpu_state(r: GpuReading) -> GpuStateV1:
    """A GPU reading as published (free memory derived from total and used when not read)."""
    total = r.memory_total_bytes or 0
    used = r.memory_used_bytes or 0
    free = r.memory_free_bytes if r.memory_free_bytes is not None else max(0, total - used)
    return GpuStateV1(
        index=r.index,
        uuid=r.uuid,
        name=r.name,
        vendor=r.vendor,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=free,
        utilization_pct=None if r.utilization_ratio is None else round(r.utilization_ratio * 100, 1),
        temperature_c=r.temperature_c,
        power_w=r.power_w,
        processes=[
            GpuProcessV1(pid=p.pid, used_bytes=p.used_memory_bytes, name=process_name(p.pid)) for p in r.processes
        ],
    )


def process_name(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The process's command name, where this agent can see it (a container without the host's
    PID namespace cannot: ``None``)."""
    try:
        return (proc / str(pid) / "comm").read_text().strip() or None
    except OSError:
        return None


def fingerprint(state: HostStateV1) -> bytes:
    """What a change notification is about: the state without ``ts`` and volatile telemetry."""
    data = state.model_dump(mode="json", exclude={"ts"})
    data["gpus"] = [{k: v for k, v in g.items() if k not in _VOLATILE_GPU_FIELDS} for g in data["gpus"]]
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


class Agent:
    """Reads this host's GPUs and local backend every ``interval_s`` and publishes the host state to Redis."""

    def __init__(
        self,
        settings: GpuAgentSettings,
        *,
        redis: Redis,
        reader: GpuReader | None,
        backend: BackendClient | None,
        metrics: GpuAgentMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.opts = settings.gpu_agent
        self.host = self.opts.host
        self.keys = settings.keys
        self.redis = redis
        self.reader = reader
        self.backend = backend
        self.metrics = metrics
        self.clock = clock
        self.last_state: HostStateV1 | None = None
        self.last_published_at: float | None = None
        self._last_fingerprint: bytes | None = None
        self._last_gpu_error: str | None = ""
        self._last_backend_ok: bool | None = None
        self._publish_failing = False
        self._budget = settings.memory_budget_bytes
        named = backend is not None and settings.backend(backend.config.name) is not None
        self._backend_name = backend.config.name if backend is not None and named else None

    # --- reading ---------------------------------------------------------------------------

    async def read_backend(self) -> tuple[list[LoadedModelV1], bool]:
        """The local backend's loaded models (Ollama) and whether it answered."""
        if self.backend is None:
            return [], True
        try:
            if self.backend.config.kind is BackendKind.OLLAMA:
                loaded = await self.backend.loaded()
            else:  # no residency to report; listing the models says whether the server is up
                await self.backend.list_models()
                loaded = []
        except BackendError as exc:
            if self._last_backend_ok is not False:
                log.warning("backend %s is not answering: %s", self.backend.config.name, exc)
            return [], False
        if self._last_backend_ok is False:
            log.info("backend %s answers again", self.backend.config.name)
        return loaded, True

    async def read_gpus(self) -> tuple[list[GpuReading], str | None]:
        """The GPU readings, or none and the reason (no reader, unavailable, timed out)."""
        if self.reader is None:
            return [], "no GPU reader configured"
        timeout = max(self.opts.interval_s, 5.0)
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(), None
        except GpuUnavailable as exc:
            return [], str(exc)
        except TimeoutError:
            return [], f"{self.reader.name}: no answer within {timeout:.0f}s"

    async def observe(self) -> Observation:
        """Read the backend and the GPUs at once (with a manual budget: used = the loaded models' size)."""
        if self._budget is not None:  # a manual budget: "used" is what the backend's models take
            loaded, backend_ok = await self.read_backend()
            readings = [manual_reading(self._budget, sum(m.vram_bytes for m in loaded))]
            return Observation(readings, None, loaded, backend_ok)
        (loaded, backend_ok), (readings, gpu_error) = await asyncio.gather(self.read_backend(), self.read_gpus())
        return Observation(readings, gpu_error, loaded, backend_ok)

    # --- state -----------------------------------------------------------------------------

    def build(self, obs: Observation) -> HostStateV1:
        """The host state to publish from one observation (naming GPUs that report no memory)."""
        known = [r for r in obs.readings if r.memory_known]
        unknown = [r for r in obs.readings if not r.memory_known]
        gpu_error = obs.gpu_error
        if unknown and gpu_error is None:
            names = ", ".join(f"{r.index} ({r.name or r.uuid})" for r in unknown)
            gpu_error = f"GPU {names} reports no memory (unified memory?); set TURNOUT_GPU_MEMORY_GB to give a budget"
        backend = self.backend
        return HostStateV1(
            host=self.host,
            agent_version=__version__,
            backend=self._backend_name,
            backend_url=backend.config.url if backend is not None else None,
            backend_ok=obs.backend_ok,
            gpus=[to_gpu_state(r) for r in known],
            gpu_error=gpu_error,
            loaded_models=obs.loaded,
            ts=self.clock(),
        )

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, state: HostStateV1) -> bool:
        """Write the state (key with TTL, host set, change notification); False when Redis failed."""
        fp = fingerprint(state)
        changed = fp != self._last_fingerprint
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.keys.fleet_host(self.host), state.model_dump_json(), px=int(self.opts.ttl_s * 1000))
                pipe.zadd(self.keys.fleet_hosts, {self.host: state.ts})
                pipe.zremrangebyscore(self.keys.fleet_hosts, "-inf", state.ts - FORGET_HOSTS_AFTER_S)
                if changed:
                    pipe.publish(self.keys.fleet_changed, self.host)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.metrics.publishes.labels("error").inc()
            if not self._publish_failing:
                log.warning("cannot publish the host state to Redis (%s); retrying every cycle", exc)
            self._publish_failing = True
            return False
        if self._publish_failing:
            log.info("publishing to Redis again")
        self._publish_failing = False
        self._last_fingerprint = fp
        self.last_published_at = state.ts
        self.metrics.publishes.labels("ok").inc()
        self.metrics.last_publish.set(state.ts)
        return True

    async def tick(self) -> HostStateV1:
        """Observe, build, log what changed, update the metrics and publish: one interval's work."""
        obs = await self.observe()
        state = self.build(obs)
        self._log_transitions(state)
        self.metrics.observe(self.host, obs.readings, obs.loaded, obs.backend_ok)
        self.last_state = state
        await self.publish(state)
        return state

    def _log_transitions(self, state: HostStateV1) -> None:
        if state.gpu_error != self._last_gpu_error:
            if state.gpu_error:
                log.warning("no GPU state to publish: %s", state.gpu_error)
            else:
                log.info(
                    "reading %d GPU(s): %s",
                    len(state.gpus),
                    ", ".join(f"{g.index}:{g.name} {g.memory_total_bytes / 2**30:.1f} GiB" for g in state.gpus),
                )
            self._last_gpu_error = state.gpu_error
        self._last_backend_ok = state.backend_ok

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle every ``interval_s`` until ``stop`` is set; one failing cycle never ends the loop."""
        while not stop.is_set():
            raise_if_cancelling()
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:  # a bug in one cycle must not stop the publishing
                log.exception("gpu-agent cycle failed")
            wait = self.opts.interval_s - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await stop.wait()

    @property
    def healthy(self) -> bool:
        """Published within the TTL: the state in Redis is this agent's latest."""
        return self.last_published_at is not None and self.clock() - self.last_published_at < self.opts.ttl_s
