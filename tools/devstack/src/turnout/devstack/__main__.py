"""``python -m turnout.devstack run`` — the launcher behind ``make run``.

1. Redis and PostgreSQL: the ones at ``TURNOUT_REDIS_URL`` / ``TURNOUT_DATABASE_URL``
   (or the defaults when they answer), else private ones under ``.run/devstack``.
2. Migrations to head.
3. The simulated fleet, unless ``TURNOUT_BACKENDS`` / ``TURNOUT_BACKENDS_FILE`` is set.
   ``TURNOUT_FLEET=llama`` starts real llama.cpp servers instead (``turnout.llamafleet``:
   SmolLM2-135M and two random-weight models; the first run installs llama.cpp, compiling it
   when no wheel is cached) and profiles them with its three-prompt speed suite.
4. scorer, profiler, sync, gpu-agent, gateway as ``python -m turnout.<svc>``, each line of
   their output prefixed with a coloured service name.
5. A banner once the gateway is ready. Ctrl-C (or SIGTERM) stops everything, private servers
   included. A service that dies is reported loudly.

``python -m turnout.devstack migrate`` does steps 1–2 only (``make migrate``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from turnout.common.cli import add_version
from turnout.common.db.migrate import upgrade
from turnout.common.errors import ConfigError
from turnout.common.settings import CommonSettings
from turnout.devstack import demo
from turnout.devstack.infra import (
    InfraError,
    Instance,
    ensure_postgres,
    ensure_redis,
    free_port,
    port_open,
)
from turnout.devstack.restart import Restarter
from turnout.devstack.stack import FLEET_DEFAULT_PORTS, LLAMA_MODULE, SERVICES, Stack, StackConfig, StackError

REPO = Path(__file__).resolve().parents[5]
RUN_DIR = REPO / ".run" / "devstack"

_COLOURS = {
    "fleet": "90",
    "llama": "90",
    "scorer": "35",
    "profiler": "36",
    "sync": "34",
    "gpu-agent": "33",
    "gateway": "32",
}
_WIDTH = max(len(n) for n in (*_COLOURS, "devstack"))
_print_lock = threading.Lock()


def _use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _paint(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _use_colour() else text


def terminal_sink(name: str, line: str) -> None:
    tag = _paint(_COLOURS.get(name, "0"), f"{name:<{_WIDTH}} |")
    with _print_lock:
        sys.stdout.write(f"{tag} {line}\n")
        sys.stdout.flush()


def say(msg: str, *, loud: bool = False) -> None:
    tag = _paint("1;31" if loud else "1", f"{'devstack':<{_WIDTH}} |")
    with _print_lock:
        print(f"{tag} {_paint('1;31', msg) if loud else msg}", flush=True)


class _Stop(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    # further Ctrl-C while we stop everything would leave orphans behind: ignore them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def _settings() -> CommonSettings:
    try:
        return CommonSettings.load()
    except ConfigError as exc:
        raise SystemExit(f"devstack: {exc}") from exc


def ensure_infra(settings: CommonSettings, instances: list[Instance], *, redis: bool = True) -> tuple[str, str]:
    """Redis and Postgres URLs to use (starting private servers into ``instances`` when needed)."""
    explicit = settings.model_fields_set
    redis_url = ""
    if redis:
        r = ensure_redis(settings.redis_url, RUN_DIR, explicit="redis_url" in explicit)
        instances.append(r)
        redis_url = r.url
        say(f"Redis      {r.url}  ({_where(r)})")
    pg = ensure_postgres(settings.database_url, RUN_DIR, explicit="database_url" in explicit)
    instances.append(pg)
    db_url = pg.url if pg.private else settings.database_url
    db_url = db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    say(f"PostgreSQL {_hide_password(db_url)}  ({_where(pg)})")
    return redis_url, db_url


def _where(inst: Instance) -> str:
    return "private, stopped on exit" if inst.private else "already running"


def _hide_password(url: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(url)
    return url.replace(f":{u.password}@", ":***@") if u.password else url


def _pick_ports(args: argparse.Namespace) -> tuple[int, dict[str, int], dict[str, int]]:
    gateway_port = args.port
    if port_open("127.0.0.1", gateway_port):
        raise SystemExit(
            f"devstack: port {gateway_port} is already in use; stop what listens there or run with "
            f"TURNOUT_GATEWAY__PORT=<port> make run"
        )
    ops: dict[str, int] = {}
    for name, spec in SERVICES.items():
        if name == "gateway":
            continue
        want = int(os.environ.get(spec.port_env, spec.default_port))
        ops[name] = want if not port_open("127.0.0.1", want) else free_port()
    fleet = {k: (p if not port_open("127.0.0.1", p) else free_port()) for k, p in FLEET_DEFAULT_PORTS.items()}
    return gateway_port, ops, fleet


def banner(stack: Stack, models: list[str], fleet_note: str | None, elapsed_s: float) -> str:
    urls = stack.urls()
    lines = [
        "",
        _paint("1;32", f"Turnout is up ({elapsed_s:.0f} s)."),
        f"  OpenAI-compatible API   {urls.openai_base}   (model: turnout/auto, or any listed model)",
        f"  health / ready / metrics {urls.gateway}/health  {urls.gateway}/ready  {urls.gateway}/metrics",
        "  ops ports                "
        + "  ".join(f"{n}={u}" for n, u in urls.ops.items() if stack.procs[n].returncode is None),
        f"  backends                 {stack.backends_value or '(from TURNOUT_BACKENDS_FILE)'}",
    ]
    if fleet_note:
        lines.append(f"                           ({fleet_note})")
    if models:
        lines.append(f"  models                   {', '.join(models)}")
    lines += [
        f"  dashboard                {urls.gateway}/ui",
        '  command line             .venv/bin/turnout check | models | explain "prompt" | requests tail',
        "",
        "  Try it:",
        f"    curl -s {urls.openai_base}/chat/completions -H 'content-type: application/json' \\",
        """      -d '{"model": "turnout/auto", "messages": [{"role": "user", "content": "Hello!"}]}'""",
        "",
        "  Use a real Ollama instead of the simulated fleet:",
        "    TURNOUT_BACKENDS=ollama=http://localhost:11434 make run",
        "  or list several backends in a YAML file:  TURNOUT_BACKENDS_FILE=backends.yaml make run",
        "  or real llama.cpp servers with small real models:  TURNOUT_FLEET=llama make run",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def cmd_migrate(_: argparse.Namespace) -> int:
    instances: list[Instance] = []
    try:
        db_url = ensure_infra(_settings(), instances, redis=False)[1]
        asyncio.run(upgrade(db_url))
        say("database migrated to head")
        return 0
    except InfraError as exc:
        say(str(exc), loud=True)
        return 1
    finally:
        for inst in reversed(instances):
            inst.stop()


FLEET_KINDS = ("simulated", "llama")
LLAMA_FLEET = "default"
LLAMA_EXIT_UNAVAILABLE = 3
"""``python -m turnout.llamafleet`` exits 3 when llama.cpp cannot be had here (no wheel, cannot build)."""


def _fleet_kind() -> str:
    kind = os.environ.get("TURNOUT_FLEET", "").strip().lower() or "simulated"
    kind = {"sim": "simulated", "fake": "simulated", "fakefleet": "simulated", "llamafleet": "llama"}.get(kind, kind)
    if kind not in FLEET_KINDS:
        raise SystemExit(f"devstack: TURNOUT_FLEET={kind!r}: expected one of {', '.join(FLEET_KINDS)}")
    return kind


class _LlamaUnavailable(Exception):
    pass


def prepare_llama(fleet: str = LLAMA_FLEET) -> None:
    """``python -m turnout.llamafleet prepare``: install llama.cpp (compiling it once when no
    wheel is cached) and fetch/generate the models, its progress shown as it comes."""
    argv = [sys.executable, "-m", LLAMA_MODULE, "prepare", "--fleet", fleet]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            terminal_sink("llama", line)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave a compile running
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if rc == LLAMA_EXIT_UNAVAILABLE:
        raise _LlamaUnavailable("\n".join(lines[-15:]))
    if rc != 0:
        raise StackError(f"python -m {LLAMA_MODULE} prepare exited with code {rc}:\n" + "\n".join(lines[-15:]))


LLAMA_DEFAULT_MAX_TOKENS = 256
"""About 10 s of generation for the 600M random-weight model on a 2-core CPU."""


def _dev_env() -> dict[str, str]:
    """``make run`` is for trying Turnout, unless the environment says otherwise: the request log
    is on (prompts and replies, redacted, in the dashboard), and Ctrl-C does not wait out the
    gateway's Kubernetes pre-stop delay (streams in flight still get the drain grace)."""
    wanted = {"TURNOUT_GATEWAY__REQUEST_LOG__ENABLED": "true", "TURNOUT_GATEWAY__PRESTOP_DELAY_S": "0"}
    return {k: v for k, v in wanted.items() if k not in os.environ}


