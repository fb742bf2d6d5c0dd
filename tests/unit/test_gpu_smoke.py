"""scripts/gpu_smoke.py: its parsing helpers here; the script itself on a real GPU (``gpu``
marker: skipped when NVML cannot initialise, as in CI)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


smoke = _load()

METRICS = """\
# HELP turnout_gpu_memory_used_bytes GPU memory in use
# TYPE turnout_gpu_memory_used_bytes gauge
turnout_gpu_memory_used_bytes{gpu="0",host="h",uuid="GPU-aaaa",vendor="nvidia"} 1.048576e+09
turnout_gpu_memory_used_bytes{gpu="1",host="h",uuid="GPU-bbbb",vendor="nvidia"} 2.097152e+09
turnout_gpu_memory_total_bytes{gpu="0",host="h",uuid="GPU-aaaa",vendor="nvidia"} 8.5e+10
"""


def test_cuda_uuid_bytes_are_written_the_way_nvml_writes_them() -> None:
    raw = bytes.fromhex("3b9a1c527f0e4d6a9c1b2f8e5d7a0c41")
    assert smoke.format_uuid(raw) == "GPU-3b9a1c52-7f0e-4d6a-9c1b-2f8e5d7a0c41"


def test_metric_used_finds_the_gpu_by_uuid() -> None:
    assert smoke.metric_used(METRICS, "GPU-bbbb", 1) == 2097152000.0
    assert smoke.metric_used(METRICS, "GPU-cccc", 7) is None
    assert [s[1]["gpu"] for s in smoke.metric_samples(METRICS, "gpu_memory_used_bytes")] == ["0", "1"]


def _nvml_ok() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.timeout(180)
def test_gpu_smoke_script_passes_on_a_real_gpu() -> None:
    if not _nvml_ok():
        pytest.skip("NVML cannot initialise: no NVIDIA GPU here")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-smoke.sh"), "--alloc-mib", "1024"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    sys.stdout.write(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
