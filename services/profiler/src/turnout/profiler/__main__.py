"""``python -m turnout.profiler``: migrate (or wait for the schema), ops endpoints, arq worker.

``--help`` and ``--version`` are answered before the worker's imports (arq, SQLAlchemy, the
profiling suites: seconds), which load only once they have passed."""

from __future__ import annotations

from turnout.common.cli import load_settings, parse_service_args

DESCRIPTION = "The Turnout profiler: an arq worker that discovers models on the backends and profiles them."


def main(argv: list[str] | None = None) -> int:
    """Run the profiler's worker until SIGTERM/SIGINT; exit 2 on invalid settings."""
    parse_service_args("turnout-profiler", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    import asyncio

    from turnout.common.arq_running import serve_worker_service
    from turnout.profiler.metrics import queue_depth_gauge
    from turnout.profiler.settings import ProfilerSettings
    from turnout.profiler.worker import build_worker

    settings = load_settings(ProfilerSettings, "profiler")
    asyncio.run(
        serve_worker_service(
            "profiler",
            settings,
            settings.profiler,
            lambda _supervisor: build_worker(settings),
            queue=settings.keys.profiler_queue,
            queue_gauge=queue_depth_gauge(),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
