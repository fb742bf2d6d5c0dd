"""The size of the one image's venv against one venv per service, measured without Docker.

``python bench/image_size.py`` runs the uv commands of ``deploy/Dockerfile`` outside Docker, in a
temporary build context laid out as the Dockerfile's COPY lines lay it out (``pyproject.toml``,
``uv.lock``, ``libs/``, ``services/``, ``tools/fakefleet/``), with this machine's Python 3.11:

* the **dependency layer**: ``uv sync --no-install-workspace`` from ``uv.lock`` and the root
  ``pyproject.toml`` alone (what the image rebuilds only when the lock changes);
* the **combined venv**: then ``uv sync`` of every service package (the image's ``/app/.venv``);
* **per-service venvs**: ``uv sync --package turnout-<x>`` into a venv of its own, for each of the
  seven packages the previous images were built from.

After the dependency layer, the extension modules that carry debug sections lose them as the
Dockerfile's step does (``STRIP_DEBUG``, the same shell line; ``--no-strip``: measure without
it): NumKong's (~40 MB of DWARF), uvloop's, asyncpg's, aiohttp's and the other Cython modules'.
Not the libraries auditwheel bundled (``<package>.libs/``): stripping every shared object of the
venv broke numpy (its patched OpenBLAS: "ELF load command address/offset not page-aligned").
Every extension module of the combined venv is imported before and after the strip, and the
same ones must import; then the services' apps are imported and NumKong computes a product.

Printed: MB per venv (``du``), the layer split, and the ratio per-service total / combined. The
base image (python:3.11-slim-bookworm) is the same under both layouts and not counted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PER_SERVICE = ("common", "gateway", "scorer", "profiler", "sync", "gpu-agent", "fakefleet")


def dockerfile_packages() -> list[str]:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    found = re.search(r'^ARG PACKAGES="([^"]+)"', text, re.M)
    if found is None:
        raise SystemExit("deploy/Dockerfile has no ARG PACKAGES line")
    return found.group(1).split()


def du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def uv() -> str:
    found = shutil.which("uv") or str(REPO / ".run" / "tools" / "bin" / "uv")
    if not Path(found).exists():
        raise SystemExit("uv not found: run `make install` first")
    return found


def sync(ctx: Path, venv: Path, *args: str) -> None:
    env = {
        **os.environ,
        "UV_COMPILE_BYTECODE": "1",
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_FROZEN": "1",
        "UV_NO_DEV": "1",
        "UV_PROJECT_ENVIRONMENT": str(venv),
    }
    cmd = [uv(), "sync", "--quiet", "--no-editable", "--python", sys.executable, *args]
    subprocess.run(cmd, cwd=ctx, env=env, check=True)


STRIP_DEBUG = (
    "find {venv} -name '*.so' -not -path '*.libs/*' -exec sh -c 'for f; do "
    'if readelf -S "$f" 2>/dev/null | grep -qF .debug_info; then strip --strip-debug "$f"; fi; '
    "done' sh {{}} +"
)
"""The Dockerfile's strip step, for the venv at ``{venv}`` (``/app/.venv`` there)."""

IMPORT_ALL = """
import importlib, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for so in sorted(site.rglob("*.so")):
    rel = so.relative_to(site)
    if not any(p.endswith(".libs") for p in rel.parts):
        mod = ".".join([*rel.parts[:-1], rel.name.split(".")[0]])
        try:
            importlib.import_module(mod)
            print(mod)
        except Exception:
            pass
"""
"""Prints the extension modules of the running venv that import (a bundled library is not one)."""


def importable(venv: Path) -> list[str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], capture_output=True, text=True, check=True)
    return out.stdout.split()


def strip_debug(venv: Path) -> None:
    """The Dockerfile's step (:data:`STRIP_DEBUG`) on ``venv``."""
    if shutil.which("strip") is None or shutil.which("readelf") is None:
        raise SystemExit("strip and readelf (binutils) not found: install binutils, or pass --no-strip")
    subprocess.run(["sh", "-c", STRIP_DEBUG.format(venv=venv)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-strip", action="store_true", help="leave the shared objects' debug sections in")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-image-"))
    try:
        ctx = tmp / "ctx"
        (ctx / "tools").mkdir(parents=True)
        for f in ("pyproject.toml", "uv.lock"):
            shutil.copy(REPO / f, ctx / f)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
        packages = dockerfile_packages()
        combined = tmp / "combined"
        sync(ctx, combined, "--no-install-workspace", *packages)  # the Dockerfile's first RUN
        if not opts.no_strip:  # and the one after it
            before = importable(combined)
            strip_debug(combined)
            after = importable(combined)
            if after != before:
                raise SystemExit(f"the strip broke extension modules: {sorted(set(before) - set(after))}")
            print(f"stripped: the venv's {len(after)} importable extension modules still import")
        deps = du_mb(combined)
        for d in ("libs", "services"):
            shutil.copytree(REPO / d, ctx / d, ignore=ignore)
        shutil.copytree(REPO / "tools" / "fakefleet", ctx / "tools" / "fakefleet", ignore=ignore)
        sync(ctx, combined, *packages)  # the second RUN
        total = du_mb(combined)
        check = [
            str(combined / "bin" / "python"),
            "-c",
            # the __main__ modules import their app only after --help: import the apps themselves
            "import turnout.gateway.serving, turnout.scorer.app, turnout.profiler.worker, "
            "turnout.sync.worker, turnout.gpu_agent.app, turnout.common.arq_running, "
            "turnout.common.db.migrate, turnout.fakefleet.__main__\n"
            # the stripped module still computes (the learned index's screen)
            "import numpy, numkong; m = numpy.arange(-64, 64, dtype=numpy.int8).reshape(2, 64)\n"
            "got = numpy.asarray(numkong.dots_packed(m, numkong.dots_pack(m)))\n"
            "assert got.tolist() == (m.astype(int) @ m.T).tolist()",
        ]
        subprocess.run(check, check=True)
        sizes = {}
        for pkg in PER_SERVICE:
            venv = tmp / f"per-{pkg}"
            sync(ctx, venv, "--package", f"turnout-{pkg}")
            if not opts.no_strip:
                strip_debug(venv)
            sizes[pkg] = du_mb(venv)
        per_total = sum(sizes.values())
        print(f"combined venv (the image): {total} MB = dependency layer {deps} MB + our packages {total - deps} MB")
        print("per-service venvs: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f" = {per_total} MB")
        print(f"ratio per-service / combined: {per_total / total:.2f}x")
    finally:
        if opts.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
