"""Pick the GPU readers for this host, in order of trust.

1. NVML (``turnout.gpu_agent.nvml``, imported lazily: ``nvidia-ml-py`` and ``libnvidia-ml``
   may be absent) — per-GPU memory, utilisation, temperature, power, per-process memory;
2. ``nvidia-smi --query-gpu`` CSV, only when NVML could not load;
3. AMD: amdgpu sysfs, else ``rocm-smi --json``;
4. Intel: i915 / xe sysfs and debugfs (cards with their own memory);
5. manual: ``TURNOUT_GPU_MEMORY_GB``. When set it is the memory figure (unified-memory
   machines); the first vendor reader, if any, lends name, utilisation, temperature and power.

``simulated_url`` (an agent watching a ``tools/fakefleet`` listener) replaces all of them with
:class:`~turnout.gpu_agent.simulated.SimulatedReader`.

Vendors are not exclusive (an NVIDIA card next to an AMD iGPU): every vendor that finds a GPU
is read. :func:`read_all` reads them all and never raises: a failing reader becomes an error
string for ``HostStateV1.gpu_error``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.amd import AmdReader
from turnout.gpu_agent.errors import GpuReadError, GpuUnavailable
from turnout.gpu_agent.gpus import GpuReader, GpuReading, MultiReader
from turnout.gpu_agent.intel import IntelReader
from turnout.gpu_agent.manual import ManualReader
from turnout.gpu_agent.nvidia_smi import NvidiaSmiReader
from turnout.gpu_agent.simulated import SimulatedReader
from turnout.gpu_agent.sysfs import Runner, run_command

log = logging.getLogger(__name__)


@runtime_checkable
class Reader(Protocol):
    """What the agent needs from a reader (structurally the same as nvml.py's ``GpuReader``)."""

    def read(self) -> list[GpuStateV1]: ...


NvmlFactory = Callable[[], Reader | None]


@dataclass(slots=True)
class Detection:
    """The GPU readers found on this host, and why the other sources were skipped."""

    readers: list[Reader] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why each skipped source was skipped (logged at start, shown when no GPU is found)."""

    @property
    def sources(self) -> list[str]:
        """The names of the sources found."""
        return [str(getattr(r, "source", type(r).__name__)) for r in self.readers]

    @property
    def error(self) -> str | None:
        """Why no GPU was found, or ``None`` when one was."""
        return None if self.readers else "no GPU found: " + "; ".join(self.notes)


class NvmlProbe:
    """NVML as a :class:`Reader` for detection; the agent then uses the async ``NvmlReader`` itself."""

    source = "nvml"

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def read(self) -> list[GpuStateV1]:
        """The NVML readings as GPU states."""
        return [_to_state(r) for r in self.reader.read_sync()]


def load_nvml() -> Reader | None:
    """NVML (``nvml.py``, imported lazily) if it initialises and sees at least one GPU."""
    try:
        mod = importlib.import_module("turnout.gpu_agent.nvml")
    except ImportError as exc:
        log.debug("nvml module unavailable: %s", exc)
        return None
    reader = mod.NvmlReader()
    try:
        reader.read_sync()
    except GpuUnavailable as exc:  # no library, no driver, no device
        log.debug("NVML unavailable: %s", exc)
        reader.close()
        return None
    return NvmlProbe(reader)


def detect_readers(
    *,
    root: Path = Path("/"),
    runner: Runner = run_command,
    manual_memory_gb: float | None = None,
    nvml: NvmlFactory = load_nvml,
    simulated_url: str | None = None,
) -> Detection:
    """Which GPU sources this host has: the simulated fleet, NVML, nvidia-smi, AMD, Intel, a manual budget."""
    found = Detection()
    if simulated_url:
        found.readers.append(SimulatedReader(simulated_url))
        return found
    nv = nvml()
    if nv is not None:
        found.readers.append(nv)
    else:
        found.notes.append("NVML: not available")
        smi = NvidiaSmiReader(runner)
        try:
            if smi.read():
                found.readers.append(smi)
            else:
                found.notes.append("nvidia-smi: no GPU listed")
        except GpuReadError as exc:
            found.notes.append(f"nvidia-smi: {exc}")
    for reader, label in ((AmdReader(root, runner), "AMD"), (IntelReader(root), "Intel")):
        try:
            if reader.read():
                found.readers.append(reader)
            else:
                found.notes.append(f"{label}: no card with its own memory in sysfs")
        except GpuReadError as exc:
            found.notes.append(f"{label}: {exc}")
    if manual_memory_gb is not None:
        base = found.readers[0] if found.readers else None
        found.readers = [ManualReader(manual_memory_gb, root=root, base=base)]
    return found


def read_all(readers: Sequence[Reader]) -> tuple[list[GpuStateV1], str | None]:
    """Every reader's GPUs (blocking: call from a thread) and the errors of those that failed."""
    gpus: list[GpuStateV1] = []
    errors: list[str] = []
    for reader in readers:
        try:
            gpus.extend(reader.read())
        except (GpuReadError, GpuUnavailable) as exc:
            errors.append(f"{getattr(reader, 'source', type(reader).__name__)}: {exc}")
    return gpus, "; ".join(errors) or None


# --- the agent's side: the async GpuReader protocol of gpus.py -------------------------------


def _to_state(r: GpuReading) -> GpuStateV1:
    total = r.memory_total_bytes or 0
    used = r.memory_used_bytes or 0
    return GpuStateV1(
        index=r.index,
        uuid=r.uuid,
        name=r.name,
        vendor=r.vendor,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=r.memory_free_bytes if r.memory_free_bytes is not None else max(0, total - used),
        utilization_pct=None if r.utilization_ratio is None else r.utilization_ratio * 100.0,
        temperature_c=r.temperature_c,
        power_w=r.power_w,
    )


def _to_reading(g: GpuStateV1) -> GpuReading:
    known = g.memory_total_bytes > 0
    return GpuReading(
        index=g.index,
        uuid=g.uuid,
        name=g.name,
        vendor=g.vendor,
        memory_total_bytes=g.memory_total_bytes if known else None,
        memory_used_bytes=g.memory_used_bytes if known else None,
        memory_free_bytes=g.memory_free_bytes if known else None,
        utilization_ratio=None if g.utilization_pct is None else g.utilization_pct / 100.0,
        temperature_c=g.temperature_c,
        power_w=g.power_w,
        unsupported=() if known else ("memory",),
    )


class AsyncReader:
    """One of this module's blocking readers as the agent's :class:`GpuReader` (reads in a thread)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.name = str(getattr(reader, "source", type(reader).__name__))

    async def read(self) -> list[GpuReading]:
        """Read a synchronous source off the event loop; none found is ``GpuUnavailable``."""
        try:
            states = await asyncio.to_thread(self.reader.read)
        except GpuReadError as exc:
            raise GpuUnavailable(f"{self.name}: {exc}") from exc
        if not states:
            raise GpuUnavailable(f"{self.name}: no GPU found")
        return [_to_reading(g) for g in states]

    def close(self) -> None:
        """Nothing to release."""
        return None


def agent_reader(
    names: Sequence[str],
    *,
    root: Path = Path("/"),
    runner: Runner = run_command,
    backend_url: str | None = None,
    nvml: NvmlFactory = load_nvml,
) -> tuple[GpuReader | None, Detection]:
    """The agent's reader for its ``readers`` setting: ``auto`` runs :func:`detect_readers`;
    ``nvml``, ``nvidia-smi``, ``amd``, ``intel`` and ``simulated`` (the fakefleet listener at
    ``backend_url``) pick readers by hand. Several readers become one :class:`MultiReader`."""
    found = Detection()
    if "auto" in names:
        found = detect_readers(root=root, runner=runner, nvml=nvml)
    else:
        for name in names:
            if name == "nvml":
                nv = nvml()
                if nv is not None:
                    found.readers.append(nv)
                else:
                    found.notes.append("NVML: not available")
            elif name == "nvidia-smi":
                found.readers.append(NvidiaSmiReader(runner))
            elif name == "amd":
                found.readers.append(AmdReader(root, runner))
            elif name == "intel":
                found.readers.append(IntelReader(root))
            elif name == "simulated":
                if backend_url is None:
                    found.notes.append("simulated: the agent watches no backend")
                else:
                    found.readers.append(SimulatedReader(backend_url))
            else:
                raise ValueError(f"unknown GPU reader {name!r}")
    readers: list[GpuReader] = [r.reader if isinstance(r, NvmlProbe) else AsyncReader(r) for r in found.readers]
    if not readers:
        return NoGpu(found.error or "no GPU found"), found
    return (readers[0] if len(readers) == 1 else MultiReader(readers)), found


class NoGpu:
    """Nothing detected: every read says why, so the agent publishes the reason as ``gpu_error``."""

    name = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def read(self) -> list[GpuReading]:
        """Always ``GpuUnavailable``, with the reason."""
        raise GpuUnavailable(self.reason)

    def close(self) -> None:
        """Nothing to release."""
        return None
