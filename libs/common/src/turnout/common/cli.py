"""The command line every service shares: ``--help`` and ``--version`` answer and exit without
starting anything (settings are read from ``TURNOUT_*`` environment variables, not flags).

A service's ``__main__`` reads, in order::

    parse_service_args("turnout-scorer", DESCRIPTION, argv)   # --help / --version exit here
    from turnout.scorer.app import serve                       # the service's imports: seconds
    settings = load_settings(ScorerSettings, "scorer")          # a bad setting exits 2
    run_until_signalled(lambda stop: serve(settings, stop=stop))

so that ``--help`` costs the interpreter and argparse (~0.1 s), not the whole app: this module
imports nothing but the standard library at the top, and everything else where it is used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

    from turnout.common.settings import CommonSettings

S = TypeVar("S", bound="CommonSettings")


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``unknown`` when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
        return "unknown"


def add_version(parser: argparse.ArgumentParser, distribution: str) -> None:
    """Give ``parser`` a ``--version`` that prints ``<distribution> <version>`` and exits 0."""
    parser.add_argument("--version", action="version", version=f"{distribution} {package_version(distribution)}")


def parse_service_args(distribution: str, description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``turnout-<svc> [--help] [--version]``; anything else is a usage error (exit 2)."""
    parser = argparse.ArgumentParser(
        prog=distribution,
        description=description.strip().split("\n\n")[0],
        epilog="Configured by TURNOUT_* environment variables (and .env); see README.md, 'Configuration'.",
    )
    add_version(parser, distribution)
    return parser.parse_args(argv)


def load_settings(cls: type[S], service: str) -> S:
    """Build the service's settings once from the environment and configure its logging from them.

    Invalid settings print the one readable :class:`~turnout.common.errors.ConfigError` message on
    stderr and exit 2 (a usage error, no traceback)."""
    from turnout.common.errors import ConfigError
    from turnout.common.logging import configure_logging

    try:
        settings = cls.load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, service=service, json=settings.log_json)
    return settings


def run_until_signalled(
    serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    runner: Callable[[Coroutine[Any, Any, None]], None] | None = None,
) -> None:
    """Run ``serve(stop)`` on a new event loop (``runner``: ``asyncio.run`` unless given, e.g.
    ``uvloop.run``) until it returns; SIGTERM and SIGINT set ``stop`` so that it shuts down in order."""
    import asyncio
    import contextlib
    import signal

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    (runner or asyncio.run)(_main())


__all__ = ["add_version", "load_settings", "package_version", "parse_service_args", "run_until_signalled"]
