"""Fleet state published by each gpu-agent (one key per host, with a TTL)."""

from __future__ import annotations

from pydantic import Field

from turnout.common.schemas import WireModel


class GpuProcessV1(WireModel):
    pid: int
    used_bytes: int | None = Field(default=None, description="GPU memory the process holds on this GPU")
    name: str | None = Field(default=None, description="/proc/<pid>/comm where the agent can see it")


class GpuStateV1(WireModel):
    index: int
    uuid: str = ""
    name: str = ""
    vendor: str = "nvidia"
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    memory_free_bytes: int = 0
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    processes: list[GpuProcessV1] = Field(
        default_factory=list, description="Processes holding memory on this GPU (NVML; empty elsewhere)"
    )


class LoadedModelV1(WireModel):
    name: str
    size_bytes: int = 0
    vram_bytes: int = 0
    expires_at: str | None = None


class HostStateV1(WireModel):
    v: int = 1
    host: str
    agent_version: str = ""
    backend: str | None = Field(default=None, description="Name of the local backend this agent watches")
    backend_url: str | None = None
    backend_ok: bool = True
    gpus: list[GpuStateV1] = Field(default_factory=list)
    gpu_error: str | None = Field(default=None, description="Why no GPU was read (no driver, no device)")
    loaded_models: list[LoadedModelV1] = Field(default_factory=list)
    ts: float = 0.0

    @property
    def memory_total_bytes(self) -> int:
        """GPU memory on the host, all GPUs together."""
        return sum(g.memory_total_bytes for g in self.gpus)

    @property
    def memory_free_bytes(self) -> int:
        """Free GPU memory on the host, all GPUs together."""
        return sum(g.memory_free_bytes for g in self.gpus)
