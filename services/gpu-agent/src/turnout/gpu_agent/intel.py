"""Intel GPUs with their own memory (Arc, Data Center Flex/Max, Battlemage) through sysfs and
debugfs, for both kernel drivers. Which files exist depends on the driver:

**xe** (``DRIVER=xe`` in ``device/uevent``; Lunar Lake, Battlemage, Arc on newer kernels)

* total: ``/sys/class/drm/cardN/device/tile<T>/physical_vram_size_bytes`` per tile
  (``xe_tile_sysfs.c``), summed over tiles;
* used: debugfs ``/sys/kernel/debug/dri/<N or PCI slot>/vram<T>_mm``: the TTM manager dump,
  ``  size: <bytes>`` / ``  usage: <bytes>`` followed by the buddy allocator's
  ``chunk_size: 4KiB, total: <MiB>MiB, free: <MiB>MiB…`` (older kernels print only the
  latter, which is used when ``usage`` is absent). debugfs needs root: the DaemonSet runs
  privileged; without it the reader reports ``used`` as 0 and says so once in the log;
* power: xe's hwmon exposes ``energy1_input`` (µJ), no instantaneous power; the reader keeps
  the previous sample and reports the average since the last read. Temperature from
  ``temp2_input``/``temp1_input`` (m°C) where the kernel has it.

**i915** (``DRIVER=i915``; Arc A-series/DG2, Flex on older kernels)

* Intel's backport driver (intel-gpu-i915-backports, DKMS) adds card-level
  ``/sys/class/drm/cardN/lmem_total_bytes`` and ``lmem_avail_bytes``: used = total − avail;
* upstream i915 has no memory sysfs; debugfs ``/sys/kernel/debug/dri/<N>/i915_gem_objects``
  lists each memory region: ``system: total:0x… bytes`` and for device memory
  ``local0:   use_type: 1`` … ``  size: <bytes>`` ``  usage: <bytes>`` (TTM dump);
* power from ``hwmon/energy1_input`` as for xe; i915 has no temperature sensor in hwmon.

Integrated GPUs (no ``lmem``/``vram``) share system memory: they are skipped here, as the
agent cannot tell how much of that memory models may use — set ``TURNOUT_GPU_MEMORY_GB``
(manual.py). Utilisation is not exposed as a sysfs percentage by either driver (engine
busyness lives in PMU counters / fdinfo), so it is ``None``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.sysfs import drm_cards, hwmon_dirs, read_int, read_text, uevent, under

INTEL_DRIVERS = ("xe", "i915")
_TTM_FIELD = re.compile(r"^\s*(?:[\w-]+:\s+)?(size|usage):\s*(\d+)\s*$")
_BUDDY = re.compile(r"total:\s*(\d+)\s*MiB,\s*free:\s*(\d+)\s*MiB")
_REGION = re.compile(r"^((?:stolen-)?(?:system|local)\d*):\s")


def parse_ttm_manager(text: str) -> tuple[int | None, int | None]:
    """``(size, usage)`` in bytes from a TTM resource manager dump (``vram0_mm``, or one region of
    ``i915_gem_objects``); falls back to the buddy allocator's ``total``/``free`` MiB line."""
    size = usage = None
    buddy: tuple[int, int] | None = None
    for line in text.splitlines():
        m = _TTM_FIELD.match(line)
        if m:
            if m.group(1) == "size" and size is None:
                size = int(m.group(2))
            elif m.group(1) == "usage" and usage is None:
                usage = int(m.group(2))
            continue
        b = _BUDDY.search(line)
        if b and buddy is None:
            buddy = (int(b.group(1)) << 20, int(b.group(2)) << 20)
    if usage is None and buddy is not None:
        size = size or buddy[0]
        usage = buddy[0] - buddy[1]
    return size, usage


def parse_i915_gem_objects(text: str) -> dict[str, tuple[int | None, int | None]]:
    """Region name -> ``(size, usage)`` from ``i915_gem_objects``; regions without a TTM manager
    (``system: total:0x… bytes``) give ``(total, None)``."""
    regions: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _REGION.match(line)
        if m and not line.startswith(" "):
            current = m.group(1)
            regions[current] = [line[m.end() :]]
        elif current is not None:
            regions[current].append(line)
    out: dict[str, tuple[int | None, int | None]] = {}
    for name, lines in regions.items():
        first = lines[0]
        total = re.search(r"total:\s*(0x[0-9a-fA-F]+|\d+)", first)
        if total and "use_type" not in first:
            out[name] = (int(total.group(1), 0), None)
        else:
            out[name] = parse_ttm_manager("\n".join(lines))
    return out


