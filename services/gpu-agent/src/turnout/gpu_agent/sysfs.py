"""Small, tolerant helpers shared by the non-NVML GPU readers: read sysfs/debugfs files under a
root path (``/`` in production, a fixture tree in tests) and run vendor tools through a
:data:`Runner` (``subprocess`` in production, recorded output in tests).

Every helper returns ``None`` for a missing, unreadable or malformed value: one unsupported
field never hides the others (the ``safenvml`` idea from gpustat).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from turnout.gpu_agent.errors import GpuReadError

Runner = Callable[[Sequence[str]], str]
"""Runs a command and returns its stdout; raises :class:`GpuReadError` when it cannot."""

NA_VALUES = frozenset(
    {"", "[n/a]", "n/a", "[not supported]", "not supported", "[unknown error]", "[insufficient permissions]"}
)


def run_command(argv: Sequence[str], *, timeout_s: float = 5.0) -> str:
    """The production :data:`Runner`."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise GpuReadError(f"{argv[0]} not found") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuReadError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()
        raise GpuReadError(f"{argv[0]} exited {done.returncode}: {err[-1] if err else ''}")
    return done.stdout


def under(root: Path, absolute: str) -> Path:
    """``/sys/class/drm`` under ``root``."""
    return root / absolute.lstrip("/")


def read_text(path: Path) -> str | None:
    """A sysfs file's text, or ``None`` when it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    """A sysfs file as an integer (decimal or hex), or ``None``."""
    raw = read_text(path)
    if raw is None:
        return None
    try:
        return int(raw, 0) if raw.lower().startswith("0x") else int(raw)
    except ValueError:
        return None


def parse_number(raw: str) -> float | None:
    """A number from a tool's output, ``None`` for ``[N/A]``, ``[Not Supported]`` and the like."""
    value = raw.strip()
    if value.lower() in NA_VALUES:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def uevent(device: Path) -> dict[str, str]:
    """``device/uevent`` as a dict (``DRIVER``, ``PCI_ID``, ``PCI_SLOT_NAME`` …)."""
    out: dict[str, str] = {}
    for line in (read_text(device / "uevent") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def drm_cards(root: Path) -> list[tuple[int, Path]]:
    """``(N, /sys/class/drm/cardN)`` for every card, in N order; connector entries
    (``card0-DP-1``) and render nodes are skipped."""
    drm = under(root, "/sys/class/drm")
    try:
        entries = list(drm.iterdir())
    except OSError:
        return []
    cards = []
    for entry in entries:
        suffix = entry.name.removeprefix("card")
        if entry.name.startswith("card") and suffix.isdigit():
            cards.append((int(suffix), entry))
    return sorted(cards)


def hwmon_dirs(device: Path) -> list[Path]:
    """A device's hwmon directories."""
    try:
        return sorted(p for p in (device / "hwmon").iterdir() if p.name.startswith("hwmon"))
    except OSError:
        return []


def mib(value: float | None) -> int:
    """MiB as bytes (``None`` is 0)."""
    return int(value * 1024 * 1024) if value is not None else 0
