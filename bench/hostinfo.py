"""One line naming the machine a bench ran on, printed at the top of its figures.

The µs a decision or a request costs depend on the host: on 2026-12-07 the 2-core box was an
AMD EPYC with AVX2 only, where the same code's greeting decision took ~2.5x as long as on the
day before (whose CPU was not recorded). The line names the CPU, its vector extensions, the interpreter and
how fast it runs a fixed piece of Python (``sum(range(50))``, best of 5: 436 ns for this box's
pyenv 3.11.7 that day, 286 ns for Debian's PGO build of 3.11 on the same CPU), so that figures
from different sessions can be told apart, or scaled."""

from __future__ import annotations

import os
import platform
import sys
import timeit
from pathlib import Path

_SIMD = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "asimd", "sve")


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The CPU's model name and which of a few vector extensions it advertises."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                name = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return name, [f for f in _SIMD if f in flags]


def python_ns() -> float:
    """Nanoseconds for ``sum(range(50))`` here (best of 5 runs of 100,000)."""
    return min(timeit.repeat("sum(range(50))", number=100_000, repeat=5)) / 100_000 * 1e9


def host_line() -> str:
    name, simd = cpu()
    return (
        f"host: {name}, {os.cpu_count()} cores, {'/'.join(simd) or 'no AVX2/AVX-512 listed'}; "
        f"Python {platform.python_version()} ({sys.executable}), sum(range(50)) in {python_ns():.0f} ns"
    )


if __name__ == "__main__":
    print(host_line())
    sys.exit(0)
