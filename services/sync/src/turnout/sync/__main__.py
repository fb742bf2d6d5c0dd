"""``python -m turnout.sync``: migrate (or wait for the schema), ops endpoints, arq worker
(benchmark import jobs + the request/feedback event consumer)."""

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
from turnout.sync.metrics import queue_depth_gauge
from turnout.sync.settings import SyncSettings
from turnout.sync.worker import build_worker, consumer_check


async def _main(settings: SyncSettings) -> None:
    opts = settings.sync
    await prepare_schema(settings, wait_s=opts.schema_wait_s)
    sup = Supervisor("sync")
    worker = build_worker(settings, supervisor=sup)
    depths = QueueDepths(queue_depth_gauge(), lambda: worker.pool, arq={"sync": settings.keys.sync_queue})
    checks = {**worker_checks(worker), "events": consumer_check(worker)}
    ops = build_ops_app("sync", checks, tasks=sup.state, refresh=[depths.refresh])
    async with ops_server(ops, opts.ops_host, opts.ops_port):
        await run_worker(worker, supervisor=sup)


DESCRIPTION = "The Turnout sync worker: imports public benchmarks and stores request/feedback events in Postgres."


def main(argv: list[str] | None = None) -> int:
    parse_service_args("turnout-sync", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    try:
        settings = SyncSettings.load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="sync", json=settings.log_json)
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
