"""schemathesis over ``/openapi.json`` of a real in-process gateway (fake backends, a scorer stand-in,
real Redis and Postgres): a bounded number of generated requests per operation, positive and
negative, and not one answer may be a 5xx (``not_a_server_error``)."""

from __future__ import annotations

import asyncio
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


@pytest.mark.timeout(240)
async def test_no_generated_request_gets_a_5xx(redis_url, keys, fleet: Fleet, make_settings, tmp_path: Path):
    scorer = FakeScorer(redis_url, keys, fixed(("fake-8b", "alpha", "gpt-fake-8b"), ("fake-8b", "olla", "llama3.2:3b")))
    async with scorer.running(), run_gateway(make_settings()) as gw:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{gw.url}/openapi.json",
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
            "2",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--exclude-path",
            "/metrics",  # text, not JSON; covered by the ops tests
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "Server error" not in text
