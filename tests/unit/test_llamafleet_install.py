"""turnout.llamafleet.install: finding wheels, refusing to build where it cannot (no llama.cpp needed)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from turnout.llamafleet.errors import LlamaUnavailable, WheelUnbuildable
from turnout.llamafleet.install import (
    CMAKE_ARGS_ENV,
    PORTABLE_X86_CMAKE_ARGS,
    LlamaHome,
    build_cmake_args,
    build_flavour,
    build_wheel,
    ensure_runtime,
    find_repo_root,
    find_wheel,
)

REPO = Path(__file__).resolve().parents[2]


def touch(d: Path, name: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"")
    return d / name


def test_find_wheel_takes_the_newest_0_3_wheel(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    touch(a, "llama_cpp_python-0.3.9-py3-none-linux_x86_64.whl")
    newest = touch(b, "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl")
    touch(b, "llama_cpp_python-0.2.90-py3-none-linux_x86_64.whl")
    touch(b, "other-0.3.99-py3-none-any.whl")
    assert find_wheel((a, b)) == newest


def test_find_wheel_prefers_the_first_directory_on_a_tie(tmp_path: Path) -> None:
    first = touch(tmp_path / "a", "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl")
    touch(tmp_path / "b", "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl")
    assert find_wheel((tmp_path / "a", tmp_path / "b")) == first


def test_find_wheel_without_wheels_is_none(tmp_path: Path) -> None:
    assert find_wheel((tmp_path / "missing", tmp_path)) is None


def test_repo_root_is_the_workspace() -> None:
    assert find_repo_root() == REPO
    assert LlamaHome.default().root == REPO / ".run" / "llama"


def test_no_wheel_and_no_build_is_a_clear_unbuildable_error(tmp_path: Path) -> None:
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(tmp_path / "wheels",), repo=tmp_path)
    with pytest.raises(WheelUnbuildable, match=r"^llama.cpp wheel cannot be built here: building is off"):
        ensure_runtime(home, allow_build=False, progress=lambda _m: None)
    assert not home.venv.exists()


def test_without_compilers_the_wheel_cannot_be_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(tmp_path / "wheels",), repo=tmp_path)
    with pytest.raises(WheelUnbuildable) as err:
        build_wheel(home, python=Path("/usr/bin/python3"), progress=lambda _m: None)
    assert str(err.value).startswith("llama.cpp wheel cannot be built here: a C compiler and a C++ compiler missing")
    assert isinstance(err.value, LlamaUnavailable)


def test_the_default_x86_build_is_portable_and_its_wheels_live_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native build would use whatever the CPU advertises (AMX, AVX-512), and a VM that
    advertises them without allowing them kills the server with SIGILL."""
    monkeypatch.delenv(CMAKE_ARGS_ENV, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    args = build_cmake_args()
    assert args == PORTABLE_X86_CMAKE_ARGS
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AVX512=OFF" in args
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(tmp_path / "wheels", tmp_path / "more"), repo=tmp_path)
    flavour = build_flavour()
    assert home.llama_wheel_dirs == (tmp_path / "wheels" / flavour, tmp_path / "more" / flavour)
    # a wheel built with other flags (or by an older version of this module) is not picked up
    touch(tmp_path / "wheels", "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl")
    assert find_wheel(home.llama_wheel_dirs) is None
    monkeypatch.setenv(CMAKE_ARGS_ENV, "-DGGML_NATIVE=ON")
    assert build_cmake_args() == "-DGGML_NATIVE=ON" and build_flavour() != flavour
    monkeypatch.delenv(CMAKE_ARGS_ENV)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert build_cmake_args() == ""  # llama.cpp's own defaults elsewhere
