"""``llama-cpp-python[server]`` in a venv of its own, from a wheel built at most once per machine.

Layout (all ignored by git)::

    .run/llama/venv/       the runtime: llama_cpp + uvicorn, fastapi, sse-starlette, ...
    .run/llama/models/     GGUF files (see :mod:`turnout.llamafleet.models`)
    .run/llama/logs/       server logs, the wheel build log
    ${XDG_CACHE_HOME:-~/.cache}/turnout/wheels/   the SmolLM2 wheel (shared by checkouts)
        <flavour>/         built llama-cpp-python wheels, one directory per build flavour
    .run/wheels/           searched for wheels too (and .run/wheels/<flavour>/ for llama.cpp)

:func:`ensure_runtime` is idempotent and cheap once done (a marker file plus one import check).
It takes the newest ``llama_cpp_python-0.3.*`` wheel from the wheel directories; with none it
builds one (``pip wheel --no-deps``, CPU, about 8 minutes on 2 cores) into the cache.

The build is **portable**, not tuned to the building CPU: llama.cpp's default ``GGML_NATIVE``
compiles for every instruction set the CPU *advertises*, and a VM that advertises AMX or
AVX-512 without letting a process use it kills the server with SIGILL on its first Q4 matmul
(seen on this project's 2-core box: the f32 model served, the Q4_1 ones died silently). So on
x86-64 the build targets x86-64-v3 (AVX2, FMA, F16C, BMI2; no AVX-512, no AMX), which every
x86 server of the last decade runs; ``TURNOUT_LLAMA_CMAKE_ARGS`` replaces the flags (e.g.
``-DGGML_NATIVE=ON`` for a machine you trust), and a different value builds into a different
flavour directory, so a wheel is never reused with other flags. Then it
creates the venv (with ``uv`` when it is on ``PATH`` or in ``.run/tools/bin``, else
``python -m venv``) and installs ``<wheel>[server]``, whose extras come from PyPI. When the
runtime cannot be had (no compiler, the build fails, no package index) it raises
:class:`~turnout.llamafleet.errors.LlamaUnavailable` with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from turnout.llamafleet.errors import LlamaUnavailable, WheelUnbuildable

LLAMA_CPP_REQUIREMENT = "llama-cpp-python==0.3.*"
PORTABLE_X86_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
"""The flags of the default x86-64 build (x86-64-v3; see the module docstring)."""
CMAKE_ARGS_ENV = "TURNOUT_LLAMA_CMAKE_ARGS"
"""What a build fetches from PyPI; any cached ``0.3.x`` wheel is accepted."""
_WHEEL_RE = re.compile(r"^llama_cpp_python-(0\.3\.\d+)-.*\.whl$")
_MARKER = "turnout-llama.json"
_BUILD_TIMEOUT_S = 45 * 60
_INSTALL_TIMEOUT_S = 15 * 60

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    sys.stderr.write(f"llamafleet: {msg}\n")
    sys.stderr.flush()


def find_repo_root(start: Path | None = None) -> Path:
    """The workspace root (the nearest parent holding ``uv.lock``), else the current directory."""
    here = (start or Path(__file__)).resolve()
    for parent in (here, *here.parents):
        if (parent / "uv.lock").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def build_cmake_args() -> str:
    """The CMake flags a build uses: ``TURNOUT_LLAMA_CMAKE_ARGS``, else portable on x86-64,
    else llama.cpp's defaults (other architectures)."""
    if CMAKE_ARGS_ENV in os.environ:
        return os.environ[CMAKE_ARGS_ENV].strip()
    return PORTABLE_X86_CMAKE_ARGS if platform.machine().lower() in ("x86_64", "amd64") else ""


def build_flavour(cmake_args: str | None = None) -> str:
    """The wheel cache subdirectory for a set of build flags: ``cpu-<hash>``."""
    args = build_cmake_args() if cmake_args is None else cmake_args
    return "cpu-" + hashlib.sha256(" ".join(args.split()).encode()).hexdigest()[:10]


def user_wheel_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "turnout" / "wheels"


@dataclass(frozen=True, slots=True)
class LlamaHome:
    """Where the runtime, models, logs and wheels live."""

    root: Path
    wheel_dirs: tuple[Path, ...]
    repo: Path

    @classmethod
    def default(cls, repo: Path | None = None) -> LlamaHome:
        repo = repo or find_repo_root()
        return cls(root=repo / ".run" / "llama", wheel_dirs=(user_wheel_cache(), repo / ".run" / "wheels"), repo=repo)

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def build_cache(self) -> Path:
        """Where fetched model wheels go (the first wheel directory)."""
        return self.wheel_dirs[0]

    @property
    def llama_wheel_dirs(self) -> tuple[Path, ...]:
        """Where llama-cpp-python wheels of this build flavour are looked for."""
        flavour = build_flavour()
        return tuple(d / flavour for d in self.wheel_dirs)

    @property
    def llama_build_cache(self) -> Path:
        """Where a freshly built llama-cpp-python wheel goes."""
        return self.llama_wheel_dirs[0]


