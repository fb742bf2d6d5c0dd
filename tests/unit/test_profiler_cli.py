"""``turnout profile``: enqueue through the admin API and follow progress until the queue is empty."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from turnout.profiler import cli


class FakeAdmin:
    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, str, dict[str, str] | None]] = []

    def call(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        self.calls.append((method, path, params))
        if method == "POST":
            return {"enqueued": True}
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


def running(done: int, total: int = 4) -> dict[str, Any]:
    doc = {"model": "llama3.1:8b", "backend": "local", "phase": "prompts", "done": done, "total": total}
    return {"queue": ["qwen2.5:7b"], "running": [{**doc, "current": f"p{done}", "eta_s": 3.0}]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    admin = FakeAdmin([running(1), running(3), {"queue": [], "running": []}])
    monkeypatch.setattr(cli.AdminClient, "call", lambda self, *a, **k: admin.call(*a, **k))
    return admin


def test_reprofile_one_model_forced_and_watch_until_idle(fake: FakeAdmin) -> None:
    result = CliRunner().invoke(cli.app, ["profile", "llama3.1:8b", "--force", "--watch", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert fake.calls[0] == ("POST", "/admin/reprofile", {"force": "true", "model": "llama3.1:8b"})
    assert [c[1] for c in fake.calls[1:]] == ["/admin/profiling"] * 3
    assert "llama3.1:8b" in result.output and "queue is empty" in result.output


def test_status_once_as_a_table(fake: FakeAdmin) -> None:
    result = CliRunner().invoke(cli.app, ["profile"])
    assert result.exit_code == 0, result.output
    assert "1/4" in result.output and "qwen2.5:7b" in result.output and "queued" in result.output


def test_all_models(fake: FakeAdmin) -> None:
    result = CliRunner().invoke(cli.app, ["profile", "--all"])
    assert result.exit_code == 0
    assert fake.calls == [("POST", "/admin/reprofile", {"force": "false"})]


def test_an_unreachable_gateway_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli.app, ["profile", "--url", "http://127.0.0.1:9"])
    assert result.exit_code != 0
    assert "cannot reach the gateway" in result.output
