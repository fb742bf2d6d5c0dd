"""schemathesis over ``/openapi.json`` of a real in-process gateway (fake backends, a scorer stand-in,
real Redis and Postgres): a bounded number of generated requests per operation, positive and
negative, and not one answer may be a 5xx (``not_a_server_error``)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, Fleet, fixed, run_gateway

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

MAX_EXAMPLES = 3
"""Per operation and phase: bounded so that the run takes well under a minute on the 2-core box."""

HALVES = (
    ("--include-path-regex", "^/v1/"),
    ("--include-path-regex", "^/api/"),
    ("--exclude-path-regex", "^/(v1|api)/"),
)
"""The operations split between three schemathesis processes run side by side, one worker each: its
``--workers 2`` threads hit CPython 3.11.7's AST recursion-depth bug (gh-106905: two threads in
``ast.parse`` through hypothesis' lambda descriptions raised ``SystemError: AST constructor
recursion depth mismatch``, a runtime error that failed a full run); processes share no
interpreter state. Measured with a JUnit report: ``/v1/`` 14 s, ``/api/`` 7 s, the rest 13 s."""

EXCLUDED = ("/metrics", "/admin/live")
"""``/metrics`` is text, not JSON (the ops tests cover it). ``/admin/live`` is an event stream
that lasts up to ``LIVE_MAX_S`` by design: its generated valid requests held the run 158 of its
175 s; ``test_dashboard.py`` tests its parameters and framing directly."""


async def _schemathesis(url: str, report_dir: Path, half: tuple[str, str]) -> tuple[int, str]:
    report_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        "--no-shrink",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        *half,
        *(arg for path in EXCLUDED for arg in ("--exclude-path", path)),
        "--report-dir",
        str(report_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=report_dir,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.timeout(240)
async def test_no_generated_request_gets_a_5xx(redis_url, keys, fleet: Fleet, make_settings, tmp_path: Path):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b"), ("fake-8b", "olla", "llama3.2:3b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        runs = await asyncio.gather(*(_schemathesis(gw.url, tmp_path / f"half{i}", h) for i, h in enumerate(HALVES)))
    tested, total = 0, set()
    for half, (code, text) in zip(HALVES, runs, strict=True):
        assert code == 0, (half, text[-6000:])
        assert "Server error" not in text, half
        selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", text)
        assert selected, (half, text[-2000:])
        tested += int(selected[3])
        total.add(int(selected[2]))
    # between them the three runs tested every operation but the excluded ones
    assert len(total) == 1 and tested == total.pop() - len(EXCLUDED), (tested, total)
