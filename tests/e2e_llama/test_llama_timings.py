"""``bench/llama_timings.py`` against real llama.cpp servers (CPU), its timings through the
gpu-agent, and ``bench/fleet.py --timings`` running the simulated fleet with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from turnout.devstack.infra import redis_server_bin
from turnout.llamafleet.install import LlamaHome, ensure_runtime

pytestmark = [pytest.mark.e2e, pytest.mark.llama, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def timings(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    ensure_runtime(LlamaHome.default())  # builds llama-cpp-python once where no wheel is cached: no skip
    out = tmp_path_factory.mktemp("timings") / "timings.json"
    run = subprocess.run(
        [sys.executable, "bench/llama_timings.py", "--sizes", "0.1b,0.3b", "--repeats", "1", "--tokens", "8",
         "--prompt-words", "40", "--interval", "0.2", "--out", str(out), "--redis-server", redis_server_bin()],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout


def test_each_model_is_timed_from_start_to_first_token_and_seen_by_the_agent(
    timings: tuple[dict[str, Any], str],
) -> None:
    doc, stdout = timings
    assert [m["model"] for m in doc["models"]] == ["rand-llama:0.1b-q4_0", "rand-llama:0.3b-q4_0"]
    small, big = doc["models"]
    assert big["file_gib"] > 2 * small["file_gib"] > 0
    for m in doc["models"]:
        (s,) = m["samples"]
        assert 0 < s["ready_s"] < s["first_token_s"]
        # the agent polls the server's /v1/models every 0.2 s: it sees it up within a few polls of ready
        assert s["agent_up_s"] is not None and 0 < s["agent_up_s"] < s["first_token_s"] + 2
        assert s["agent_down_s"] is not None and s["agent_down_s"] >= 0
        assert s["memory_mib"] > 0 and s["tokens_per_s"] > 0 and s["prefill_per_s"] > 0 and s["ttft_s"] > 0
    assert doc["agent_interval_s"] == 0.2 and doc["device"].startswith("CPU")
    # all at once: the second loaded while the first stays
    assert [(r["model"], r["loaded_before"]) for r in doc["together"]] == [
        ("rand-llama:0.1b-q4_0", 0),
        ("rand-llama:0.3b-q4_0", 1),
    ]
    assert all(r["tokens_per_s"] > 0 for r in doc["together"])
    fit = doc["fit"]
    assert fit["load_fixed_s"] >= 0 and fit["load_s_per_gib"] >= 0
    assert fit["decode_gb_tokens_per_s"] > 0 and fit["prefill_ratio"] > 0 and fit["unload_s"] >= 0
    assert "fit: load" in stdout and "planner s" in stdout


def test_the_fleet_bench_runs_with_the_measured_timings(timings: tuple[dict[str, Any], str], tmp_path: Path) -> None:
    doc, _ = timings
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    run = subprocess.run(
        [sys.executable, "bench/fleet.py", "--timings", str(path), "--minutes", "1", "--quality", "",
         "--policies", "turnout,vram-blind"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    fit = doc["fit"]
    header = next(line for line in run.stdout.splitlines() if line.startswith("timings ("))
    assert f"measured: {path}" in header
    assert f"load {fit['load_fixed_s']:.2f} s + {fit['load_s_per_gib']:.3f} s/GiB" in header
    rows = [line.split()[0] for line in run.stdout.splitlines() if line.startswith(("turnout ", "vram-blind "))]
    assert rows == ["turnout", "vram-blind"]
