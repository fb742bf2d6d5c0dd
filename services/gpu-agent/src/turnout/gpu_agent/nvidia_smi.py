"""NVIDIA GPUs through ``nvidia-smi`` when NVML cannot be loaded from Python (no
``nvidia-ml-py`` wheel, a container that only has the tool).

Query::

    nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,
               utilization.gpu,temperature.gpu,power.draw --format=csv,noheader,nounits

One line per GPU, comma-separated, memory in MiB, power in W. A field a GPU does not report
reads ``[N/A]`` or ``[Not Supported]``: GB10/Grace-Blackwell boards (DGX Spark) report
memory as ``[N/A]`` because the GPU shares the system's memory; there the agent needs
``TURNOUT_GPU_MEMORY_GB`` (manual.py). Names may not contain commas in practice, but the
parser splits around the first three and last five fields so one would still parse.
"""

from __future__ import annotations

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.errors import GpuReadError
from turnout.gpu_agent.sysfs import NA_VALUES, Runner, mib, parse_number, run_command

QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
)
COMMAND = ("nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits")


def parse_query_gpu(output: str) -> list[GpuStateV1]:
    """GPU states from ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits``."""
    gpus: list[GpuStateV1] = []
    for lineno, line in enumerate(output.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < len(QUERY_FIELDS):
            raise GpuReadError(f"nvidia-smi line {lineno}: expected {len(QUERY_FIELDS)} fields, got {len(parts)}")
        head, tail = parts[:2], parts[-6:]
        name = ",".join(parts[2:-6]).strip()
        index = parse_number(head[0])
        if index is None:
            raise GpuReadError(f"nvidia-smi line {lineno}: no GPU index in {line!r}")
        total, used, free, util, temp, power = (parse_number(v) for v in tail)
        if free is None and total is not None and used is not None:
            free = max(total - used, 0.0)
        gpus.append(
            GpuStateV1(
                index=int(index),
                uuid="" if head[1].lower() in NA_VALUES else head[1],
                name=name,
                vendor="nvidia",
                memory_total_bytes=mib(total),
                memory_used_bytes=mib(used),
                memory_free_bytes=mib(free),
                utilization_pct=util,
                temperature_c=temp,
                power_w=power,
            )
        )
    return gpus


class NvidiaSmiReader:
    """Runs the query on every :meth:`read` (about 30-80 ms: call it from a thread)."""

    source = "nvidia-smi"
    vendor = "nvidia"

    def __init__(self, runner: Runner = run_command) -> None:
        self._run = runner

    def read(self) -> list[GpuStateV1]:
        """NVIDIA GPUs as ``nvidia-smi`` reports them."""
        return parse_query_gpu(self._run(COMMAND))

    def available(self) -> bool:
        """Whether ``nvidia-smi`` runs and reports a GPU."""
        try:
            return bool(self.read())
        except GpuReadError:
            return False
