"""Run model-written Python against unit tests in a throw-away subprocess.

Isolation, in layers (none of it is a security boundary against a determined attacker; it keeps
ordinary model code from hurting the worker or reaching out):

* ``python -I`` (isolated mode: no user site, no ``PYTHON*`` variables), a scrubbed environment
  (``PATH``, ``LANG``, ``HOME`` pointing at the temporary directory), the temporary directory as
  working directory, deleted afterwards;
* resource limits set in the child before ``exec``: CPU seconds, address space, file size, open
  files, no core dumps; its own session, so a timeout kills the whole process group;
* no network: ``unshare -n`` (a fresh network namespace with only a down loopback) when the
  kernel allows it — tried once, as root, then ``unshare -rn`` (user namespace) — and, always,
  ``socket`` patched in the harness to raise, so the code sees a clear ``OSError`` either way;
* a wall-clock timeout; the harness reports ``passed/total`` on a line tagged with a random nonce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 256 * 1024

_HARNESS = """\
import json, socket, sys
def _no_network(*a, **k):
    raise OSError("network access is disabled in the sandbox")
socket.socket = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
TESTS = json.loads({tests!r})
MARK = {mark!r}
def report(passed, failures, error=None):
    sys.stdout.write("\\n" + MARK + json.dumps(
        {{"passed": passed, "total": len(TESTS), "failures": failures[:5], "error": error}}) + "\\n")
    sys.stdout.flush()
ns = {{"__name__": "solution"}}
try:
    with open("solution.py", encoding="utf-8") as f:
        exec(compile(f.read(), "solution.py", "exec"), ns)
except BaseException as e:
    report(0, [], "solution failed to load: %s: %s" % (type(e).__name__, e))
    sys.exit(0)
passed = 0
failures = []
for i, test in enumerate(TESTS):
    try:
        exec(compile(test, "test_%d" % i, "exec"), dict(ns))
        passed += 1
    except BaseException as e:
        failures.append("test %d: %s: %s" % (i, type(e).__name__, str(e)[:200]))
report(passed, failures)
"""


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What running code against its tests gave: passed of total, timeout, error, failures."""

    passed: int
    total: int
    timed_out: bool = False
    error: str | None = None
    failures: tuple[str, ...] = ()
    network_isolated: bool = False

    @property
    def score(self) -> float:
        """The share of tests passed."""
        return self.passed / self.total if self.total else 0.0


@lru_cache(maxsize=1)
def network_namespace_prefix() -> tuple[str, ...]:
    """``unshare`` arguments that give the child an empty network namespace, or ``()``."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for args in ((exe, "-n"), (exe, "-rn")):
        try:
            ok = subprocess.run([*args, "--", "true"], capture_output=True, timeout=5).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return args
    log.info("sandbox: unshare cannot create a network namespace here; relying on the socket guard")
    return ()


class CodeSandbox:
    """Runs untrusted code in a subprocess with memory, time and (where possible) network limits."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        memory_mb: int = 512,
        isolate_network: bool = True,
    ) -> None:
        self.python = python
        self.memory_mb = memory_mb
        self.isolate_network = isolate_network

    async def run(self, code: str, tests: Sequence[str], *, timeout_s: float = 10.0) -> SandboxResult:
        """Run ``code`` with ``tests`` in a fresh directory; each test's pass or failure."""
        mark = f"__TURNOUT_RESULT_{secrets.token_hex(8)}__"
        prefix = network_namespace_prefix() if self.isolate_network else ()
        with tempfile.TemporaryDirectory(prefix="sy-sandbox-") as tmp:
            Path(tmp, "solution.py").write_text(code, encoding="utf-8")
            Path(tmp, "harness.py").write_text(
                _HARNESS.format(tests=json.dumps(list(tests)), mark=mark), encoding="utf-8"
            )
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp}
            cpu_s = int(timeout_s) + 1
            memory = self.memory_mb * 1024 * 1024
            proc = await asyncio.create_subprocess_exec(
                *prefix,
                self.python,
                "-I",
                "harness.py",
                cwd=tmp,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=lambda: _limit(cpu_s, memory),
            )
            try:
                async with asyncio.timeout(timeout_s):
                    out, err = await proc.communicate()
            except TimeoutError:
                _kill(proc)
                await proc.wait()
                return SandboxResult(0, len(tests), timed_out=True, error="timed out", network_isolated=bool(prefix))
            finally:
                if proc.returncode is None:
                    _kill(proc)
        return _parse(out[-_OUTPUT_LIMIT:], err[-4096:], mark, len(tests), proc.returncode, bool(prefix))


def _limit(cpu_s: int, memory: int) -> None:  # runs in the child, before exec
    import resource

    for res, value in (
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_FSIZE, 8 * 1024 * 1024),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _parse(out: bytes, err: bytes, mark: str, total: int, rc: int | None, isolated: bool) -> SandboxResult:
    text = out.decode("utf-8", "replace")
    line = next((ln for ln in reversed(text.splitlines()) if ln.startswith(mark)), None)
    if line is None:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {rc}"]
        return SandboxResult(0, total, error=f"no result: {tail[0][:300]}", network_isolated=isolated)
    try:
        data = json.loads(line[len(mark) :])
        return SandboxResult(
            passed=int(data["passed"]),
            total=int(data["total"]),
            error=data.get("error"),
            failures=tuple(data.get("failures") or ()),
            network_isolated=isolated,
        )
    except (ValueError, KeyError, TypeError):
        return SandboxResult(0, total, error="unreadable result line", network_isolated=isolated)
