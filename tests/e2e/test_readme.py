"""The README's examples run against the real stack (pydantic-settings' tests/test_docs.py idea)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
DOC_URL = "http://localhost:8080"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_openai_sdk_example_runs(e2e: E2E) -> None:
    (code,) = [b for b in _blocks("python") if "OpenAI(" in b and "chat.completions" in b]
    r = subprocess.run(
        [sys.executable, "-c", code.replace(DOC_URL, e2e.gateway)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    first_line = r.stdout.splitlines()[0]
    assert first_line.split(" ", 1)[0], r.stdout  # the chosen model, then the haiku


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_example_runs(e2e: E2E) -> None:
    (code,) = [b for b in _blocks("bash") if b.lstrip().startswith("curl")]
    r = subprocess.run(["bash", "-c", code.replace(DOC_URL, e2e.gateway)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"chat.completion"' in r.stdout


def _run_python(e2e: E2E, marker: str) -> list[str]:
    (code,) = [b for b in _blocks("python") if marker in b]
    r = subprocess.run(
        [sys.executable, "-c", code.replace(DOC_URL, e2e.gateway)], capture_output=True, text=True, timeout=90
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_the_responses_and_messages_example_runs(e2e: E2E) -> None:
    lines = _run_python(e2e, "anthropic.Anthropic(")
    assert len(lines) >= 2 and all(line.split(" ", 1)[0] in e2e.models for line in (lines[0], lines[-1])), lines


def test_the_quality_and_feedback_example_runs(e2e: E2E) -> None:
    lines = _run_python(e2e, "/v1/feedback")
    assert lines[0].startswith("answered by ") and lines[0].removeprefix("answered by ") in e2e.models
    assert lines[-1].startswith("202 {'status': 'accepted', 'response_id': 'chatcmpl-"), lines
    assert lines[-1].endswith("'score': 1.0}")
