"""Profiler settings: the shared :class:`CommonSettings` plus ``profiler`` options
(``TURNOUT_PROFILER__DISCOVER_EVERY_S=300``, ``TURNOUT_PROFILER__OPS_PORT`` …)."""

from __future__ import annotations

from pydantic import Field

from turnout.common.arq import CronInterval, WorkerOptions
from turnout.common.settings import CommonSettings
from turnout.profiler.profiling import ProfilingOptions


class ProfilerOptions(WorkerOptions):
    """The profiler's own settings (``TURNOUT_PROFILER__*``)."""

    ops_port: int = Field(default=9102, ge=0, le=65535)
    discover_every_s: CronInterval = Field(
        default=60, description="Discovery schedule; must divide a minute, an hour or a day"
    )
    discover_on_schedule: bool = Field(default=True, description="Run discovery on the schedule (cron)")
    discover_at_startup: bool = Field(default=True, description="Run discovery once when the worker starts")
    describe_concurrency: int = Field(default=8, ge=1, le=64, description="Concurrent /api/show calls per backend")
    backend_timeout_s: float = Field(default=10.0, gt=0, description="Per backend call during discovery")
    profiling: ProfilingOptions = Field(default_factory=ProfilingOptions)


class ProfilerSettings(CommonSettings):
    """The profiler's settings: the shared ones plus ``profiler``."""

    profiler: ProfilerOptions = Field(default_factory=ProfilerOptions)
