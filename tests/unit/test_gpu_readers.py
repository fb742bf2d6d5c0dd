"""Each non-NVML GPU reader against recorded file layouts and command output
(tests/fixtures/gpu/: sysfs/debugfs trees per driver, nvidia-smi CSV, rocm-smi JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.amd import ROCM_SMI_COMMAND, AmdReader, parse_rocm_smi_meminfo
from turnout.gpu_agent.detect import detect_readers, read_all
from turnout.gpu_agent.errors import GpuReadError
from turnout.gpu_agent.intel import IntelReader, parse_i915_gem_objects, parse_ttm_manager
from turnout.gpu_agent.manual import GB, ManualReader
from turnout.gpu_agent.nvidia_smi import COMMAND, NvidiaSmiReader, parse_query_gpu

FIX = Path(__file__).parents[1] / "fixtures" / "gpu"
MiB = 1024 * 1024


class Recorded:
    """A command runner that answers from recorded output and remembers what was run."""

    def __init__(self, outputs: dict[tuple[str, ...], str] | None = None) -> None:
        self.outputs = outputs or {}
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.ran.append(tuple(argv))
        try:
            return self.outputs[tuple(argv)]
        except KeyError:
            raise GpuReadError(f"{argv[0]} not found") from None


def smi(name: str) -> Recorded:
    return Recorded({COMMAND: (FIX / "nvidia-smi" / name).read_text()})


# --- nvidia-smi ---------------------------------------------------------------------------


def test_nvidia_smi_query_parses_every_gpu_in_bytes() -> None:
    runner = smi("h100x2.csv")
    gpus = NvidiaSmiReader(runner).read()
    assert runner.ran == [
        (
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,"
            "utilization.gpu,temperature.gpu,power.draw",
            "--format=csv,noheader,nounits",
        )
    ]
    assert gpus == [
        GpuStateV1(index=0, uuid="GPU-3b9a1c52-7f0e-4d6a-9c1b-2f8e5d7a0c41", name="NVIDIA H100 80GB HBM3",
                   vendor="nvidia", memory_total_bytes=81559 * MiB, memory_used_bytes=4 * MiB,
                   memory_free_bytes=81004 * MiB, utilization_pct=0.0, temperature_c=31.0, power_w=69.78),
        GpuStateV1(index=1, uuid="GPU-a07c5e3d-12b4-4f9e-8d6c-91e2b3f4a5d6", name="NVIDIA H100 80GB HBM3",
                   vendor="nvidia", memory_total_bytes=81559 * MiB, memory_used_bytes=41371 * MiB,
                   memory_free_bytes=39637 * MiB, utilization_pct=87.0, temperature_c=58.0, power_w=512.43),
    ]  # fmt: skip


def test_nvidia_smi_na_and_not_supported_fields_become_none_one_by_one() -> None:
    gpus = NvidiaSmiReader(smi("mixed-not-supported.csv")).read()
    assert [(g.name, g.memory_total_bytes, g.utilization_pct, g.temperature_c, g.power_w) for g in gpus] == [
        ("NVIDIA GeForce GTX 1650 with Max-Q Design", 4096 * MiB, None, 46.0, None),
        ("NVIDIA GeForce GT 710", 2048 * MiB, None, 38.0, None),
    ]


def test_nvidia_smi_on_a_unified_memory_gb10_reports_no_memory() -> None:
    (gpu,) = NvidiaSmiReader(smi("gb10.csv")).read()
    assert (gpu.name, gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.memory_free_bytes) == ("NVIDIA GB10", 0, 0, 0)
    assert (gpu.temperature_c, gpu.power_w) == (41.0, 4.73)


def test_nvidia_smi_missing_or_malformed_output_raises_a_read_error() -> None:
    with pytest.raises(GpuReadError, match="nvidia-smi not found"):
        NvidiaSmiReader(Recorded()).read()
    with pytest.raises(GpuReadError, match="expected 9 fields, got 3"):
        parse_query_gpu("0, GPU-x, H100\n")
    assert parse_query_gpu("\n") == []


def test_nvidia_smi_computes_free_when_only_free_is_missing() -> None:
    (gpu,) = parse_query_gpu("0, GPU-1, Tesla T4, 15360, 1024, [N/A], 5, 40, 27.1")
    assert gpu.memory_free_bytes == 14336 * MiB


# --- AMD ----------------------------------------------------------------------------------


def test_amd_dgpu_reads_vram_busy_temperature_and_power_and_skips_connectors() -> None:
    gpus = AmdReader(FIX / "amd-rx7900xtx", runner=None).read()
    assert gpus == [
        GpuStateV1(index=0, uuid="a2c8f5e1d3b40716", name="AMD GPU 1002:744C", vendor="amd",
                   memory_total_bytes=25753026560, memory_used_bytes=9143971840,
                   memory_free_bytes=25753026560 - 9143971840, utilization_pct=97.0, temperature_c=61.0,
                   power_w=301.0),
    ]  # fmt: skip


def test_amd_apu_with_a_small_carve_out_reports_vram_plus_gtt() -> None:
    (gpu,) = AmdReader(FIX / "amd-strix-halo-apu", runner=None).read()
    assert gpu.name == "AMD GPU 1002:1586 (VRAM+GTT)"
    assert gpu.memory_total_bytes == 536870912 + 66722734080
    assert gpu.memory_used_bytes == 329027584 + 19730120704
    assert gpu.memory_free_bytes == gpu.memory_total_bytes - gpu.memory_used_bytes
    assert (gpu.uuid, gpu.power_w, gpu.temperature_c, gpu.utilization_pct) == ("0000:c5:00.0", 18.042, 47.0, 3.0)


def test_amd_apu_threshold_is_configurable() -> None:
    (gpu,) = AmdReader(FIX / "amd-strix-halo-apu", runner=None, apu_vram_threshold=256 * MiB).read()
    assert (gpu.memory_total_bytes, gpu.name) == (536870912, "AMD GPU 1002:1586")


def test_amd_reader_ignores_other_vendors_cards_and_numbers_its_own_from_zero() -> None:
    (gpu,) = AmdReader(FIX / "hybrid-intel-igpu-amd-dgpu", runner=None).read()
    assert (gpu.index, gpu.uuid, gpu.memory_total_bytes, gpu.power_w) == (0, "0000:03:00.0", 8573157376, None)


def test_rocm_smi_is_used_only_when_sysfs_has_no_card() -> None:
    runner = Recorded({ROCM_SMI_COMMAND: (FIX / "rocm-smi" / "showmeminfo-vram-mi300x.json").read_text()})
    assert AmdReader(FIX / "amd-rx7900xtx", runner=runner).read()[0].memory_total_bytes == 25753026560
    assert runner.ran == []
    gpus = AmdReader(FIX / "nothing-here", runner=runner).read()
    assert runner.ran == [("rocm-smi", "--showmeminfo", "vram", "--json")]
    assert [(g.index, g.memory_total_bytes, g.memory_used_bytes) for g in gpus] == [
        (0, 205822885888, 294846464),
        (1, 205822885888, 151909564416),
    ]


def test_rocm_smi_garbage_is_a_read_error() -> None:
    with pytest.raises(GpuReadError, match="rocm-smi printed no JSON"):
        parse_rocm_smi_meminfo("ERROR: GPU[0] : Unable to open file\n")
    assert parse_rocm_smi_meminfo('{"system": {"Driver version": "6.8.5"}}') == []


# --- Intel --------------------------------------------------------------------------------


def test_intel_xe_total_from_tile_sysfs_and_used_from_the_vram_manager() -> None:
    clock = iter([100.0, 102.0])
    reader = IntelReader(FIX / "intel-xe-arc-b580", clock=lambda: next(clock))
    (gpu,) = reader.read()
    assert gpu == GpuStateV1(index=0, uuid="0000:03:00.0", name="Intel GPU 8086:E20B (xe)", vendor="intel",
                             memory_total_bytes=12884901888, memory_used_bytes=5041553408,
                             memory_free_bytes=12884901888 - 5041553408, temperature_c=55.0, power_w=None)  # fmt: skip
    # power comes from the energy counter: the second read averages over the 2 s between them
    (gpu,) = reader.read()
    assert gpu.power_w == 0.0


def test_intel_xe_power_is_the_energy_delta_over_time(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "xe"
    shutil.copytree(FIX / "intel-xe-arc-b580", root)
    energy = root / "sys/class/drm/card0/device/hwmon/hwmon3/energy1_input"
    clock = iter([10.0, 12.0])
    reader = IntelReader(root, clock=lambda: next(clock))
    reader.read()
    energy.write_text(str(1538912000000 + 2 * 95_500_000) + "\n")  # 95.5 W for 2 s, in µJ
    assert reader.read()[0].power_w == pytest.approx(95.5)


def test_intel_xe_older_kernel_buddy_only_dump_and_debugfs_by_pci_slot() -> None:
    (gpu,) = IntelReader(FIX / "intel-xe-buddy-only").read()
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes) == (51539607552, (49152 - 40960) * MiB)


def test_intel_i915_upstream_reads_local_memory_from_i915_gem_objects() -> None:
    (gpu,) = IntelReader(FIX / "intel-i915-arc-a770").read()
    assert (gpu.name, gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.temperature_c) == (
        "Intel GPU 8086:56A0 (i915)",
        16225664000,
        7516192768,
        None,
    )


def test_intel_i915_backport_driver_lmem_files() -> None:
    (gpu,) = IntelReader(FIX / "intel-i915-backport-flex170").read()
    assert (gpu.uuid, gpu.memory_total_bytes, gpu.memory_used_bytes) == ("0000:4d:00.0", 15032385536, 721371136)


def test_intel_integrated_gpu_without_local_memory_is_skipped() -> None:
    assert IntelReader(FIX / "hybrid-intel-igpu-amd-dgpu").read() == []


def test_i915_gem_objects_regions() -> None:
    text = (FIX / "intel-i915-arc-a770/sys/kernel/debug/dri/0/i915_gem_objects").read_text()
    assert parse_i915_gem_objects(text) == {
        "system": (0xFD6AB0000, None),
        "local0": (16225664000, 7516192768),
        "stolen-local0": (0, None),
    }
    assert parse_ttm_manager("nothing useful\n") == (None, None)


# --- manual -------------------------------------------------------------------------------


def test_manual_memory_is_capped_by_what_the_system_has_available() -> None:
    (gpu,) = ManualReader(96, root=FIX / "unified-128g").read()
    assert gpu.memory_total_bytes == 96 * GB
    assert gpu.memory_free_bytes == 71303168 * 1024  # MemAvailable < 96 GiB
    assert gpu.memory_used_bytes == 96 * GB - 71303168 * 1024
    (gpu,) = ManualReader(48, root=FIX / "unified-128g").read()
    assert (gpu.memory_free_bytes, gpu.memory_used_bytes) == (48 * GB, 0)


def test_manual_without_proc_meminfo_reports_everything_free(tmp_path: Path) -> None:
    (gpu,) = ManualReader(64, root=tmp_path).read()
    assert (gpu.memory_total_bytes, gpu.memory_free_bytes, gpu.vendor) == (64 * GB, 64 * GB, "unified")
    with pytest.raises(ValueError, match="must be > 0"):
        ManualReader(0)


def test_manual_borrows_name_and_sensors_from_a_reader_that_sees_the_gpu() -> None:
    base = NvidiaSmiReader(smi("gb10.csv"))
    (gpu,) = ManualReader(100, root=FIX / "unified-128g", base=base).read()
    assert (gpu.name, gpu.vendor, gpu.temperature_c, gpu.power_w, gpu.memory_total_bytes) == (
        "NVIDIA GB10 (memory: TURNOUT_GPU_MEMORY_GB)",
        "nvidia",
        41.0,
        4.73,
        100 * GB,
    )


# --- detection ----------------------------------------------------------------------------


class FakeNvml:
    source = "nvml"

    def read(self) -> list[GpuStateV1]:
        return [GpuStateV1(index=0, name="NVIDIA H100 80GB HBM3", memory_total_bytes=80 * GB)]


def test_detect_prefers_nvml_and_then_skips_nvidia_smi() -> None:
    runner = smi("h100x2.csv")
    found = detect_readers(root=FIX / "nothing-here", runner=runner, nvml=FakeNvml)
    assert found.sources == ["nvml"]
    assert COMMAND not in runner.ran


def test_detect_falls_back_to_nvidia_smi_and_adds_other_vendors() -> None:
    found = detect_readers(root=FIX / "hybrid-intel-igpu-amd-dgpu", runner=smi("h100x2.csv"), nvml=lambda: None)
    assert found.sources == ["nvidia-smi", "amd"]
    gpus, error = read_all(found.readers)
    assert [(g.vendor, g.index) for g in gpus] == [("nvidia", 0), ("nvidia", 1), ("amd", 0)]
    assert error is None


def test_detect_with_nothing_says_why() -> None:
    found = detect_readers(root=FIX / "nothing-here", runner=Recorded(), nvml=lambda: None)
    assert found.readers == []
    assert found.error == (
        "no GPU found: NVML: not available; nvidia-smi: nvidia-smi not found; "
        "AMD: rocm-smi not found; Intel: no card with its own memory in sysfs"
    )


def test_detect_manual_override_wins_and_borrows_from_the_first_reader() -> None:
    found = detect_readers(root=FIX / "unified-128g", runner=smi("gb10.csv"), nvml=lambda: None, manual_memory_gb=100)
    assert found.sources == ["manual"]
    gpus, _ = read_all(found.readers)
    assert [(g.name, g.memory_total_bytes) for g in gpus] == [("NVIDIA GB10 (memory: TURNOUT_GPU_MEMORY_GB)", 100 * GB)]


def test_read_all_reports_a_failing_reader_and_keeps_the_others() -> None:
    class Broken:
        source = "broken"

        def read(self) -> list[GpuStateV1]:
            raise GpuReadError("driver went away")

    gpus, error = read_all([Broken(), FakeNvml()])
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3"]
    assert error == "broken: driver went away"


# --- simulated (fakefleet) ----------------------------------------------------------------


def test_simulated_reader_uses_the_listeners_vram_and_its_ps() -> None:
    from turnout.gpu_agent.simulated import SimulatedReader

    answers = {
        "http://127.0.0.1:11500/_fleet/config": {
            "listeners": [
                {"name": "gpu-a", "port": 11500, "vram_total_bytes": 16 * GB},
                {"name": "gpu-b", "port": 11502, "vram_total_bytes": None},
            ]
        },
        "http://127.0.0.1:11500/api/ps": {
            "models": [{"name": "m1", "size_vram": 5 * GB}, {"name": "m2", "size_vram": 3 * GB}]
        },
        "http://127.0.0.1:11502/_fleet/config": {
            "listeners": [{"name": "gpu-b", "port": 11502, "vram_total_bytes": None}]
        },
    }
    (gpu,) = SimulatedReader("http://127.0.0.1:11500/", fetch=answers.__getitem__).read()
    assert (gpu.uuid, gpu.name, gpu.vendor) == ("sim-gpu-a", "simulated GPU (gpu-a)", "simulated")
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.memory_free_bytes) == (16 * GB, 8 * GB, 8 * GB)
    assert SimulatedReader("http://127.0.0.1:11502", fetch=answers.__getitem__).read() == []
    with pytest.raises(GpuReadError, match="no fakefleet listener on port 9"):
        SimulatedReader("http://127.0.0.1:9", fetch=lambda url: {"listeners": []}).read()
    found = detect_readers(simulated_url="http://127.0.0.1:11500", nvml=FakeNvml)
    assert found.sources == ["simulated"]
