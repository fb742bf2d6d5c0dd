"""The launcher's building blocks: the fleet's start-up line, each service's environment, and
process groups that stop (and report deaths) as they should."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from turnout.devstack.infra import InfraError, ensure_redis, free_port, plain_pg_url, with_database
from turnout.devstack.restart import Restarter
from turnout.devstack.stack import SERVICES, FleetInfo, Proc, Stack, StackConfig, parse_fleet_line

LINE = {
    "fakefleet": 1,
    "host": "127.0.0.1",
    "ports": {"ollama": 41001, "openai": 41002, "admin": 41001},
    "urls": {
        "ollama": "http://127.0.0.1:41001",
        "openai": "http://127.0.0.1:41002/v1",
        "admin": "http://127.0.0.1:41001",
    },
    "host_labels": {"ollama": "fleet-gpu-0", "openai": "fleet-gpu-1"},
}


def config(**over: object) -> StackConfig:
    args: dict[str, object] = {
        "redis_url": "redis://127.0.0.1:1/0",
        "database_url": "postgresql+asyncpg://u@127.0.0.1:1/db",
        "key_prefix": "t",
        "gateway_port": 18080,
        "ops_ports": {"scorer": 19101, "profiler": 19102, "sync": 19103, "gpu-agent": 19104},
        "inherit_turnout_env": False,
    }
    args.update(over)
    return StackConfig(**args)  # type: ignore[arg-type]


def test_the_fleet_line_gives_urls_and_the_backends_value() -> None:
    info = parse_fleet_line(LINE)
    assert (info.ollama_url, info.openai_url, info.admin_url) == (
        "http://127.0.0.1:41001",
        "http://127.0.0.1:41002/v1",
        "http://127.0.0.1:41001",
    )
    assert (
        info.backends_value()
        == "fleet-ollama:ollama=http://127.0.0.1:41001,fleet-openai:openai=http://127.0.0.1:41002/v1"
    )


def test_a_fleet_line_with_ports_only_is_enough() -> None:
    info = parse_fleet_line({"host": "0.0.0.0", "ports": {"ollama": 1, "openai": 2}})
    assert (info.ollama_url, info.openai_url, info.admin_url) == (
        "http://127.0.0.1:1",
        "http://127.0.0.1:2/v1",
        "http://127.0.0.1:1",
    )


def test_each_service_gets_the_shared_settings_and_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_ADMIN_KEY", "from-outside")
    stack = Stack(config(ops_host="127.0.0.1", extra_env={"TURNOUT_GATEWAY__MAX_ATTEMPTS": "2"}))
    stack.fleet = parse_fleet_line(LINE)
    env = stack.env_for("scorer")
    assert {k: v for k, v in env.items() if k.startswith("TURNOUT_")} == {
        "TURNOUT_ENVIRONMENT": "dev",
        "TURNOUT_REDIS_URL": "redis://127.0.0.1:1/0",
        "TURNOUT_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1:1/db",
        "TURNOUT_KEY_PREFIX": "t",
        "TURNOUT_LOG_LEVEL": "INFO",
        "TURNOUT_LOG_JSON": "true",
        "TURNOUT_BACKENDS": "fleet-ollama:ollama=http://127.0.0.1:41001,fleet-openai:openai=http://127.0.0.1:41002/v1",
        "TURNOUT_SCORER__OPS_PORT": "19101",
        "TURNOUT_SCORER__OPS_HOST": "127.0.0.1",
        "TURNOUT_GATEWAY__MAX_ATTEMPTS": "2",
    }
    assert env["PYTHONUNBUFFERED"] == "1"
    assert stack.env_for("gateway")["TURNOUT_GATEWAY__PORT"] == "18080"
    agent = stack.env_for("gpu-agent")
    assert (agent["TURNOUT_GPU_AGENT__BACKEND"], agent["TURNOUT_GPU_AGENT__HOST"]) == (
        "fleet-ollama",
        "fleet-gpu-0",
    )
    assert agent["TURNOUT_GPU_AGENT__READERS"] == '["simulated"]'


def test_configured_backends_win_over_the_fleet_and_inherit_keeps_outside_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TURNOUT_GATEWAY__API_KEYS", "k1")
    stack = Stack(config(backends="ollama=http://gpu1:11434", inherit_turnout_env=True))
    env = stack.env_for("gateway")
    assert env["TURNOUT_BACKENDS"] == "ollama=http://gpu1:11434"
    assert env["TURNOUT_GATEWAY__API_KEYS"] == "k1"
    assert "TURNOUT_GPU_AGENT__BACKEND" not in stack.env_for("gpu-agent")


def test_free_ports_are_picked_once_per_service() -> None:
    cfg = config(ops_ports={}, free_ports=True)
    port = cfg.port_for("sync")
    assert port != SERVICES["sync"].default_port
    assert cfg.port_for("sync") == port


def _gone(pid: int, timeout: float) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stop_ends_the_whole_process_group_and_dead_reports_only_unexpected_exits(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    stack = Stack(config(cwd=tmp_path), sink=lambda name, line: lines.append((name, line)))
    # a parent that starts a grandchild in its group, and one that dies on its own
    pidfile = tmp_path / "grandchild.pid"
    parent = stack._spawn(
        "scorer",
        _python(
            "import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print('up', flush=True); time.sleep(60)"
        ),
        os.environ,
    )
    stack._spawn("sync", _python("print('bye', flush=True); raise SystemExit(3)"), os.environ)
    deadline = time.monotonic() + 20
    while (not pidfile.exists() or stack.procs["sync"].returncode is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    assert stack.dead() == [("sync", 3)]
    grandchild = int(pidfile.read_text())
    stack.stop(timeout=5)
    assert parent.returncode == -signal.SIGTERM
    assert _gone(grandchild, timeout=5)
    assert ("scorer", "up") in lines and ("sync", "bye") in lines
    assert stack.dead() == [("sync", 3)]


def test_a_killed_service_is_not_reported_as_dead(tmp_path: Path) -> None:
    stack = Stack(config(cwd=tmp_path))
    stack._spawn("scorer", _python("import time; time.sleep(60)"), os.environ)
    stack.kill("scorer")
    assert stack.procs["scorer"].returncode == -signal.SIGKILL
    assert stack.dead() == []
    stack.stop()


def test_explicit_redis_url_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(InfraError, match=r"TURNOUT_REDIS_URL=redis://127.0.0.1:\d+/0 does not answer"):
        ensure_redis(url, tmp_path, explicit=True)


def test_default_redis_that_does_not_answer_is_replaced_by_a_private_one(tmp_path: Path) -> None:
    inst = ensure_redis(f"redis://127.0.0.1:{free_port()}/0", tmp_path, explicit=False)
    try:
        assert inst.private
        assert inst.url.startswith("redis://127.0.0.1:")
        assert ensure_redis(inst.url, tmp_path, explicit=True).private is False  # now it answers
    finally:
        inst.stop()


def test_postgres_url_helpers() -> None:
    assert plain_pg_url("postgresql+asyncpg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert with_database("postgresql://u@h:5/db", "postgres") == "postgresql://u@h:5/postgres"


def test_fleet_info_is_plain_data() -> None:
    info = FleetInfo("http://a", "http://b/v1", "http://a")
    assert info.backends_value() == "fleet-ollama:ollama=http://a,fleet-openai:openai=http://b/v1"


def test_a_service_that_exits_unexpectedly_is_restarted_with_growing_back_off(tmp_path: Path) -> None:
    class TinyStack(Stack):
        def start_service(self, name: str) -> Proc:  # a stand-in service that exits with 3 at once
            return self._spawn(name, _python("print('boom', flush=True); raise SystemExit(3)"), os.environ)

    now = [1000.0]
    said: list[str] = []
    stack = TinyStack(config(cwd=tmp_path))
    restarter = Restarter(stack, said.append, base_s=1.0, max_s=30.0, healthy_after_s=60.0, clock=lambda: now[0])
    delays = []
    stack.start_service("sync")
    for n in range(1, 4):
        stack.procs["sync"].popen.wait(timeout=20)
        stack.procs["sync"]._pump.join(timeout=5)
        restarter.tick()
        why = next(m for m in said if m.startswith("sync exited unexpectedly (exit code 3); restarting it in "))
        delays.append(float(why.split(" in ")[1].split("s.")[0]))
        said.clear()
        restarter.tick()  # not due yet: nothing happens
        assert restarter.restarts.get("sync", 0) == n - 1
        now[0] += 31
        restarter.tick()
        assert restarter.restarts["sync"] == n
    stack.stop()
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0


def test_a_service_stopped_on_purpose_is_not_restarted(tmp_path: Path) -> None:
    stack = Stack(config(cwd=tmp_path))
    stack._spawn("scorer", _python("import time; time.sleep(60)"), os.environ)
    stack.kill("scorer")
    restarter = Restarter(stack, lambda _: None, clock=lambda: 1e9)
    restarter.tick()
    restarter.tick()
    assert restarter.restarts == {}
    stack.stop()


def test_make_run_settings_give_way_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from turnout.devstack.__main__ import _dev_env

    monkeypatch.delenv("TURNOUT_GATEWAY__PRESTOP_DELAY_S", raising=False)
    monkeypatch.delenv("TURNOUT_GATEWAY__REQUEST_LOG__ENABLED", raising=False)
    assert _dev_env() == {"TURNOUT_GATEWAY__REQUEST_LOG__ENABLED": "true", "TURNOUT_GATEWAY__PRESTOP_DELAY_S": "0"}
    monkeypatch.setenv("TURNOUT_GATEWAY__PRESTOP_DELAY_S", "5")
    assert "TURNOUT_GATEWAY__PRESTOP_DELAY_S" not in _dev_env()
