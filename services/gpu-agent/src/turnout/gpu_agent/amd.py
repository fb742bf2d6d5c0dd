"""AMD GPUs through the amdgpu driver's sysfs files, and ``rocm-smi`` when sysfs has none.

Per card, under ``/sys/class/drm/cardN/device/`` (amdgpu, ``DRIVER=amdgpu`` in ``uevent``):

* ``mem_info_vram_total`` / ``mem_info_vram_used`` — dedicated VRAM in bytes;
* ``mem_info_gtt_total`` / ``mem_info_gtt_used`` — the GTT pool: system memory the GPU maps.
  On an APU (Ryzen AI / Strix Halo, Phoenix) the BIOS carve-out can be as small as 512 MiB while
  ROCm and llama.cpp allocate model weights in GTT; when VRAM is under
  ``apu_vram_threshold_bytes`` and GTT is larger, the reader reports VRAM + GTT as the card's
  memory (``name`` gets a "(VRAM+GTT)" suffix so the choice is visible);
* ``gpu_busy_percent`` — utilisation in %;
* ``hwmon/hwmonM/temp1_input`` (edge, millidegrees C) and ``power1_average`` (µW; newer
  kernels and APUs expose ``power1_input`` instead);
* ``unique_id`` (hex, where the board has one), else the PCI slot (``uevent``
  ``PCI_SLOT_NAME``) serves as the UUID; ``product_name`` where present, else the PCI id.

``rocm-smi --showmeminfo vram --json`` prints ``{"card0": {"VRAM Total Memory (B)": "…",
"VRAM Total Used Memory (B)": "…"}, …}``; it is only consulted when sysfs yields no card (a
container that has the ROCm tools but not ``/sys/class/drm``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.errors import GpuReadError
from turnout.gpu_agent.sysfs import Runner, drm_cards, hwmon_dirs, read_int, read_text, run_command, uevent

AMD_VENDOR_ID = 0x1002
ROCM_SMI_COMMAND = ("rocm-smi", "--showmeminfo", "vram", "--json")
DEFAULT_APU_VRAM_THRESHOLD = 4 * 1024**3


def _is_amdgpu(device: Path) -> bool:
    ev = uevent(device)
    if ev.get("DRIVER") == "amdgpu":
        return True
    return read_int(device / "vendor") == AMD_VENDOR_ID and (device / "mem_info_vram_total").exists()


def _hwmon_temp_power(device: Path) -> tuple[float | None, float | None]:
    temp = power = None
    for hw in hwmon_dirs(device):
        if temp is None:
            milli = read_int(hw / "temp1_input")
            temp = milli / 1000.0 if milli is not None else None
        if power is None:
            micro = read_int(hw / "power1_average")
            if micro is None:
                micro = read_int(hw / "power1_input")
            power = micro / 1_000_000.0 if micro is not None else None
    return temp, power


def read_sysfs_card(
    index: int, card: Path, *, apu_vram_threshold: int = DEFAULT_APU_VRAM_THRESHOLD
) -> GpuStateV1 | None:
    """An amdgpu card's memory and sensors from sysfs, or ``None`` for another driver or no VRAM info."""
    device = card / "device"
    if not _is_amdgpu(device):
        return None
    vram_total = read_int(device / "mem_info_vram_total")
    if vram_total is None:
        return None
    vram_used = read_int(device / "mem_info_vram_used") or 0
    gtt_total = read_int(device / "mem_info_gtt_total")
    gtt_used = read_int(device / "mem_info_gtt_used") or 0
    ev = uevent(device)
    name = read_text(device / "product_name") or f"AMD GPU {ev.get('PCI_ID', '')}".strip()
    total, used = vram_total, vram_used
    if gtt_total is not None and vram_total < apu_vram_threshold and gtt_total > vram_total:
        total, used = vram_total + gtt_total, vram_used + gtt_used
        name = f"{name} (VRAM+GTT)"
    temp, power = _hwmon_temp_power(device)
    busy = read_int(device / "gpu_busy_percent")
    return GpuStateV1(
        index=index,
        uuid=read_text(device / "unique_id") or ev.get("PCI_SLOT_NAME", ""),
        name=name,
        vendor="amd",
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=max(total - used, 0),
        utilization_pct=float(busy) if busy is not None else None,
        temperature_c=temp,
        power_w=power,
    )


def parse_rocm_smi_meminfo(output: str) -> list[GpuStateV1]:
    """GPU states from ``rocm-smi --showmeminfo vram --json``."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise GpuReadError(f"rocm-smi printed no JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GpuReadError("rocm-smi JSON is not an object")
    gpus = []
    for key, fields in data.items():
        m = re.fullmatch(r"card(\d+)", key)
        if m is None or not isinstance(fields, dict):
            continue  # "system" and other non-card sections
        total = _int_field(fields, "VRAM Total Memory (B)")
        used = _int_field(fields, "VRAM Total Used Memory (B)")
        if total is None:
            continue
        used = used or 0
        gpus.append(
            GpuStateV1(
                index=int(m.group(1)),
                name=str(fields.get("Card series") or fields.get("Card SKU") or "AMD GPU"),
                vendor="amd",
                memory_total_bytes=total,
                memory_used_bytes=used,
                memory_free_bytes=max(total - used, 0),
            )
        )
    return sorted(gpus, key=lambda g: g.index)


def _int_field(fields: dict[str, object], key: str) -> int | None:
    raw = fields.get(key)
    try:
        return int(str(raw)) if raw is not None else None
    except ValueError:
        return None


class AmdReader:
    """AMD GPUs: sysfs first, ``rocm-smi`` when sysfs shows none."""

    source = "amd"
    vendor = "amd"

    def __init__(
        self,
        root: Path = Path("/"),
        runner: Runner | None = run_command,
        *,
        apu_vram_threshold: int = DEFAULT_APU_VRAM_THRESHOLD,
    ) -> None:
        self._root = root
        self._run = runner
        self._apu_threshold = apu_vram_threshold

    def read_sysfs(self) -> list[GpuStateV1]:
        """The amdgpu cards sysfs shows."""
        gpus: list[GpuStateV1] = []
        for _, card in drm_cards(self._root):
            state = read_sysfs_card(len(gpus), card, apu_vram_threshold=self._apu_threshold)
            if state is not None:
                gpus.append(state)
        return gpus

    def read(self) -> list[GpuStateV1]:
        """AMD GPUs from sysfs, else from ``rocm-smi``."""
        gpus = self.read_sysfs()
        if gpus or self._run is None:
            return gpus
        return parse_rocm_smi_meminfo(self._run(ROCM_SMI_COMMAND))

    def available(self) -> bool:
        """Whether any AMD GPU is readable."""
        try:
            return bool(self.read())
        except GpuReadError:
            return False
