"""Every service command answers ``--help`` and ``--version`` and starts nothing.

The console scripts' entry points (as installed: ``importlib.metadata``) are called in-process
with the settings pointing where nothing listens: a command that started would hang or raise
instead of exiting 0 at once. One real process per kind (``python -m``) shows the same from
outside."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from turnout.common.cli import run_until_signalled

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


SERVICE_COMMANDS = ("turnout-gateway", "turnout-scorer", "turnout-profiler", "turnout-sync", "turnout-gpu-agent")


@pytest.mark.parametrize("script", SERVICE_COMMANDS)
def test_an_invalid_setting_exits_2_with_its_message(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TURNOUT_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit) as exited:
        _entry(script)([])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "invalid configuration:\n  TURNOUT_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'\n"
    )


def test_sigterm_sets_the_stop_event_and_the_service_returns() -> None:
    seen: list[str] = []

    async def serve(stop: asyncio.Event) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)  # TimeoutError when SIGTERM did not reach ``stop``
        seen.append("stopped")

    # without the loop's handler, SIGTERM lands here (and the wait times out) instead of ending pytest
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("unhandled"))
    try:
        run_until_signalled(serve)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["stopped"]
