"""gpu-agent settings: the shared :class:`CommonSettings` plus ``gpu_agent`` options
(``TURNOUT_GPU_AGENT__HOST``, ``TURNOUT_GPU_AGENT__BACKEND``, ``TURNOUT_GPU_AGENT__INTERVAL_S`` …).

Which backend the agent watches (its loaded models go into the host state):

1. ``gpu_agent.backend``: the name of one of ``TURNOUT_BACKENDS``;
2. else ``gpu_agent.backend_url`` (+ ``backend_kind``): a URL, named after the configured
   backend with that URL if there is one (so the scorer can join them);
3. else the one configured backend whose ``host`` is this agent's host;
4. else none: the agent publishes GPUs only.

``TURNOUT_GPU_MEMORY_GB`` (or ``TURNOUT_GPU_AGENT__GPU_MEMORY_GB``) replaces the GPU
readers with one memory budget, for unified-memory machines (Apple silicon, GB10, Strix Halo).
"""

from __future__ import annotations

import socket
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnout.common.backends.config import BackendConfig, BackendKind
from turnout.common.settings import CommonSettings

READERS = ("auto", "nvml", "nvidia-smi", "amd", "intel", "simulated")
"""GPU readers (``detect.py``): ``auto`` = NVML, else nvidia-smi; AMD (sysfs, rocm-smi); Intel (xe/i915);
``simulated`` = the fakefleet listener the agent watches."""


class GpuAgentOptions(BaseModel):
    """The agent's own settings (``TURNOUT_GPU_AGENT__*``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name this host publishes under (keys.fleet_host(host)); joins BackendConfig.host",
    )
    backend: str | None = Field(default=None, description="Name of the local backend (one of TURNOUT_BACKENDS)")
    backend_url: str | None = Field(default=None, description="URL of the local backend, when not a named one")
    backend_kind: BackendKind = BackendKind.OLLAMA
    backend_timeout_s: float = Field(default=5.0, gt=0, description="Per call to the backend (/api/ps)")
    interval_s: float = Field(default=2.0, gt=0, description="Read and publish this often")
    ttl_s: float = Field(default=10.0, gt=0, description="The host state expires this long after the last publish")
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9104, ge=0, le=65535)
    gpu_memory_gb: float | None = Field(default=None, gt=0, description="Manual memory budget instead of readers")
    readers: list[str] = Field(default_factory=lambda: ["auto"], description=f"GPU readers: {READERS}")
    expect_gpus: int = Field(
        default=0,
        ge=0,
        description="/ready fails while fewer GPUs than this are read (a GPU node whose driver or device "
        "plugin failed); 0: no expectation",
    )
    serve_orders: bool = Field(default=True, description="Carry out the router's load/unload orders (gpu.order)")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ttl_s <= self.interval_s:
            raise ValueError(f"ttl_s ({self.ttl_s}) must be longer than interval_s ({self.interval_s})")
        unknown = set(self.readers) - set(READERS)
        if unknown:
            raise ValueError(f"unknown GPU readers {sorted(unknown)}; known: {list(READERS)}")
        if self.backend_url is not None and not self.backend_url.startswith(("http://", "https://")):
            raise ValueError("backend_url must start with http:// or https://")
        return self


class GpuAgentSettings(CommonSettings):
    """The agent's settings: the shared ones plus ``gpu_agent``."""

    gpu_agent: GpuAgentOptions = Field(default_factory=GpuAgentOptions)
    gpu_memory_gb: float | None = Field(
        default=None, gt=0, description="TURNOUT_GPU_MEMORY_GB: the same as gpu_agent.gpu_memory_gb"
    )

    @model_validator(mode="after")
    def _agent(self) -> Self:
        opts = self.gpu_agent
        if self.gpu_memory_gb is not None and opts.gpu_memory_gb is None:
            opts.gpu_memory_gb = self.gpu_memory_gb
        if opts.backend is not None and self.backend(opts.backend) is None:
            names = [b.name for b in self.backends] or "none configured"
            raise ValueError(f"gpu_agent.backend={opts.backend!r} is not a configured backend ({names})")
        return self

    def local_backend(self) -> BackendConfig | None:
        """The backend whose loaded models this agent reports (see the module docstring)."""
        opts = self.gpu_agent
        if opts.backend is not None:
            return self.backend(opts.backend)
        if opts.backend_url is not None:
            url = opts.backend_url.rstrip("/")
            named = next((b for b in self.backends if b.url.rstrip("/") in (url, url.removesuffix("/v1"))), None)
            if named is not None:
                return named
            return BackendConfig(name=f"{opts.host}-local", kind=opts.backend_kind, url=url, host=opts.host)
        on_host = [b for b in self.backends if b.host == opts.host]
        return on_host[0] if len(on_host) == 1 else None

    @property
    def memory_budget_bytes(self) -> int | None:
        """The manual memory budget in bytes, or ``None``."""
        gb = self.gpu_agent.gpu_memory_gb
        return None if gb is None else int(gb * 1024**3)