def _llama_env() -> dict[str, str]:
    """Settings for a llama.cpp fleet (unless set already): random-weight models never stop early,
    so the shipped suite would take many minutes on a CPU (the speed suite takes seconds and still
    grades quality), and chats without a limit get ``LLAMA_DEFAULT_MAX_TOKENS``."""
    from turnout.llamafleet import SPEED_SUITE  # a workspace package; only needed here

    wanted = {
        "TURNOUT_PROFILER__PROFILING__SUITE_PATH": str(SPEED_SUITE),
        # random-weight models generate until their context is full: bound every chat that sets no limit
        "TURNOUT_GATEWAY__DEFAULT_MAX_TOKENS": str(LLAMA_DEFAULT_MAX_TOKENS),
        "TURNOUT_PROFILER__PROFILING__RUNNER__PROBE_VISION": "false",
        "TURNOUT_PROFILER__PROFILING__RUNNER__PROBE_TOOLS": "false",
    }
    return {k: v for k, v in wanted.items() if k not in os.environ}


async def live_scorers(redis_url: str, prefix: str) -> list[str]:
    """Scorer replicas with a live heartbeat under ``prefix`` on this Redis: another stack that
    would share this one's queues, catalog and fleet state."""
    from redis.asyncio import Redis

    from turnout.common.keys import Keys
    from turnout.common.rpc.contract import ROUTE_V1

    keys = Keys(prefix)
    redis = Redis.from_url(redis_url)
    try:
        raw: set[bytes] = await redis.smembers(keys.rpc_alive(ROUTE_V1.name, ROUTE_V1.version))  # type: ignore[misc]
        members = sorted(m.decode() for m in raw)
        return [m for m in members if await redis.exists(keys.rpc_alive_replica(ROUTE_V1.name, ROUTE_V1.version, m))]
    finally:
        await redis.aclose()


