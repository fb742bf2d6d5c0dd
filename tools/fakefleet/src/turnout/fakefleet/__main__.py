"""``python -m turnout.fakefleet [--config fleet.yaml]`` — the simulated fleet.

Serves every listener of the config (the packaged default fleet without ``--config``), then
prints ONE JSON line on stdout, e.g.::

    {"fakefleet": 1, "host": "127.0.0.1", "listeners": {"ollama": 11500, "openai": 11501},
     "ports": {"ollama": 11500, "openai": 11501, "admin": 11500},
     "urls": {"ollama": "http://127.0.0.1:11500", "openai": "http://127.0.0.1:11501/v1", "admin": "..."},
     "dialects": {...}, "host_labels": {...}, "vram_total_bytes": {...},
     "backends": "fleet-ollama:ollama=http://127.0.0.1:11500,fleet-openai:openai=http://127.0.0.1:11501/v1"}

Launchers read the ports from it (port 0 = a free port). Logs go to stderr. SIGTERM/SIGINT stop it.

Options (each also an environment variable):
  --config PATH          FAKEFLEET_CONFIG
  --host HOST            FAKEFLEET_HOST (default 127.0.0.1)
  --port NAME=PORT       FAKEFLEET_PORTS="ollama=0,openai=0" (repeatable on the command line)
  --ollama-port PORT     the listener named "ollama" (else the first Ollama-dialect one)
  --openai-port PORT     the listener named "openai" (else the first OpenAI-dialect one)
  --time-scale X         FAKEFLEET_TIME_SCALE: multiplies every delay; 0 = no delays
  --seed N               FAKEFLEET_SEED
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import orjson
from pydantic import ValidationError

from turnout.fakefleet.config import Dialect, FleetConfig
from turnout.fakefleet.server import Fleet

log = logging.getLogger("turnout.fakefleet")


def _version() -> str:
    try:
        return version("turnout-fakefleet")
    except PackageNotFoundError:  # pragma: no cover - a tree that is not installed
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m turnout.fakefleet", description="A simulated model fleet.")
    p.add_argument("--version", action="version", version=f"turnout-fakefleet {_version()}")
    p.add_argument("--config", default=env.get("FAKEFLEET_CONFIG", ""), help="fleet YAML (default: the packaged one)")
    p.add_argument("--host", default=env.get("FAKEFLEET_HOST", "127.0.0.1"))
    p.add_argument("--port", action="append", default=[], metavar="NAME=PORT", help="a listener's port (0 = free)")
    p.add_argument("--ollama-port", type=int, default=None)
    p.add_argument("--openai-port", type=int, default=None)
    p.add_argument("--time-scale", type=float, default=_float_env("FAKEFLEET_TIME_SCALE"))
    p.add_argument("--seed", type=int, default=_int_env("FAKEFLEET_SEED"))
    p.add_argument("--log-level", default=env.get("FAKEFLEET_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    ports = [s for s in env.get("FAKEFLEET_PORTS", "").split(",") if s.strip()]
    args.port = ports + args.port
    return args


def _float_env(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def build_config(args: argparse.Namespace) -> FleetConfig:
    config = FleetConfig.load(Path(args.config) if args.config else None)
    if args.time_scale is not None:
        config.time_scale = args.time_scale
    if args.seed is not None:
        config.seed = args.seed
    for item in args.port:
        name, sep, port = item.partition("=")
        listener = config.listener(name.strip())
        if not sep or listener is None:
            raise SystemExit(f"fakefleet: --port {item!r}: expected NAME=PORT with NAME one of {_names(config)}")
        listener.port = int(port)
    for dialect, port in ((Dialect.OLLAMA, args.ollama_port), (Dialect.OPENAI, args.openai_port)):
        if port is None:
            continue
        listener = config.listener(str(dialect)) or next((li for li in config.listeners if li.dialect is dialect), None)
        if listener is None:
            raise SystemExit(f"fakefleet: --{dialect}-port given but the config has no {dialect}-dialect listener")
        listener.port = port
    return config


def _names(config: FleetConfig) -> list[str]:
    return [li.name for li in config.listeners]


async def serve(config: FleetConfig, host: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Fleet(config, host=host) as fleet:
        sys.stdout.write(orjson.dumps(fleet.announcement()).decode() + "\n")
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)-7s fakefleet %(message)s"
    )
    try:
        config = build_config(args)
    except (OSError, ValidationError, ValueError) as exc:
        sys.stderr.write(f"fakefleet: invalid configuration: {exc}\n")
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(config, args.host))
    except OSError as exc:
        sys.stderr.write(f"fakefleet: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
