"""Start the Turnout services as real processes, watch them, stop them.

Used by ``make run`` (``python -m turnout.devstack run``) and by the end-to-end tests::

    with Stack(StackConfig(redis_url=..., database_url=...)) as stack:
        stack.start_fleet()          # only when no backends are configured
        stack.start_services()
        urls = stack.wait_ready()
        ...

Each process runs in its own process group (``start_new_session``) with stdout and stderr
merged; every line goes to a :data:`Sink` (the launcher prefixes it with a coloured service
name, the tests write one log file per service). :meth:`Stack.stop` sends SIGTERM to every
group in reverse start order, then SIGKILL to what is still alive.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnout.devstack.infra import free_port, orphan_guard

Sink = Callable[[str, str], None]
"""Receives (service name, one output line without its newline)."""


class StackError(RuntimeError):
    """A service did not start or did not become ready; the message carries its last output lines."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str
    port_env: str
    default_port: int
    ready_path: str = "/ready"
    host_env: str | None = None


# Start order: the scorer first (the gateway asks it), the gateway last.
SERVICES: dict[str, ServiceSpec] = {
    "scorer": ServiceSpec(
        "scorer", "turnout.scorer", "TURNOUT_SCORER__OPS_PORT", 9101, host_env="TURNOUT_SCORER__OPS_HOST"
    ),
    "profiler": ServiceSpec(
        "profiler",
        "turnout.profiler",
        "TURNOUT_PROFILER__OPS_PORT",
        9102,
        host_env="TURNOUT_PROFILER__OPS_HOST",
    ),
    "sync": ServiceSpec("sync", "turnout.sync", "TURNOUT_SYNC__OPS_PORT", 9103, host_env="TURNOUT_SYNC__OPS_HOST"),
    "gpu-agent": ServiceSpec(
        "gpu-agent",
        "turnout.gpu_agent",
        "TURNOUT_GPU_AGENT__OPS_PORT",
        9104,
        host_env="TURNOUT_GPU_AGENT__OPS_HOST",
    ),
    "gateway": ServiceSpec(
        "gateway", "turnout.gateway", "TURNOUT_GATEWAY__PORT", 8080, host_env="TURNOUT_GATEWAY__HOST"
    ),
}
FLEET = "fleet"
FLEET_MODULE = "turnout.fakefleet"
FLEET_DEFAULT_PORTS = {"ollama": 11500, "openai": 11501}
LLAMA = "llama"
LLAMA_MODULE = "turnout.llamafleet"


@dataclass
class FleetInfo:
    """What the simulated fleet told us on its first stdout line."""

    ollama_url: str
    openai_url: str
    admin_url: str
    raw: dict[str, Any] = field(default_factory=dict)

    def backends_value(self) -> str:
        """``TURNOUT_BACKENDS`` for the fleet: one Ollama-dialect and one OpenAI-dialect backend."""
        return f"fleet-ollama:ollama={self.ollama_url},fleet-openai:openai={self.openai_url}"


@dataclass
class StackConfig:
    redis_url: str
    database_url: str
    key_prefix: str = "turnout"
    backends: str | None = None
    backends_file: str | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int | None = 8080
    ops_host: str | None = None
    ops_ports: dict[str, int] = field(default_factory=dict)
    fleet_ports: dict[str, int] | None = None
    free_ports: bool = False
    environment: str = "dev"
    log_level: str = "INFO"
    log_json: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    inherit_turnout_env: bool = True
    python: str = sys.executable
    cwd: Path | None = None

    def port_for(self, name: str) -> int:
        spec = SERVICES[name]
        if name == "gateway" and self.gateway_port is not None:
            return self.gateway_port
        if name in self.ops_ports:
            return self.ops_ports[name]
        if self.free_ports:
            port = free_port()
            self.ops_ports[name] = port
            return port
        return spec.default_port


