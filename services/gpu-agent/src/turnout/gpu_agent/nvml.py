"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``): the only module that touches it.

Every field is read on its own and a field the device does not support is left out (``None``)
instead of failing the whole reading — gpustat's ``safenvml`` approach: consumer cards refuse
power or utilisation, MIG slices refuse utilisation, unified-memory parts (GB10) refuse memory
info. NVML calls block, so :meth:`NvmlReader.read` runs them in a worker thread.

When ``nvmlInit`` fails (no driver, no library, a container without the GPU) ``read`` raises
:class:`~turnout.gpu_agent.gpus.GpuUnavailable` with NVML's reason, and tries again on the
next call (a driver may come up after the agent).

``python -m turnout.gpu_agent.nvml`` prints what the reader sees, as JSON;
``--scenario`` prints NVML's raw answers instead, in the format of the test fixtures
(``tests/fixtures/gpu/nvml/*.json``), so a machine's quirks can be replayed in a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from turnout.gpu_agent.errors import GpuUnavailable
from turnout.gpu_agent.gpus import GpuProcess, GpuReading

log = logging.getLogger(__name__)

T = TypeVar("T")


class NvmlReader:
    """Reads every NVIDIA GPU. ``nvml`` is the ``pynvml`` module (tests pass a fake one)."""

    name = "nvml"
    vendor = "nvidia"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()

    def _lib(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
                raise GpuUnavailable(f"NVML: the nvidia-ml-py package is not installed ({exc})") from exc
            self._nvml = pynvml
        return self._nvml

    async def read(self) -> list[GpuReading]:
        """The NVML readings, read off the event loop."""
        return await asyncio.to_thread(self.read_sync)

    def read_sync(self) -> list[GpuReading]:
        """Every GPU's reading through NVML (initialised on first use; fields it lacks stay unset)."""
        with self._lock:
            nv = self._lib()
            if not self._ready:
                try:
                    nv.nvmlInit()
                except nv.NVMLError as exc:
                    raise GpuUnavailable(f"NVML: {_message(exc)}") from exc
                self._ready = True
            try:
                count = nv.nvmlDeviceGetCount()
            except nv.NVMLError as exc:
                self._shutdown()
                raise GpuUnavailable(f"NVML: cannot count devices: {_message(exc)}") from exc
            if count == 0:
                raise GpuUnavailable("NVML: no NVIDIA GPU found")
            out = []
            for index in range(count):
                reading = self._device(nv, index)
                if reading is not None:
                    out.append(reading)
            if not out:
                raise GpuUnavailable(f"NVML: none of the {count} GPUs could be read")
            return out

    def _device(self, nv: Any, index: int) -> GpuReading | None:
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        except nv.NVMLError as exc:
            self._note(str(index), "handle", exc, level=logging.WARNING)
            return None
        missing: list[str] = []

        def safe(field: str, fn: Callable[..., T], *args: Any) -> T | None:
            try:
                return fn(handle, *args)
            except nv.NVMLError as exc:
                missing.append(field)
                self._note(str(index), field, exc)
                return None

        name = _text(safe("name", nv.nvmlDeviceGetName))
        uuid = _text(safe("uuid", nv.nvmlDeviceGetUUID))
        mem = safe("memory", nv.nvmlDeviceGetMemoryInfo)
        util = safe("utilization", nv.nvmlDeviceGetUtilizationRates)
        temp = safe("temperature", nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
        power_mw = safe("power", nv.nvmlDeviceGetPowerUsage)
        compute = safe("compute_processes", nv.nvmlDeviceGetComputeRunningProcesses)
        graphics = safe("graphics_processes", nv.nvmlDeviceGetGraphicsRunningProcesses)
        return GpuReading(
            index=index,
            uuid=uuid or "",
            name=name or "",
            vendor=self.vendor,
            memory_total_bytes=_int(getattr(mem, "total", None)),
            memory_used_bytes=_int(getattr(mem, "used", None)),
            memory_free_bytes=_int(getattr(mem, "free", None)),
            utilization_ratio=None if util is None else float(util.gpu) / 100.0,
            temperature_c=None if temp is None else float(temp),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            processes=_processes(compute, graphics),
            unsupported=tuple(missing),
        )

    def _note(self, device: str, field: str, exc: Exception, *, level: int = logging.DEBUG) -> None:
        """Log each (device, field) failure once: a card that lacks power readings lacks them forever."""
        if (device, field) not in self._reported:
            self._reported.add((device, field))
            log.log(level, "GPU %s: NVML does not report %s (%s)", device, field, _message(exc))

    def _shutdown(self) -> None:
        if self._ready:
            self._ready = False
            nv = self._lib()
            try:
                nv.nvmlShutdown()
            except nv.NVMLError as exc:  # NVML may already be gone with the driver
                log.debug("nvmlShutdown failed: %s", exc)

    def close(self) -> None:
        """Shut NVML down."""
        with self._lock:
            self._shutdown()


def _message(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _processes(*lists: Any) -> tuple[GpuProcess, ...]:
    seen: dict[int, GpuProcess] = {}
    for procs in lists:
        for p in procs or ():
            pid = int(p.pid)
            used = getattr(p, "usedGpuMemory", None)
            if pid not in seen or (seen[pid].used_memory_bytes is None and used is not None):
                seen[pid] = GpuProcess(pid=pid, used_memory_bytes=None if used is None else int(used))
    return tuple(seen.values())


def capture_scenario(nv: Any = None) -> dict[str, Any]:
    """NVML's raw answers for every device, each failure recorded as ``{"error": "<NVMLError_ suffix>"}``."""
    if nv is None:
        nv = NvmlReader()._lib()

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            return {"error": type(exc).__name__.removeprefix("NVMLError_")}

    init = call(nv.nvmlInit)
    if isinstance(init, dict):
        return {"init_error": init["error"], "devices": []}
    try:
        driver = call(nv.nvmlSystemGetDriverVersion)
        devices: list[Any] = []
        count = call(nv.nvmlDeviceGetCount)
        for i in range(count if isinstance(count, int) else 0):
            h = call(nv.nvmlDeviceGetHandleByIndex, i)
            if isinstance(h, dict):
                devices.append(h)
                continue
            mem = call(nv.nvmlDeviceGetMemoryInfo, h)
            mem = mem if isinstance(mem, dict) else {"total": mem.total, "used": mem.used, "free": mem.free}
            util = call(nv.nvmlDeviceGetUtilizationRates, h)
            util = util if isinstance(util, dict) else {"gpu": util.gpu, "memory": util.memory}
            devices.append(
                {
                    "name": _text(call(nv.nvmlDeviceGetName, h)),
                    "uuid": _text(call(nv.nvmlDeviceGetUUID, h)),
                    "memory": mem,
                    "utilization": util,
                    "temperature": call(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                    "power_mw": call(nv.nvmlDeviceGetPowerUsage, h),
                    "compute_processes": _raw_procs(call(nv.nvmlDeviceGetComputeRunningProcesses, h)),
                    "graphics_processes": _raw_procs(call(nv.nvmlDeviceGetGraphicsRunningProcesses, h)),
                }
            )
        return {"driver": _text(driver) if not isinstance(driver, dict) else driver, "devices": devices}
    finally:
        call(nv.nvmlShutdown)


def _raw_procs(procs: Any) -> Any:
    if isinstance(procs, dict):
        return procs
    return [{"pid": int(p.pid), "usedGpuMemory": getattr(p, "usedGpuMemory", None)} for p in procs]


def main(argv: list[str] | None = None) -> int:
    """Print the readings (or why there are none) as JSON; exit 1 when no GPU could be read."""
    args = sys.argv[1:] if argv is None else argv
    if "--scenario" in args:
        sys.stdout.write(json.dumps(capture_scenario(), indent=2) + "\n")
        return 0
    reader = NvmlReader()
    try:
        readings = reader.read_sync()
    except GpuUnavailable as exc:
        sys.stdout.write(json.dumps({"gpus": [], "gpu_error": str(exc)}) + "\n")
        return 1
    finally:
        reader.close()
    sys.stdout.write(json.dumps({"gpus": [asdict(r) for r in readings]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
