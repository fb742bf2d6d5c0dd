"""switchyard.llamafleet.install: finding wheels, refusing to build where it cannot (no llama.cpp needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.llamafleet.errors import LlamaUnavailable, WheelUnbuildable
from switchyard.llamafleet.install import LlamaHome, build_wheel, ensure_runtime, find_repo_root, find_wheel

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
