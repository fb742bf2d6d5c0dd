"""Pick the GPU readers for this host, in order of trust.

1. NVML (``switchyard.gpu_agent.nvml``, imported lazily: ``nvidia-ml-py`` and ``libnvidia-ml``
   may be absent) — per-GPU memory, utilisation, temperature, power, per-process memory;
2. ``nvidia-smi --query-gpu`` CSV, only when NVML could not load;
3. AMD: amdgpu sysfs, else ``rocm-smi --json``;
4. Intel: i915 / xe sysfs and debugfs (cards with their own memory);
5. manual: ``SWITCHYARD_GPU_MEMORY_GB``. When set it is the memory figure (unified-memory
   machines); the first vendor reader, if any, lends name, utilisation, temperature and power.

``simulated_url`` (an agent watching a ``tools/fakefleet`` listener) replaces all of them with
:class:`~switchyard.gpu_agent.simulated.SimulatedReader`.

Vendors are not exclusive (an NVIDIA card next to an AMD iGPU): every vendor that finds a GPU
is read. :func:`read_all` reads them all and never raises: a failing reader becomes an error
string for ``HostStateV1.gpu_error``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from switchyard.common.schemas.fleet import GpuStateV1
from switchyard.gpu_agent.amd import AmdReader
from switchyard.gpu_agent.intel import IntelReader
from switchyard.gpu_agent.manual import ManualReader
from switchyard.gpu_agent.nvidia_smi import NvidiaSmiReader
from switchyard.gpu_agent.simulated import SimulatedReader
from switchyard.gpu_agent.sysfs import GpuReadError, Runner, run_command

log = logging.getLogger(__name__)


@runtime_checkable
class Reader(Protocol):
    """What the agent needs from a reader (structurally the same as nvml.py's ``GpuReader``)."""

    def read(self) -> list[GpuStateV1]: ...


NvmlFactory = Callable[[], Reader | None]


@dataclass(slots=True)
class Detection:
    readers: list[Reader] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why each skipped source was skipped (logged at start, shown when no GPU is found)."""

    @property
    def sources(self) -> list[str]:
        return [str(getattr(r, "source", type(r).__name__)) for r in self.readers]

    @property
    def error(self) -> str | None:
        return None if self.readers else "no GPU found: " + "; ".join(self.notes)


def load_nvml() -> Reader | None:
    """The NVML reader from ``nvml.py`` if NVML initialises and sees at least one GPU."""
    try:
        mod = importlib.import_module("switchyard.gpu_agent.nvml")
    except ImportError as exc:
        log.debug("nvml module unavailable: %s", exc)
        return None
    for name in ("NvmlReader", "NVMLReader", "open_nvml", "nvml_reader"):
        factory = getattr(mod, name, None)
        if factory is None:
            continue
        try:
            reader = factory()
            if reader is None:
                return None
            if not reader.read():
                return None
            return reader  # type: ignore[no-any-return]
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, …
            log.debug("NVML unavailable: %s", exc)
            return None
    return None


def detect_readers(
    *,
    root: Path = Path("/"),
    runner: Runner = run_command,
    manual_memory_gb: float | None = None,
    nvml: NvmlFactory = load_nvml,
    simulated_url: str | None = None,
) -> Detection:
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
        except Exception as exc:
            errors.append(f"{getattr(reader, 'source', type(reader).__name__)}: {exc}")
    return gpus, "; ".join(errors) or None
