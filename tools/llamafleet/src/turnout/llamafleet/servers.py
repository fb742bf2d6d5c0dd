"""llama.cpp servers as processes: one ``python -m llama_cpp.server`` per model, on free ports.

::

    with LlamaFleet(FLEETS["default"]) as fleet:
        env["TURNOUT_BACKENDS"] = fleet.backends_value
        # llama-smol:openai=http://127.0.0.1:41235/v1,llama-tiny:openai=...,llama-big:openai=...

One process per model (not ``--config_file``, which keeps one model loaded at a time and swaps):
each backend is then an independent replica that can be killed or slowed alone. Every server
runs with a small context, one or two threads, ``interrupt_requests`` off (a new request waits
for the running one instead of cutting it short) and a scrubbed environment (llama_cpp.server
reads ``HOST``, ``PORT``, ``MODEL``… from the environment). A server is ready when
``/v1/models`` lists its alias; it is then warmed with a one-token completion so that the
first real request does not pay for lazy initialisation. Its output goes to
``.run/llama/logs/<backend>.log``. Each server is its own process group and gets SIGTERM when
the process that started it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.llamafleet.errors import ServerError
from turnout.llamafleet.install import (
    LlamaHome,
    Progress,
    Runtime,
    ensure_runtime,
    stderr_progress,
    tail,
)
from turnout.llamafleet.models import (
    RAND_6M,
    RAND_600M,
    SMOLLM2,
    ModelSpec,
    ensure_models,
)

_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True, slots=True)
class Member:
    """One server of a fleet: the backend name it is known by and the model it serves."""

    backend: str
    model: ModelSpec
    n_ctx: int = 2048
    n_threads: int = 1
    n_gpu_layers: int = 0
    """Layers offloaded to the GPU (99: all; 0: CPU only, what the CPU wheel can do)."""


FLEETS: dict[str, tuple[Member, ...]] = {
    # make run with TURNOUT_FLEET=llama: a real small chat model and two stand-ins
    "default": (
        Member("llama-smol", SMOLLM2),
        Member("llama-tiny", RAND_6M),
        Member("llama-big", RAND_600M),
    ),
    # the e2e tier: the same plus a second SmolLM2 replica (one can die, the other serves)
    "e2e": (
        Member("llama-smol", SMOLLM2),
        Member("llama-smol-b", SMOLLM2),
        Member("llama-tiny", RAND_6M),
        Member("llama-big", RAND_600M),
    ),
    # the quickest real fleet: one 6M model (seconds to start)
    "tiny": (Member("llama-tiny", RAND_6M),),
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _no_orphans() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when its parent dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON or text); status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class LlamaServer:
    """One ``llama_cpp.server`` process serving one model under its alias; with ``binary``, that
    llama.cpp ``llama-server`` executable instead (e.g. a CUDA build on a GPU host: the same
    OpenAI-compatible API, ``/v1/models`` lists the alias)."""

    def __init__(
        self,
        runtime: Runtime | None,
        member: Member,
        model_path: Path,
        *,
        log_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        if runtime is None and binary is None:
            raise ValueError("a llama.cpp server needs the llama-cpp-python runtime or a llama-server binary")
        self.runtime = runtime
        self.binary = binary
        self.member = member
        self.model_path = model_path
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_dir / f"{member.backend}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def backend(self) -> str:
        return self.member.backend

    @property
    def alias(self) -> str:
        return self.member.model.alias

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (``…/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def backend_entry(self) -> str:
        """This server as one ``TURNOUT_BACKENDS`` entry: ``name:openai=url``."""
        return f"{self.backend}:openai={self.url}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def argv(self) -> list[str]:
        m = self.member
        if self.binary is not None:
            return [
                str(self.binary), "-m", str(self.model_path), "-a", self.alias,
                "--host", self.host, "--port", str(self.port),
                "-c", str(m.n_ctx), "-t", str(m.n_threads), "-ngl", str(m.n_gpu_layers),
            ]  # fmt: skip
        assert self.runtime is not None
        gpu = ["--n_gpu_layers", str(m.n_gpu_layers)] if m.n_gpu_layers else []
        return [
            str(self.runtime.python), "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", self.alias,
            "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(m.n_ctx), "--n_threads", str(m.n_threads), "--n_threads_batch", str(m.n_threads),
            "--interrupt_requests", "false", "--logits_all", "false", *gpu,
        ]  # fmt: skip

    def start(self) -> None:
        if self.alive:
            raise ServerError(f"{self.backend} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv())}\n".encode())
            self.popen = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,
                preexec_fn=_no_orphans,
            )

    def poll_ready(self) -> bool:
        """True once ``/v1/models`` lists the alias; raises if the process has exited."""
        if self.popen is None:
            raise ServerError(f"{self.backend} was not started")
        if self.popen.poll() is not None:
            raise ServerError(
                f"llama.cpp server {self.backend} ({self.alias}) exited with code {self.popen.returncode} "
                f"while starting; last lines of {self.log_path}:\n{tail(self.log_path)}"
            )
        status, body = http_json(f"{self.url}/models", timeout=2.0)
        if status != 200 or not isinstance(body, dict):
            return False
        return any(m.get("id") == self.alias for m in body.get("data", []))

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > deadline:
                raise ServerError(
                    f"llama.cpp server {self.backend} ({self.alias}) not ready at {self.url} after {timeout:.0f}s; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.2)

    def warm(self, timeout: float = 60.0) -> None:
        """One one-token completion, so the first real request is not the slow one."""
        body = {"model": self.alias, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        status, reply = http_json(f"{self.url}/completions", body, timeout=timeout)
        if status != 200:
            raise ServerError(f"{self.backend}: warm-up completion failed: HTTP {status}: {str(reply)[:300]}")

    def _signal(self, sig: int) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._signal(signal.SIGKILL)  # anything left in the group

    def kill(self) -> None:
        """SIGKILL at once (what a crash looks like to clients)."""
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.alias,
            "url": self.url,
            "port": self.port,
            "pid": self.pid,
            "params": self.member.model.params,
            "file": str(self.model_path),
            "n_ctx": self.member.n_ctx,
            "n_threads": self.member.n_threads,
            "log": str(self.log_path),
        }


class LlamaFleet:
    """Several llama.cpp servers started together; ``backends_value`` is their TURNOUT_BACKENDS."""

    def __init__(
        self,
        members: Sequence[Member] = FLEETS["default"],
        *,
        home: LlamaHome | None = None,
        host: str = "127.0.0.1",
        allow_build: bool = True,
        warm: bool = True,
        ready_timeout: float = 180.0,
        progress: Progress = stderr_progress,
    ) -> None:
        names = [m.backend for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        self.members = tuple(members)
        self.home = home or LlamaHome.default()
        self.host = host
        self.allow_build = allow_build
        self.warm = warm
        self.ready_timeout = ready_timeout
        self.progress = progress
        self.runtime: Runtime | None = None
        self.model_paths: dict[str, Path] = {}
        self.servers: dict[str, LlamaServer] = {}

    def prepare(self) -> Runtime:
        """Install the runtime and fetch or generate the models (no server is started)."""
        if self.runtime is None:
            runtime = ensure_runtime(self.home, allow_build=self.allow_build, progress=self.progress)
            specs = {m.model.alias: m.model for m in self.members}
            self.model_paths = ensure_models(
                specs.values(), self.home, pip_python=runtime.python, progress=self.progress
            )
            self.runtime = runtime
        return self.runtime

    def start(self) -> LlamaFleet:
        runtime = self.prepare()
        try:
            for m in self.members:
                server = LlamaServer(
                    runtime, m, self.model_paths[m.model.alias], log_dir=self.home.logs, host=self.host
                )
                self.servers[m.backend] = server
                server.start()
            self._wait_all(list(self.servers.values()))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_all(self, servers: list[LlamaServer]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(servers)
        while pending:
            pending = [s for s in pending if not s.poll_ready()]
            if pending and time.monotonic() > deadline:
                s = pending[0]
                raise ServerError(
                    f"llama.cpp server {s.backend} ({s.alias}) not ready at {s.url} after {self.ready_timeout:.0f}s; "
                    f"last lines of {s.log_path}:\n{tail(s.log_path)}"
                )
            if pending:
                time.sleep(0.2)
        if self.warm:
            for s in servers:
                s.warm()

    def restart(self, backend: str) -> LlamaServer:
        """Start a stopped or killed server again, on the same port."""
        server = self.servers[backend]
        server.stop()
        server.start()
        self._wait_all([server])
        return server

    def stop(self) -> None:
        for server in self.servers.values():
            if server.alive:
                server._signal(signal.SIGTERM)
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> LlamaFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def backends_value(self) -> str:
        """``TURNOUT_BACKENDS`` for the running servers, e.g. ``llama-tiny:openai=http://127.0.0.1:P/v1``."""
        return ",".join(s.backend_entry for s in self.servers.values())

    def models(self) -> dict[str, str]:
        """Backend name → served model name."""
        return {b: s.alias for b, s in self.servers.items()}

    def describe(self) -> dict[str, Any]:
        """The start-up line of ``python -m turnout.llamafleet``."""
        return {
            "backends": self.backends_value,
            "host": self.host,
            "ports": {b: s.port for b, s in self.servers.items()},
            "servers": [s.describe() for s in self.servers.values()],
            "llama_cpp": self.runtime.version if self.runtime else None,
        }