@dataclass
class StackUrls:
    gateway: str
    ops: dict[str, str]
    fleet: FleetInfo | None

    @property
    def openai_base(self) -> str:
        return f"{self.gateway}/v1"


class Proc:
    """One child process, its output pump, and the last lines it printed."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], sink: Sink, tail: int = 200) -> None:
        self.name = name
        self.popen = popen
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.expected_exit = False
        self._sink = sink
        self._first_json: dict[str, Any] | None = None
        self._first_json_seen = threading.Event()
        self._pump = threading.Thread(target=self._read, name=f"pump-{name}", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            if not self._first_json_seen.is_set() and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict) and "ports" in obj:
                        self._first_json = obj
                        self._first_json_seen.set()
            with contextlib.suppress(Exception):
                self._sink(self.name, line)
        self._first_json_seen.set()  # EOF: stop waiting

    def wait_json(self, timeout: float) -> dict[str, Any] | None:
        self._first_json_seen.wait(timeout)
        return self._first_json

    def last_lines(self, n: int = 40) -> str:
        return "\n".join(list(self.tail)[-n:])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group; a process that had already died keeps counting as dead."""
        if self.popen.poll() is None:
            self.expected_exit = True
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=5)
        else:
            self.signal_group(signal.SIGKILL)  # grandchildren left in the group
        self.close()

    def close(self) -> None:
        """Close our end of its output pipe, once the pump has read it to the end (or gave up)."""
        self._pump.join(timeout=2)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def _discard(name: str, line: str) -> None:
    pass


