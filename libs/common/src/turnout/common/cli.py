"""The command line every service shares: ``--help`` and ``--version`` answer and exit without
starting anything (settings are read from ``TURNOUT_*`` environment variables, not flags)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
        return "unknown"


def add_version(parser: argparse.ArgumentParser, distribution: str) -> None:
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


__all__ = ["add_version", "package_version", "parse_service_args"]
