"""Sync settings: the shared :class:`CommonSettings` plus ``sync`` options
(``TURNOUT_SYNC__BENCHMARKS_FILE=/data/benchmarks.csv``, ``TURNOUT_SYNC__OPS_PORT`` …)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from turnout.common.arq import CronInterval, WorkerOptions
from turnout.common.settings import CommonSettings
from turnout.sync.public import PublicBenchmarksOptions
from turnout.sync.retention import RetentionOptions


class SyncOptions(WorkerOptions):
    """The sync worker's own settings (``TURNOUT_SYNC__*``)."""

    ops_port: int = Field(default=9103, ge=0, le=65535)

    benchmarks_file: Path | None = Field(default=None, description="CSV or JSON file (docs/benchmarks-file.md)")
    benchmarks_source: str = Field(
        default="local-file", min_length=1, max_length=64, description="Source name the file's rows are stored under"
    )
    benchmarks_every_s: CronInterval = Field(default=86400, description="Import schedule (default daily at 00:00)")
    benchmarks_on_schedule: bool = True
    benchmarks_at_startup: bool = True
    public: PublicBenchmarksOptions = Field(
        default_factory=PublicBenchmarksOptions, description="Public benchmark sources (TURNOUT_SYNC__PUBLIC__*)"
    )

    consume_events: bool = Field(default=True, description="Store request/feedback events from the Redis streams")
    consumer_group: str = Field(default="turnout-sync", min_length=1)
    batch_size: int = Field(default=200, ge=1, le=10_000, description="Events read and stored per transaction")
    block_ms: int = Field(default=1000, ge=1, le=60_000, description="XREADGROUP block time")
    claim_idle_s: float = Field(default=60.0, gt=0, description="Claim other consumers' events pending this long")
    retention: RetentionOptions = Field(
        default_factory=RetentionOptions, description="Pruning of the request log (TURNOUT_SYNC__RETENTION__*)"
    )


class SyncSettings(CommonSettings):
    """The sync worker's settings: the shared ones plus ``sync``."""

    sync: SyncOptions = Field(default_factory=SyncOptions)
