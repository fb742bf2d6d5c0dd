"""``bench/hostinfo.py``: the line naming the machine a bench ran on."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hostinfo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hostinfo", REPO / "bench" / "hostinfo.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("flags", "name", "simd"),
    [
        ("fpu sse2 avx avx2 fma", "AMD EPYC", ["avx2"]),
        (
            "avx2 avx512f avx512_vnni amx_tile",
            "Intel(R) Xeon(R) Platinum 8480+",
            ["avx512f", "avx512_vnni", "amx_tile", "avx2"],
        ),
    ],
)
def test_cpu_names_the_model_and_its_vector_extensions(
    hostinfo: ModuleType, tmp_path: Path, flags: str, name: str, simd: list[str]
) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: {name}\n"
    )
    assert hostinfo.cpu(info) == (name, simd)


def test_host_line_carries_a_timed_piece_of_python(hostinfo: ModuleType) -> None:
    line = hostinfo.host_line()
    m = re.fullmatch(r"host: .+, \d+ cores, .+; Python 3\.\d+\.\d+ \(.+\), sum\(range\(50\)\) in (\d+) ns", line)
    assert m is not None, line
    assert 10 < int(m.group(1)) < 100_000
