"""Every service command answers ``--help`` and ``--version`` and starts nothing.

The console scripts' entry points (as installed: ``importlib.metadata``) are called in-process
with the settings pointing where nothing listens: a command that started would hang or raise
instead of exiting 0 at once. One real process per kind (``python -m``) shows the same from
outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

COMMANDS = (
    "turnout-gateway",
    "turnout-scorer",
    "turnout-profiler",
    "turnout-sync",
    "turnout-gpu-agent",
    "turnout-devstack",
    "turnout-fakefleet",
)
NOWHERE = {"TURNOUT_REDIS_URL": "redis://127.0.0.1:1/0", "TURNOUT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}


@pytest.fixture(autouse=True)
def _nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NOWHERE.items():
        monkeypatch.setenv(name, value)


def _entry(script: str):  # type: ignore[no-untyped-def]
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == script]
    return ep.load()


@pytest.mark.parametrize("script", COMMANDS)
def test_console_script_answers_version(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _entry(script)(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"{script} 0.1.0"


@pytest.mark.parametrize("script", COMMANDS)
def test_console_script_answers_help(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _entry(script)(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--version" in out


SERVICES = ("turnout.gateway", "turnout.scorer", "turnout.profiler", "turnout.sync", "turnout.gpu_agent")

# Runs ``python -m <module> --help`` in this process, then writes the modules it had loaded to stderr.
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exited:
    print(json.dumps({"code": exited.code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.mark.parametrize("module", SERVICES)
def test_a_real_process_answers_help_and_exits(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **NOWHERE}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and done.stderr == ""


@pytest.mark.parametrize("module", SERVICES)
def test_help_is_answered_before_the_service_is_imported(module: str) -> None:
    """``--help`` loads the service's package and ``__main__`` and the shared command line, nothing
    of the app: no settings, no framework, no numpy (it took 4-6 s when the app came first)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        capture_output=True, text=True, timeout=60, env={**os.environ, **NOWHERE}, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("usage: ")
    report = json.loads(done.stderr)
    assert report["code"] == 0
    ours = {m for m in report["modules"] if m.startswith("turnout")}
    assert ours == {"turnout", "turnout.common", "turnout.common.cli", module}
    heavy = {"pydantic", "pydantic_settings", "fastapi", "numpy", "sqlalchemy", "arq", "redis", "aiohttp", "asyncio"}
    assert heavy.isdisjoint(report["modules"])


def test_an_unknown_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _entry("turnout-profiler")(["--bogus"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
