"""``python -m turnout.llamafleet`` — a small real llama.cpp fleet for ``make run`` and benches.

Commands::

    python -m turnout.llamafleet [run] [--fleet default|e2e|tiny] [--host 127.0.0.1] [--threads 1]
    python -m turnout.llamafleet prepare [--fleet ...]   # install the runtime, fetch/generate models, exit
    python -m turnout.llamafleet list                    # the fleets and models, as JSON

``run`` prepares what is missing (progress lines on stderr; the first run on a machine without
a cached wheel compiles llama.cpp for about 8 minutes), starts one server per model, and then
prints exactly one JSON line on stdout::

    {"backends": "llama-smol:openai=http://127.0.0.1:41235/v1,...", "host": "127.0.0.1",
     "ports": {"llama-smol": 41235, ...}, "servers": [...], "llama_cpp": "0.3.36"}

``backends`` is the value for ``TURNOUT_BACKENDS``. It then runs until SIGINT or SIGTERM,
stops every server and exits 0; a server that dies on its own makes it exit 1. Exit code 3
means the llama.cpp runtime cannot be had on this machine (the message says why).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import replace
from types import FrameType

from turnout.llamafleet.errors import LlamaFleetError, LlamaUnavailable
from turnout.llamafleet.models import RANDOM_PRESETS, SMOLLM2, ModelSpec
from turnout.llamafleet.servers import FLEETS, LlamaFleet, Member

EXIT_UNAVAILABLE = 3


class _Stop(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def _members(args: argparse.Namespace) -> tuple[Member, ...]:
    return tuple(replace(m, n_threads=args.threads, n_ctx=args.ctx) for m in FLEETS[args.fleet])


def _say(msg: str) -> None:
    sys.stderr.write(f"llamafleet: {msg}\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m turnout.llamafleet", description="a small real llama.cpp fleet")
    p.add_argument("command", nargs="?", default="run", choices=("run", "prepare", "list"))
    p.add_argument("--fleet", default="default", choices=sorted(FLEETS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--threads", type=int, default=1, help="threads per server (default 1)")
    p.add_argument("--ctx", type=int, default=2048, help="context size per server (default 2048)")
    p.add_argument(
        "--no-build", action="store_true", help="fail instead of compiling llama.cpp when no wheel is cached"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        fleets = {name: [{"backend": m.backend, "model": m.model.alias} for m in ms] for name, ms in FLEETS.items()}
        specs: list[ModelSpec] = [SMOLLM2, *RANDOM_PRESETS.values()]
        models = {m.alias: m.params for m in specs}
        sys.stdout.write(json.dumps({"fleets": fleets, "models": models}) + "\n")
        return 0
    fleet = LlamaFleet(_members(args), host=args.host, allow_build=not args.no_build, progress=_say)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        if args.command == "prepare":
            fleet.prepare()
            return 0
        fleet.start()
        sys.stdout.write(json.dumps(fleet.describe()) + "\n")
        sys.stdout.flush()
        for s in fleet.servers.values():
            _say(f"{s.backend}: {s.alias} at {s.url} (pid {s.pid}, log {s.log_path})")
        while True:
            dead = [s for s in fleet.servers.values() if not s.alive]
            if dead:
                _say(f"server {dead[0].backend} exited on its own; stopping the fleet")
                return 1
            time.sleep(0.5)
    except _Stop:
        return 0
    except LlamaUnavailable as exc:
        _say(str(exc))
        return EXIT_UNAVAILABLE
    except LlamaFleetError as exc:
        _say(str(exc))
        return 1
    finally:
        fleet.stop()


if __name__ == "__main__":
    raise SystemExit(main())