@dataclass(frozen=True, slots=True)
class Runtime:
    """A ready llama.cpp runtime: the venv's interpreter and the installed version."""

    python: Path
    version: str
    wheel: Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` so that parallel test runs do not install or generate twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def find_wheel(dirs: tuple[Path, ...] | list[Path]) -> Path | None:
    """The newest ``llama_cpp_python-0.3.*`` wheel in ``dirs`` (first directory wins a tie)."""
    best: tuple[tuple[int, ...], int, Path] | None = None
    for rank, d in enumerate(dirs):
        if not d.is_dir():
            continue
        for f in d.iterdir():
            m = _WHEEL_RE.match(f.name)
            if m and f.is_file():
                key = (_version_key(m.group(1)), -rank, f)
                if best is None or key[:2] > best[:2]:
                    best = key
    return best[2] if best else None


def find_uv(repo: Path) -> str | None:
    local = repo / ".run" / "tools" / "bin" / "uv"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("uv")


def _run(argv: list[str], *, what: str, log: Path, timeout: float, env: dict[str, str] | None = None) -> None:
    """Run a step with its output in ``log``; a failure raises LlamaUnavailable with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            rc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            raise LlamaUnavailable(f"{what} took longer than {timeout:.0f}s (log: {log})") from None
        except OSError as exc:
            raise LlamaUnavailable(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if rc != 0:
        raise LlamaUnavailable(f"{what} failed (exit {rc}); last lines of {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _compilers_missing() -> list[str]:
    missing = []
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        missing.append("a C compiler")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def build_wheel(home: LlamaHome, *, python: Path, progress: Progress = stderr_progress) -> Path:
    """``pip wheel --no-deps llama-cpp-python==0.3.*`` into the wheel cache (CPU build, minutes)."""
    missing = _compilers_missing()
    if missing:
        raise WheelUnbuildable(
            f"llama.cpp wheel cannot be built here: {' and '.join(missing)} missing "
            "(apt-get install build-essential), and no cached llama_cpp_python-0.3.* wheel in "
            + ", ".join(str(d) for d in home.llama_wheel_dirs)
        )
    cache = home.llama_build_cache
    cache.mkdir(parents=True, exist_ok=True)
    log = home.logs / "build-wheel.log"
    progress(
        f"building {LLAMA_CPP_REQUIREMENT} from source (compiles llama.cpp: about 8 minutes on 2 cores, once; "
        f"cached in {cache}; log {log})"
    )
    env = dict(os.environ)
    cmake_args = build_cmake_args()
    if cmake_args:
        env["CMAKE_ARGS"] = cmake_args
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    # --no-cache-dir: pip caches the wheels it builds by source, not by CMAKE_ARGS
    argv = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(cache)]
    argv.append(LLAMA_CPP_REQUIREMENT)
    try:
        _run(argv, what="building the llama-cpp-python wheel", log=log, timeout=_BUILD_TIMEOUT_S, env=env)
    except LlamaUnavailable as exc:
        raise WheelUnbuildable(f"llama.cpp wheel cannot be built here: {exc}") from None
    wheel = find_wheel((cache,))
    if wheel is None:
        raise WheelUnbuildable(f"llama.cpp wheel cannot be built here: pip reported success but left no wheel ({log})")
    progress(f"built {wheel.name}")
    return wheel


def create_venv(home: LlamaHome, *, progress: Progress = stderr_progress) -> None:
    """A fresh venv with pip in it (pip builds the wheel and fetches model packages)."""
    if home.venv.exists():
        shutil.rmtree(home.venv)
    log = home.logs / "install.log"
    uv = find_uv(home.repo)
    progress(f"creating {home.venv}")
    if uv:
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        argv = [uv, "venv", "--seed", "--quiet", "--python", sys.executable, str(home.venv)]
        _run(argv, what="creating the llama venv", log=log, timeout=300, env=env)
    else:
        _run([sys.executable, "-m", "venv", str(home.venv)], what="creating the llama venv", log=log, timeout=300)


def install_wheel(home: LlamaHome, wheel: Path, *, progress: Progress = stderr_progress) -> None:
    log = home.logs / "install.log"
    progress(f"installing {wheel.name}[server] and its server dependencies into {home.venv}")
    uv = find_uv(home.repo)
    req = f"{wheel}[server]"
    if uv:
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        argv = [uv, "pip", "install", "--quiet", "--python", str(home.python), req]
    else:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        argv = [str(home.python), "-m", "pip", "install", "-q", req]
    _run(argv, what="installing llama-cpp-python[server]", log=log, timeout=_INSTALL_TIMEOUT_S, env=env)


def probe(python: Path) -> str | None:
    """The llama_cpp version when ``llama_cpp.server`` imports in that interpreter, else None."""
    if not python.is_file():
        return None
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    try:
        res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def ensure_runtime(
    home: LlamaHome | None = None, *, allow_build: bool = True, progress: Progress = stderr_progress
) -> Runtime:
    """A venv where ``python -m llama_cpp.server`` works; installs (and builds) what is missing."""
    home = home or LlamaHome.default()
    with file_lock(home.root / "install.lock"):
        marker = home.venv / _MARKER
        wheel = find_wheel(home.llama_wheel_dirs)
        with contextlib.suppress(OSError, ValueError, KeyError):
            done = json.loads(marker.read_text())
            built = Path(done["wheel_path"])
            # the installed wheel is this one, or (its cache gone) one built with the same flags
            same = built == wheel if wheel is not None else built.parent.name == build_flavour()
            if same and (version := probe(home.python)):
                return Runtime(home.python, version, Path(done["wheel_path"]))
        if wheel is None and not allow_build:
            raise WheelUnbuildable(
                "llama.cpp wheel cannot be built here: building is off (--no-build) and there is no cached "
                "llama_cpp_python-0.3.* wheel in " + ", ".join(str(d) for d in home.llama_wheel_dirs)
            )
        create_venv(home, progress=progress)
        if wheel is None:
            wheel = build_wheel(home, python=home.python, progress=progress)
        install_wheel(home, wheel, progress=progress)
        version = probe(home.python)
        if version is None:
            raise LlamaUnavailable(f"llama_cpp.server does not import after installing {wheel.name} ({home.logs})")
        marker.write_text(json.dumps({"wheel": wheel.name, "wheel_path": str(wheel), "version": version}))
        progress(f"llama-cpp-python {version} ready in {home.venv}")
        return Runtime(home.python, version, wheel)
