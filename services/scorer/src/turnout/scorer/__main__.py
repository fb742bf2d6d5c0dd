"""``python -m turnout.scorer``: build settings once, log JSON lines, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import os

# The scorer's numpy work is small matrix-vector products on the event loop's thread; a
# multi-threaded BLAS makes them 10-30x slower on a busy host (0.3 ms vs 8 ms for 5,000 x 128).
# Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import asyncio
import contextlib
import signal
import sys

from turnout.common.cli import parse_service_args
from turnout.common.errors import ConfigError
from turnout.common.logging import configure_logging
from turnout.scorer.app import serve
from turnout.scorer.settings import ScorerSettings


async def _main(settings: ScorerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


DESCRIPTION = "The Turnout scorer: answers the gateway's routing RPC over Redis."


def main(argv: list[str] | None = None) -> int:
    parse_service_args("turnout-scorer", DESCRIPTION, argv)  # --help / --version: answer, start nothing
    try:
        settings = ScorerSettings.load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, service="scorer", json=settings.log_json)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; run without it if missing
        asyncio.run(_main(settings))
    else:
        uvloop.run(_main(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
