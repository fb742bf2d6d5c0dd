"""What a GPU reader reports, and the one interface every reader implements.

Readers (``nvml.py`` for NVIDIA today; AMD/Intel sysfs, ``rocm-smi`` and ``nvidia-smi`` fit the
same :class:`GpuReader` protocol) return one :class:`GpuReading` per device. A field the device
or driver does not report is ``None``, never a guess; a reader that cannot read at all (no
driver, no library, no device) raises :class:`GpuUnavailable`, and the agent publishes that
reason as ``gpu_error``.

Kept free of pydantic and of any vendor library so that it imports anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from turnout.gpu_agent.errors import GpuUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding GPU memory."""

    pid: int
    used_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's reading: identity, memory, utilisation, temperature, power, processes."""

    index: int
    uuid: str = ""
    name: str = ""
    vendor: str = "nvidia"
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    utilization_ratio: float | None = None
    """0..1, share of the last sample period a kernel ran."""
    temperature_c: float | None = None
    power_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    unsupported: tuple[str, ...] = field(default=())
    """Fields the device or driver would not report (e.g. ``power`` on consumer cards)."""

    @property
    def memory_known(self) -> bool:
        """Whether total and used memory were both read."""
        return self.memory_total_bytes is not None and self.memory_used_bytes is not None


class GpuReader(Protocol):
    """A source of GPU readings. ``read`` must not block the event loop."""

    name: str

    async def read(self) -> list[GpuReading]:
        """Every device this reader sees; raises :class:`GpuUnavailable` when it sees none."""
        ...

    def close(self) -> None: ...


class MultiReader:
    """Several readers on one host (an NVIDIA card beside an AMD one): their devices together.

    Raises :class:`GpuUnavailable` only when every reader does; readers are tried concurrently.
    """

    name = "multi"

    def __init__(self, readers: Sequence[GpuReader]) -> None:
        self.readers = list(readers)

    async def read(self) -> list[GpuReading]:
        """Every source's readings together; unavailable only when every source is."""
        results = await asyncio.gather(*(r.read() for r in self.readers), return_exceptions=True)
        out: list[GpuReading] = []
        errors: list[str] = []
        for reader, result in zip(self.readers, results, strict=True):
            if isinstance(result, GpuUnavailable):
                errors.append(str(result))
            elif isinstance(result, BaseException):
                errors.append(f"{reader.name}: {result!r}")
            else:
                out.extend(result)
        if not out and errors:
            raise GpuUnavailable("; ".join(errors))
        return out

    def close(self) -> None:
        """Close every source."""
        for r in self.readers:
            r.close()


def manual_reading(total_bytes: int, used_bytes: int) -> GpuReading:
    """One pseudo-device for ``gpu_memory_gb``: a unified-memory machine where the operator says
    how much memory models may use; ``used`` is what the backend reports its models take."""
    used = max(0, min(used_bytes, total_bytes))
    return GpuReading(
        index=0,
        uuid="manual",
        name="manual memory budget",
        vendor="manual",
        memory_total_bytes=total_bytes,
        memory_used_bytes=used,
        memory_free_bytes=total_bytes - used,
    )
