"""The NVML reader on a real NVIDIA GPU. Skips cleanly where ``nvmlInit`` fails (CI, laptops).

Imports only the reader and pytest, so that it also runs on a bare GPU machine:
``PYTHONPATH=services/gpu-agent/src python -m pytest -c /dev/null --noconftest -p no:cacheprovider \
  tests/unit/test_nvml_gpu.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from turnout.gpu_agent.errors import GpuUnavailable
from turnout.gpu_agent.nvml import NvmlReader

pytestmark = pytest.mark.gpu

MiB = 2**20


@pytest.fixture(scope="module")
def reader() -> Iterator[NvmlReader]:
    r = NvmlReader()
    try:
        r.read_sync()
    except GpuUnavailable as exc:
        pytest.skip(f"no NVIDIA GPU here ({exc})")
    try:
        yield r
    finally:
        r.close()


def test_every_gpu_has_identity_and_consistent_memory(reader: NvmlReader) -> None:
    readings = reader.read_sync()
    assert readings
    for g in readings:
        assert g.uuid.startswith(("GPU-", "MIG-")) and g.name, g
        if g.memory_known:
            assert g.memory_total_bytes and g.memory_total_bytes > 0
            assert g.memory_used_bytes is not None and g.memory_free_bytes is not None
            assert abs(g.memory_total_bytes - g.memory_used_bytes - g.memory_free_bytes) <= g.memory_total_bytes * 0.02
        if g.utilization_ratio is not None:
            assert 0.0 <= g.utilization_ratio <= 1.0
        if g.temperature_c is not None:
            assert 0 < g.temperature_c < 120
        if g.power_w is not None:
            assert 0 <= g.power_w < 2000


def test_async_read_runs_off_the_loop_and_agrees(reader: NvmlReader) -> None:
    async def both() -> tuple[int, int]:
        return len(await reader.read()), len(reader.read_sync())

    a, b = asyncio.run(both())
    assert a == b > 0


def test_an_allocation_shows_in_used_memory(reader: NvmlReader) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    torch.cuda.init()
    torch.zeros(1, device="cuda:0")  # the context's own memory, before the baseline
    torch.cuda.synchronize()
    props = torch.cuda.get_device_properties(0)
    uuid = f"GPU-{props.uuid}" if getattr(props, "uuid", None) else None
    gpu = next(g for g in reader.read_sync() if g.uuid == uuid or (uuid is None and g.name == props.name))
    before = gpu.memory_used_bytes or 0
    block = torch.empty(2048 * MiB, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    time.sleep(0.2)
    after = next(g for g in reader.read_sync() if g.uuid == gpu.uuid).memory_used_bytes or 0
    del block
    torch.cuda.empty_cache()
    assert 2048 * MiB - 128 * MiB <= after - before <= 2048 * MiB + 256 * MiB
