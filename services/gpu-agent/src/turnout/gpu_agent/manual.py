"""A manual memory figure for unified-memory machines (Apple silicon, DGX Spark / GB10, AMD
Strix Halo, Intel iGPUs), where no driver reports a GPU memory size the router can budget with:
``TURNOUT_GPU_MEMORY_GB=96``.

The reader reports one GPU with that total. Used memory: on Linux, memory the rest of the
system has taken counts too: ``free = min(configured, MemAvailable)`` from ``/proc/meminfo``,
so the router does not plan loads that the machine cannot hold. Without ``/proc/meminfo``
(macOS) used is 0. When another reader still sees the GPU (NVML on a GB10 reports name,
utilisation, temperature and power but not memory), its first GPU lends those fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.errors import GpuReadError
from turnout.gpu_agent.sysfs import read_text, under

GB = 1024**3


class _Reader(Protocol):
    def read(self) -> list[GpuStateV1]: ...


def mem_available_bytes(root: Path) -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or ``None``."""
    for line in (read_text(under(root, "/proc/meminfo")) or "").splitlines():
        key, _, rest = line.partition(":")
        if key == "MemAvailable":
            parts = rest.split()
            if parts and parts[0].isdigit():
                factor = 1024 if len(parts) < 2 or parts[1].lower() == "kb" else 1
                return int(parts[0]) * factor
    return None


class ManualReader:
    """A budget given by hand (``TURNOUT_GPU_MEMORY_GB``) for unified memory or undetected GPUs."""

    source = "manual"

    def __init__(self, memory_gb: float, *, root: Path = Path("/"), base: _Reader | None = None) -> None:
        if memory_gb <= 0:
            raise ValueError("TURNOUT_GPU_MEMORY_GB must be > 0")
        self.total_bytes = int(memory_gb * GB)
        self._root = root
        self._base = base

    @property
    def vendor(self) -> str:
        """``unified``: the budget is not one GPU's memory."""
        return "unified"

    def read(self) -> list[GpuStateV1]:
        """One pseudo-GPU of the given size; free is capped by the host's available memory."""
        total = self.total_bytes
        avail = mem_available_bytes(self._root)
        free = total if avail is None else max(0, min(total, avail))
        gpu = GpuStateV1(
            index=0,
            uuid="manual",
            name="unified memory (TURNOUT_GPU_MEMORY_GB)",
            vendor="unified",
            memory_total_bytes=total,
            memory_used_bytes=total - free,
            memory_free_bytes=free,
        )
        if self._base is not None:
            try:
                seen = self._base.read()
            except GpuReadError:
                seen = []
            if seen:
                g = seen[0]
                gpu = gpu.model_copy(
                    update={
                        "uuid": g.uuid or gpu.uuid,
                        "name": f"{g.name} (memory: TURNOUT_GPU_MEMORY_GB)",
                        "vendor": g.vendor,
                        "utilization_pct": g.utilization_pct,
                        "temperature_c": g.temperature_c,
                        "power_w": g.power_w,
                    }
                )
        return [gpu]

    def available(self) -> bool:
        """Always: the budget was given."""
        return True
