"""The `turnout` command's output: `requests tail`'s line per finished request, the width of piped output."""

from __future__ import annotations

from rich.console import Console

from turnout.cli.commands.requests import line


def _text(markup: str) -> str:
    console = Console(width=400, no_color=True)
    with console.capture() as cap:
        console.print(markup, highlight=False)
    return cap.get().strip()


def test_a_served_request_names_model_backend_and_why():
    r = {"ts": 60, "status": 200, "request_id": "req-1", "category": "coding", "model": "m", "backend": "b"}
    out = _text(line({**r, "latency_ms": 12, "reasons": ["coder model", "loaded"]}))
    assert out == "00:01:00 200 req-1 coding → m@b 12 ms (ttft –) coder model; loaded"


def test_a_failed_request_says_its_outcome_not_none_and_no_candidates_reasons():
    r = {"ts": 60, "status": 404, "request_id": "req-2", "model": None, "backend": None, "latency_ms": 2}
    out = _text(line({**r, "outcome": "model_not_found", "requested_model": "nope:1b", "reasons": ["x"]}))
    assert out == "00:01:00 404 req-2 - → model_not_found (asked for nope:1b) 2 ms"


def test_output_to_a_pipe_is_not_squeezed_to_80_columns(monkeypatch, capsys):
    from turnout.cli.client import PIPE_WIDTH, console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == PIPE_WIDTH  # pytest's captured stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert console().width == 100


def test_narrow_category_headers_are_short_and_never_alike():
    from turnout.cli.commands.models import short_names

    assert short_names(["code", "creative", "math"]) == {"code": "code", "creative": "crea", "math": "math"}
    assert short_names(["general", "generation", "reasoning", "reading"]) == {
        "general": "general",
        "generation": "generat",
        "reasoning": "reas",
        "reading": "read",
    }