class IntelReader:
    """Intel GPUs (i915, xe) from sysfs."""

    source = "intel"
    vendor = "intel"

    def __init__(self, root: Path = Path("/"), *, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._clock = clock
        self._energy: dict[str, tuple[float, int]] = {}

    def read(self) -> list[GpuStateV1]:
        """The Intel cards sysfs shows, with memory where the driver reports it."""
        gpus: list[GpuStateV1] = []
        for n, card in drm_cards(self._root):
            device = card / "device"
            ev = uevent(device)
            driver = ev.get("DRIVER")
            if driver not in INTEL_DRIVERS:
                continue
            slot = ev.get("PCI_SLOT_NAME", "")
            debugfs = self._debugfs_dirs(n, slot)
            if driver == "xe":
                total, used = self._xe_memory(device, debugfs)
            else:
                total, used = self._i915_memory(card, debugfs)
            if not total:
                continue  # integrated GPU: shares system memory
            used = min(used or 0, total)
            temp, power = self._hwmon(device, key=slot or card.name)
            gpus.append(
                GpuStateV1(
                    index=len(gpus),
                    uuid=slot,
                    name=read_text(device / "product_name") or f"Intel GPU {ev.get('PCI_ID', '')} ({driver})",
                    vendor="intel",
                    memory_total_bytes=total,
                    memory_used_bytes=used,
                    memory_free_bytes=total - used,
                    temperature_c=temp,
                    power_w=power,
                )
            )
        return gpus

    def available(self) -> bool:
        """Whether any Intel GPU is readable."""
        return bool(self.read())

    def _debugfs_dirs(self, minor: int, slot: str) -> list[Path]:
        base = under(self._root, "/sys/kernel/debug/dri")
        return [base / str(minor), base / slot] if slot else [base / str(minor)]

    @staticmethod
    def _xe_memory(device: Path, debugfs: list[Path]) -> tuple[int, int | None]:
        tiles = sorted(p for p in device.glob("tile[0-9]*") if p.is_dir())
        total = 0
        used: int | None = None
        for tile in tiles:
            size = read_int(tile / "physical_vram_size_bytes")
            if not size:
                continue
            total += size
            t = tile.name.removeprefix("tile")
            for d in debugfs:
                dump = read_text(d / f"vram{t}_mm")
                if dump is None:
                    continue
                _, usage = parse_ttm_manager(dump)
                if usage is not None:
                    used = (used or 0) + usage
                    break
        return total, used

    @staticmethod
    def _i915_memory(card: Path, debugfs: list[Path]) -> tuple[int, int | None]:
        total = read_int(card / "lmem_total_bytes")
        if total:
            avail = read_int(card / "lmem_avail_bytes")
            return total, (total - avail) if avail is not None else None
        for d in debugfs:
            dump = read_text(d / "i915_gem_objects")
            if dump is None:
                continue
            size = usage = 0
            found = False
            for name, (s, u) in parse_i915_gem_objects(dump).items():
                if name.startswith("local") and s:
                    found = True
                    size += s
                    usage += u or 0
            if found:
                return size, usage
        return 0, None

    def _hwmon(self, device: Path, *, key: str) -> tuple[float | None, float | None]:
        temp = power = None
        for hw in hwmon_dirs(device):
            if temp is None:
                for name in ("temp2_input", "temp1_input"):
                    milli = read_int(hw / name)
                    if milli is not None:
                        temp = milli / 1000.0
                        break
            if power is None:
                micro = read_int(hw / "power1_input")
                if micro is not None:
                    power = micro / 1_000_000.0
                    continue
                energy = read_int(hw / "energy1_input")
                if energy is not None:
                    now = self._clock()
                    prev = self._energy.get(key)
                    self._energy[key] = (now, energy)
                    if prev is not None and now > prev[0] and energy >= prev[1]:
                        power = (energy - prev[1]) / 1_000_000.0 / (now - prev[0])
        return temp, power
