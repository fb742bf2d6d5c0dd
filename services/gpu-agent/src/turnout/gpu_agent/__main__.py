"""``python -m turnout.gpu_agent``: build settings once, log JSON lines, publish until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from turnout.common.cli import parse_service_args
from turnout.common.errors import ConfigError
from turnout.common.logging import configure_logging
from turnout.gpu_agent.app import serve
from turnout.gpu_agent.settings import GpuAgentSettings


async def _main(settings: GpuAgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


DESCRIPTION = "The Turnout GPU agent: publishes this host's GPU memory and loaded models, runs load/unload orders."


def main(argv: list[str] | None = None) -> int:
    parse_service_args("turnout-gpu-agent", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    try:
        settings = GpuAgentSettings.load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="gpu-agent", json=settings.log_json)
    try:
        asyncio.run(_main(settings))
    except OSError as exc:  # the ops port is taken, typically
        print(f"gpu-agent: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
