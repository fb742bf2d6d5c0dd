"""``python -m turnout.profiler``: migrate (or wait for the schema), ops endpoints, arq worker."""

from __future__ import annotations

import asyncio
import sys

from turnout.common.arq_running import prepare_schema, run_worker, worker_checks
from turnout.common.cli import parse_service_args
from turnout.common.errors import ConfigError
from turnout.common.logging import configure_logging
from turnout.common.metrics import QueueDepths
from turnout.common.ops import build_ops_app, ops_server
from turnout.common.supervise import Supervisor
from turnout.profiler.metrics import queue_depth_gauge
from turnout.profiler.settings import ProfilerSettings
from turnout.profiler.worker import build_worker


async def _main(settings: ProfilerSettings) -> None:
    opts = settings.profiler
    await prepare_schema(settings, wait_s=opts.schema_wait_s)
    worker = build_worker(settings)
    sup = Supervisor("profiler")
    depths = QueueDepths(queue_depth_gauge(), lambda: worker.pool, arq={"profiler": settings.keys.profiler_queue})
    ops = build_ops_app("profiler", worker_checks(worker), tasks=sup.state, refresh=[depths.refresh])
    async with ops_server(ops, opts.ops_host, opts.ops_port):
        await run_worker(worker, supervisor=sup)


DESCRIPTION = "The Turnout profiler: an arq worker that discovers models on the backends and profiles them."


def main(argv: list[str] | None = None) -> int:
    parse_service_args("turnout-profiler", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    try:
        settings = ProfilerSettings.load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="profiler", json=settings.log_json)
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
