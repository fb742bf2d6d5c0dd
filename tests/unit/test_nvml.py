"""The NVML reader against recorded NVML scenarios (a fake ``pynvml`` that raises the real errors)."""

from __future__ import annotations

import threading

import pytest

from tests.fixtures.gpu.fake_nvml import SCENARIOS, FakeNvml, load_scenario
from turnout.gpu_agent.errors import GpuUnavailable
from turnout.gpu_agent.gpus import GpuProcess, GpuReading, MultiReader
from turnout.gpu_agent.nvml import NvmlReader, capture_scenario

GiB = 2**30


async def test_reads_every_field_of_two_h100s() -> None:
    readings = await NvmlReader(FakeNvml.named("h100x2")).read()
    assert readings == [
        GpuReading(
            index=0,
            uuid="GPU-3b9a1c52-7f0e-4d6a-9c1b-2f8e5d7a0c41",
            name="NVIDIA H100 80GB HBM3",
            vendor="nvidia",
            memory_total_bytes=85520809984,
            memory_used_bytes=4194304,
            memory_free_bytes=85516615680,
            utilization_ratio=0.0,
            temperature_c=31.0,
            power_w=69.78,
        ),
        GpuReading(
            index=1,
            uuid="GPU-a07c5e3d-12b4-4f9e-8d6c-91e2b3f4a5d6",
            name="NVIDIA H100 80GB HBM3",
            vendor="nvidia",
            memory_total_bytes=85520809984,
            memory_used_bytes=43381399552,
            memory_free_bytes=42139410432,
            utilization_ratio=0.87,
            temperature_c=58.0,
            power_w=512.43,
            processes=(GpuProcess(4242, 41875931136), GpuProcess(4343, None)),
        ),
    ]


async def test_unsupported_fields_are_left_out_one_by_one() -> None:
    first, second = await NvmlReader(FakeNvml.named("consumer-not-supported")).read()
    assert (first.utilization_ratio, first.power_w) == (None, None)
    assert (first.memory_total_bytes, first.temperature_c) == (4 * GiB, 46.0)
    assert first.processes == (GpuProcess(999, 402653184),)
    assert first.unsupported == ("utilization", "power", "graphics_processes")
    assert second.processes == ()
    assert second.unsupported == ("utilization", "power", "compute_processes", "graphics_processes")


async def test_unified_memory_gpu_reads_without_memory() -> None:
    (gb10,) = await NvmlReader(FakeNvml.named("gb10-unified")).read()
    assert gb10.name == "NVIDIA GB10" and gb10.memory_known is False
    assert (gb10.memory_total_bytes, gb10.power_w) == (None, 4.73)
    assert gb10.unsupported == ("memory",)


async def test_no_driver_raises_gpu_unavailable_and_retries_init() -> None:
    fake = FakeNvml.named("no-driver")
    reader = NvmlReader(fake)
    with pytest.raises(GpuUnavailable, match="^NVML: Driver Not Loaded$"):
        await reader.read()
    fake.scenario = load_scenario("h100x2")  # the driver came up
    assert len(await reader.read()) == 2
    assert fake.calls == ["init", "init"]


async def test_a_lost_gpu_is_skipped_and_the_others_still_read() -> None:
    readings = await NvmlReader(FakeNvml.named("one-gpu-lost")).read()
    assert [r.index for r in readings] == [0]


async def test_nvml_going_away_mid_run_reinitialises() -> None:
    fake = FakeNvml.named("h100x2")
    reader = NvmlReader(fake)
    await reader.read()
    fake.initialised = False  # the driver was reloaded under us
    with pytest.raises(GpuUnavailable, match="cannot count devices"):
        await reader.read()
    assert len(await reader.read()) == 2
    assert fake.calls == ["init", "shutdown", "init"]


async def test_memory_changes_show_on_the_next_read() -> None:
    fake = FakeNvml.named("h100x2")
    reader = NvmlReader(fake)
    await reader.read()
    fake.device(0)["memory"] = {"total": 85520809984, "used": 8 * GiB, "free": 85520809984 - 8 * GiB}
    assert (await reader.read())[0].memory_used_bytes == 8 * GiB


async def test_reads_run_in_a_worker_thread() -> None:
    seen: list[int] = []
    fake = FakeNvml.named("h100x2")
    count = fake.nvmlDeviceGetCount

    def counting() -> int:
        seen.append(threading.get_ident())
        return count()

    fake.nvmlDeviceGetCount = counting  # type: ignore[method-assign]
    await NvmlReader(fake).read()
    assert seen and seen[0] != threading.get_ident()


async def test_close_shuts_nvml_down_once() -> None:
    fake = FakeNvml.named("h100x2")
    reader = NvmlReader(fake)
    await reader.read()
    reader.close()
    reader.close()
    assert fake.calls == ["init", "shutdown"]


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.json")))
def test_capture_replays_the_scenario_it_was_made_from(name: str) -> None:
    scenario = load_scenario(name)
    captured = capture_scenario(FakeNvml(scenario))
    if scenario.get("init_error"):
        assert captured == {"init_error": scenario["init_error"], "devices": []}
    else:
        assert captured["devices"] == scenario["devices"]


async def test_multi_reader_joins_devices_and_fails_only_when_all_fail() -> None:
    both = MultiReader([NvmlReader(FakeNvml.named("h100x2")), NvmlReader(FakeNvml.named("no-driver"))])
    assert len(await both.read()) == 2
    none = MultiReader([NvmlReader(FakeNvml.named("no-driver")), NvmlReader(FakeNvml.named("no-driver"))])
    with pytest.raises(GpuUnavailable, match="Driver Not Loaded; NVML: Driver Not Loaded"):
        await none.read()


async def test_a_captured_h100_with_a_process_holding_memory() -> None:
    (h100,) = await NvmlReader(FakeNvml.named("h100-captured-busy")).read()
    assert (h100.name, h100.memory_total_bytes, h100.memory_used_bytes) == (
        "NVIDIA H100 80GB HBM3",
        85520809984,
        5281480704,
    )
    assert h100.processes == (GpuProcess(453, 4768923648),)
    assert (h100.power_w, h100.temperature_c, h100.unsupported) == (312.484, 38.0, ())
