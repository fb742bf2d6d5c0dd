"""``python -m turnout.sync``: migrate (or wait for the schema), ops endpoints, arq worker
(benchmark import jobs + the request/feedback event consumer).

``--help`` and ``--version`` are answered before the worker's imports (arq, SQLAlchemy, the
benchmark sources: seconds), which load only once they have passed."""

from __future__ import annotations

from turnout.common.cli import load_settings, parse_service_args

DESCRIPTION = "The Turnout sync worker: imports public benchmarks and stores request/feedback events in Postgres."


def main(argv: list[str] | None = None) -> int:
    """Run the sync worker (and its event consumer) until SIGTERM/SIGINT; exit 2 on invalid settings."""
    parse_service_args("turnout-sync", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    import asyncio

    from turnout.common.arq_running import serve_worker_service
    from turnout.sync.metrics import queue_depth_gauge
    from turnout.sync.settings import SyncSettings
    from turnout.sync.worker import build_worker, consumer_check

    settings = load_settings(SyncSettings, "sync")
    asyncio.run(
        serve_worker_service(
            "sync",
            settings,
            settings.sync,
            lambda supervisor: build_worker(settings, supervisor=supervisor),
            queue=settings.keys.sync_queue,
            queue_gauge=queue_depth_gauge(),
            checks=lambda worker: {"events": consumer_check(worker)},
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
