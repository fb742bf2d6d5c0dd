"""``bench/fleet.py``: its load, decode and prefill model replaced by measured timings or a what-if."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_bench", REPO / "bench" / "fleet.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fleet_bench", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_measured_timings_set_loads_decode_and_prefill(
    fleet: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.json"
    fit = {"load_fixed_s": 0.4, "load_s_per_gib": 0.1, "decode_gb_tokens_per_s": 1000.0, "prefill_ratio": 8.0}
    path.write_text(json.dumps({"device": "NVIDIA H100", "server": "llama-server", "fit": fit}))
    model, h80, h24 = fleet.BY_NAME["llama3.1:8b"], fleet.HOSTS[-1], fleet.HOSTS[0]
    default_load, default_tps = model.load_s, h80.tokens_per_s(model)
    assert default_load == pytest.approx(1.0 + 0.35 * model.vram / fleet.GiB)
    monkeypatch.setattr(fleet, "TIMINGS", fleet.SimTimings.measured(str(path)))
    assert model.load_s == pytest.approx(0.4 + 0.1 * model.vram / fleet.GiB)
    assert h80.tokens_per_s(model) == pytest.approx(1000.0 / (model.vram / 1e9))  # the 80 GiB hosts: as measured
    assert h24.tokens_per_s(model) == pytest.approx(h80.tokens_per_s(model) / 2)
    assert h80.tokens_per_s(model) != default_tps and model.load_s != default_load
    assert "NVIDIA H100" in fleet.TIMINGS.source


def test_a_what_if_load_line_is_run_and_named(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "bench/fleet.py", "--minutes", "1", "--quality", "", "--policies", "turnout",
         "--load", "0.5,0.05"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("timings ("))
    assert header.startswith("timings (the bench's model, load what-if): load 0.50 s + 0.050 s/GiB, decode 1400")
    assert any(line.startswith("turnout ") for line in run.stdout.splitlines())