def file_sink(log_dir: Path) -> Sink:
    """One ``<service>.log`` per service under ``log_dir`` (used by the tests). Each line is
    appended and the file closed again: a sink has no end to close files at."""
    log_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def sink(name: str, line: str) -> None:
        with lock, (log_dir / f"{name}.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    return sink


class Stack:
    def __init__(self, config: StackConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.sink: Sink = sink or _discard
        self.procs: dict[str, Proc] = {}
        self.fleet: FleetInfo | None = None
        self.llama: dict[str, Any] | None = None
        """The llama.cpp fleet's start-up line (:meth:`start_llama_fleet`), when one runs."""
        self._order: list[str] = []

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env_for(self, name: str) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        if not cfg.inherit_turnout_env:
            env = {k: v for k, v in env.items() if not k.startswith("TURNOUT_")}
        env.update(
            PYTHONUNBUFFERED="1",
            TURNOUT_ENVIRONMENT=cfg.environment,
            TURNOUT_REDIS_URL=cfg.redis_url,
            TURNOUT_DATABASE_URL=cfg.database_url,
            TURNOUT_KEY_PREFIX=cfg.key_prefix,
            TURNOUT_LOG_LEVEL=cfg.log_level,
            TURNOUT_LOG_JSON="true" if cfg.log_json else "false",
        )
        env.pop("TURNOUT_BACKENDS", None)
        env.pop("TURNOUT_BACKENDS_FILE", None)
        if cfg.backends_file:
            env["TURNOUT_BACKENDS_FILE"] = cfg.backends_file
        elif self.backends_value:
            env["TURNOUT_BACKENDS"] = self.backends_value
        if name in SERVICES:
            spec = SERVICES[name]
            env[spec.port_env] = str(cfg.port_for(name))
            host = cfg.gateway_host if name == "gateway" else cfg.ops_host
            if spec.host_env and host:
                env[spec.host_env] = host
        if name == "gpu-agent" and self.fleet is not None:
            # the agent watches the local Ollama: on the dev box that is the simulated fleet's
            # Ollama listener, published under that listener's host label
            env["TURNOUT_GPU_AGENT__BACKEND"] = "fleet-ollama"
            label = (self.fleet.raw.get("host_labels") or {}).get("ollama")
            if label:
                env["TURNOUT_GPU_AGENT__HOST"] = str(label)
            # a simulated GPU sized like the listener's VRAM budget, unless told otherwise
            env.setdefault("TURNOUT_GPU_AGENT__READERS", '["simulated"]')
        env.update(cfg.extra_env)
        return env

    @property
    def backends_value(self) -> str | None:
        if self.config.backends:
            return self.config.backends
        if self.llama is not None:
            return str(self.llama["backends"])
        return self.fleet.backends_value() if self.fleet is not None else None

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Proc:
        old = self.procs.get(name)
        if old is not None and old.returncode is None:
            raise StackError(f"{name} is already running (pid {old.pid})")
        if old is not None:
            old.close()  # a restart: the dead process's pipe is ours to close
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=self.config.cwd,
            start_new_session=True,
            preexec_fn=orphan_guard(),
        )
        proc = Proc(name, popen, self.sink)
        self.procs[name] = proc
        if name not in self._order:
            self._order.append(name)
        return proc

    def start_fleet(self, extra_args: list[str] | None = None, timeout: float = 30.0) -> FleetInfo:
        """Start the simulated fleet and read the ports it bound from its first JSON stdout line."""
        cfg = self.config
        ports = cfg.fleet_ports or ({"ollama": 0, "openai": 0} if cfg.free_ports else dict(FLEET_DEFAULT_PORTS))
        argv = [cfg.python, "-m", FLEET_MODULE, "--host", "127.0.0.1", "--ollama-port", str(ports["ollama"]),
                "--openai-port", str(ports["openai"]), *(extra_args or [])]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")} | {"PYTHONUNBUFFERED": "1"}
        proc = self._spawn(FLEET, argv, env)
        info = proc.wait_json(timeout)
        if info is None:
            proc.stop()
            raise StackError(f"the simulated fleet did not report its ports:\n{proc.last_lines()}")
        self.fleet = parse_fleet_line(info)
        return self.fleet

    def start_llama_fleet(self, fleet: str = "default", timeout: float = 900.0) -> dict[str, Any]:
        """Start ``python -m turnout.llamafleet run`` (real llama.cpp servers; run ``prepare``
        first, it may compile llama.cpp) and read its JSON line: ``backends`` becomes the
        services' ``TURNOUT_BACKENDS``."""
        argv = [self.config.python, "-m", LLAMA_MODULE, "run", "--fleet", fleet, "--host", "127.0.0.1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")} | {"PYTHONUNBUFFERED": "1"}
        proc = self._spawn(LLAMA, argv, env)
        info = proc.wait_json(timeout)
        if info is None or not info.get("backends"):
            proc.stop()
            raise StackError(f"the llama.cpp fleet did not report its backends:\n{proc.last_lines()}")
        self.llama = info
        return info

    def start_service(self, name: str) -> Proc:
        spec = SERVICES[name]
        return self._spawn(name, [self.config.python, "-m", spec.module], self.env_for(name))

    def start_services(self, names: tuple[str, ...] | None = None) -> None:
        for name in names or tuple(SERVICES):
            self.start_service(name)

    def restart(self, name: str, timeout: float = 60.0) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            proc.stop()
        self.start_service(name)
        self.wait_service(name, timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one service on purpose (tests): it is not reported as dead."""
        proc = self.procs[name]
        proc.expected_exit = True
        proc.signal_group(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every process group (gateway first, fleet last), SIGKILL stragglers."""
        for name in reversed(self._order):
            proc = self.procs.get(name)
            if proc is not None and proc.returncode is None:
                proc.expected_exit = True
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in reversed(self._order):
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop(timeout=max(deadline - time.monotonic(), 0.1))

    def dead(self) -> list[tuple[str, int]]:
        """Services that exited without being asked to."""
        return [
            (name, rc)
            for name, proc in self.procs.items()
            if not proc.expected_exit and (rc := proc.returncode) is not None
        ]

    # --- readiness -----------------------------------------------------------------------

    def urls(self) -> StackUrls:
        cfg = self.config
        host = "localhost" if cfg.gateway_host in ("0.0.0.0", "::", "") else cfg.gateway_host
        return StackUrls(
            gateway=f"http://{host}:{cfg.port_for('gateway')}",
            ops={n: f"http://127.0.0.1:{cfg.port_for(n)}" for n in SERVICES if n != "gateway" and n in self.procs},
            fleet=self.fleet,
        )

    def wait_service(self, name: str, timeout: float = 60.0, *, path: str | None = None) -> None:
        spec = SERVICES[name]
        urls = self.urls()
        base = urls.gateway if name == "gateway" else urls.ops[name]
        self._wait_http(name, base + (path or spec.ready_path), timeout)

    def wait_ready(
        self,
        timeout: float = 90.0,
        names: tuple[str, ...] | None = None,
        *,
        strict: bool = True,
        required: tuple[str, ...] | None = None,
    ) -> StackUrls:
        """Wait until every started service is ready, the gateway last.

        ``strict``: every service must answer ``/ready``; otherwise the workers need only answer
        ``/health`` (the launcher reports their readiness afterwards) and the gateway ``/ready``.
        ``required``: the services whose death while starting raises :class:`StackError`
        (default: all); the others that die are skipped, and :meth:`dead` reports them.
        """
        deadline = time.monotonic() + timeout
        todo = [n for n in (names or tuple(SERVICES)) if n in self.procs]
        todo.sort(key=lambda n: n == "gateway")
        for name in todo:
            path = None if strict or name == "gateway" else "/health"
            try:
                self.wait_service(name, timeout=max(deadline - time.monotonic(), 1.0), path=path)
            except StackError:
                if required is None or name in required or self.procs[name].returncode is None:
                    raise
        return self.urls()

    def not_ready(self) -> dict[str, str]:
        """Services whose ``/ready`` does not answer 200 right now, with what it said."""
        out: dict[str, str] = {}
        urls = self.urls()
        for name, proc in self.procs.items():
            if name not in SERVICES or proc.returncode is not None:
                continue
            base = urls.gateway if name == "gateway" else urls.ops[name]
            status, body = http_get(base + SERVICES[name].ready_path, timeout=2.0)
            if status != 200:
                out[name] = f"HTTP {status}: {body[:200]}" if status else body
        return out

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise StackError(f"{name} exited with code {proc.returncode} while starting:\n{proc.last_lines()}")
            status, body = http_get(url, timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:300]}" if status else body
            time.sleep(0.2)
        raise StackError(f"{name} is not ready at {url} after {timeout:.0f}s ({last}):\n{proc.last_lines()}")

    def wait_models(self, min_models: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait until the gateway lists at least ``min_models`` real models (discovery has run)."""
        url = self.urls().gateway + "/v1/models"
        deadline = time.monotonic() + timeout
        names: list[str] = []
        while time.monotonic() < deadline:
            status, body = http_get(url, timeout=2.0)
            if status == 200:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    names = [m["id"] for m in json.loads(body).get("data", [])]
                    real = [n for n in names if not n.startswith("turnout/")]
                    if len(real) >= min_models:
                        return names
            time.sleep(0.3)
        raise StackError(f"the gateway lists {names} after {timeout:.0f}s; expected {min_models} real model(s)")


def parse_fleet_line(obj: Mapping[str, Any]) -> FleetInfo:
    """Read the fleet's start-up line ``{"ports": {"ollama": P1, "openai": P2}, "host": ...}``."""
    ports = obj.get("ports") or {}
    host = obj.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    urls = obj.get("urls") or {}
    ollama = urls.get("ollama") or f"http://{host}:{ports['ollama']}"
    openai = urls.get("openai") or f"http://{host}:{ports['openai']}/v1"
    admin = urls.get("admin") or f"http://{host}:{ports.get('admin', ports['ollama'])}"
    return FleetInfo(ollama_url=ollama, openai_url=openai, admin_url=admin, raw=dict(obj))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) — status 0 with the reason when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.stop()