def _warn_if_shared(redis_url: str, prefix: str) -> None:
    others = asyncio.run(live_scorers(redis_url, prefix))
    if others:
        say(
            f"another Turnout stack is running on this Redis under key prefix {prefix!r} (scorer "
            f"{', '.join(others)}): the two would share queues, catalog and fleet state. Stop it, or keep "
            "this one apart: TURNOUT_KEY_PREFIX=<name> TURNOUT_DATABASE_URL=<another database> make run",
            loud=True,
        )


def cmd_run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.monotonic()
    settings = _settings()
    instances: list[Instance] = []
    stack: Stack | None = None
    try:
        gateway_port, ops_ports, fleet_ports = _pick_ports(args)
        use_fleet = not settings.backends and settings.backends_file is None
        use_llama = use_fleet and _fleet_kind() == "llama"
        if use_llama:
            say("TURNOUT_FLEET=llama: preparing real llama.cpp servers (the first run installs llama.cpp) ...")
            prepare_llama()
        redis_url, db_url = ensure_infra(settings, instances)
        _warn_if_shared(redis_url, settings.key_prefix)
        say("migrating the database ...")
        asyncio.run(upgrade(db_url))
        stack = Stack(
            StackConfig(
                redis_url=redis_url,
                database_url=db_url,
                key_prefix=settings.key_prefix,
                backends_file=str(settings.backends_file) if settings.backends_file else None,
                backends=os.environ.get("TURNOUT_BACKENDS") or None,
                gateway_host=args.host,
                gateway_port=gateway_port,
                ops_ports=ops_ports,
                fleet_ports=fleet_ports,
                log_level=settings.log_level,
                # readable text in a terminal, unless asked for JSON (flag or TURNOUT_LOG_JSON)
                log_json=args.json_logs or ("log_json" in settings.model_fields_set and settings.log_json),
                extra_env=_dev_env() | (_llama_env() if use_llama else {}),
                cwd=REPO,
            ),
            sink=terminal_sink,
        )
        fleet_note: str | None = None
        if use_llama:
            say(f"starting the llama.cpp fleet {LLAMA_FLEET!r} (one llama_cpp.server per model) ...")
            info = stack.start_llama_fleet(LLAMA_FLEET, timeout=900)
            say(f"llama.cpp fleet: {info['backends']}")
            fleet_note = "real llama.cpp servers: TURNOUT_FLEET=llama; profiled with the speed suite"
        elif use_fleet:
            say("no TURNOUT_BACKENDS set: starting the simulated fleet")
            fleet = stack.start_fleet()
            say(f"simulated fleet: Ollama API {fleet.ollama_url}, OpenAI API {fleet.openai_url}")
            fleet_note = "the simulated fleet: no TURNOUT_BACKENDS was set"
        stack.start_services()
        say("waiting for the services to be ready ...")
        stack.wait_ready(timeout=args.ready_timeout, strict=False, required=("gateway",))
        models: list[str] = []
        try:
            models = stack.wait_models(1, timeout=30)
        except StackError as exc:
            say(f"{exc} — discovery may still be running", loud=True)
        with _print_lock:
            print(banner(stack, models, fleet_note, time.monotonic() - started), flush=True)
        for name, why in stack.not_ready().items():
            say(f"{name} is running but not ready yet: {why}", loud=True)
        if use_fleet and not use_llama and not args.no_demo:
            show_routing(stack.urls().gateway, settings)
        return _watch(stack)
    except _Stop as sig:
        say(f"{sig}: stopping ...")
        return 0
    except _LlamaUnavailable as exc:
        say("TURNOUT_FLEET=llama: llama.cpp cannot be had on this machine:", loud=True)
        for line in str(exc).splitlines():
            say(f"  {line}", loud=True)
        say("run without TURNOUT_FLEET=llama for the simulated fleet", loud=True)
        return LLAMA_EXIT_UNAVAILABLE
    except (InfraError, StackError) as exc:
        say(str(exc), loud=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
        for inst in reversed(instances):
            inst.stop()
        say("stopped")


def show_routing(gateway: str, settings: CommonSettings) -> None:
    """Once the profiler has graded the simulated models: a greeting, a hard coding task and an
    image question, and the model each went to (:mod:`turnout.devstack.demo`)."""
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    say("waiting for the profiler to grade the models (the dashboard shows the progress) ...")
    done = demo.wait_profiled(
        gateway, admin_key=admin_key, timeout=300, progress=lambda d, t: say(f"profiled {d}/{t} chat models")
    )
    if not done:
        say("profiling has not finished: the routing below may still change", loud=True)
    try:
        routed = demo.run(gateway)
    except (OSError, ValueError) as exc:
        say(f"the routing demo failed: {exc}", loud=True)
        return
    with _print_lock:
        print("\n" + demo.table(routed, gateway) + "\n", flush=True)


def _watch(stack: Stack) -> int:
    """Block until a signal; a service that dies is reported, loudly, with why, and restarted
    with back-off (:class:`~turnout.devstack.restart.Restarter`)."""
    restarter = Restarter(stack, lambda msg: say(msg, loud=True))
    while True:
        restarter.tick()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turnout.devstack", description=__doc__.split("\n\n")[0])
    add_version(parser, "turnout-devstack")
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="everything up locally; Ctrl-C stops it all")
    run.add_argument("--host", default=os.environ.get("TURNOUT_GATEWAY__HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("TURNOUT_GATEWAY__PORT", "8080")))
    run.add_argument("--json-logs", action="store_true", help="JSON lines instead of readable text logs")
    run.add_argument("--ready-timeout", type=float, default=120.0)
    run.add_argument(
        "--no-demo", action="store_true", help="do not send the three routing-demo requests after start-up"
    )
    sub.add_parser("migrate", help="make Postgres available and migrate it to head")
    args = parser.parse_args(argv)
    if args.cmd == "migrate":
        return cmd_migrate(args)
    if args.cmd in (None, "run"):
        if args.cmd is None:
            args = parser.parse_args(["run"])
        return cmd_run(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
