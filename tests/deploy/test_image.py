"""deploy/Dockerfile, read as a reviewer would (there is no Docker engine here; its size is
measured by bench/image_size.py): one image for every service, dependencies in a layer before
the sources, a uv cache mount, pinned base and uv, a numeric user, OCI labels."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()
LINES = [line for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines() if line and not line.startswith("#")]


def _arg(name: str) -> str:
    found = re.search(rf'^ARG {name}="?([^"\n]+)"?$', DOCKERFILE, re.M)
    assert found, name
    return found.group(1)


def test_base_image_pinned_by_digest_and_uv_by_version() -> None:
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", _arg("PYTHON_IMAGE"))
    uv_image = _arg("UV_IMAGE")
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv_image)
    assert [line for line in LINES if line.startswith("FROM")] == [
        "FROM ${UV_IMAGE} AS uv",
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE}",
    ]


def test_every_service_package_is_in_the_one_image() -> None:
    packages = _arg("PACKAGES").split()
    names = {p for p in packages if p != "--package"}
    services = {tomllib.loads(p.read_text())["project"]["name"] for p in (REPO / "services").glob("*/pyproject.toml")}
    assert services <= names
    assert names == services | {"turnout-fakefleet"}  # the compose demo's simulated fleet, nothing else


def test_dependencies_are_installed_before_the_sources_are_copied() -> None:
    runs = [i for i, line in enumerate(LINES) if line.startswith("RUN") and "uv sync" in line]
    copies = [i for i, line in enumerate(LINES) if line.startswith(("COPY libs", "COPY services"))]
    assert len(runs) == 2 and copies
    deps, ours = (LINES[i] for i in runs)
    assert runs[0] < min(copies) < max(copies) < runs[1]
    assert "--no-install-workspace" in deps
    assert "--mount=type=bind,source=uv.lock,target=uv.lock" in deps
    for run in (deps, ours):
        assert "--mount=type=cache,target=/root/.cache/uv" in run


def test_the_final_stage_runs_as_a_numeric_user_with_labels() -> None:
    final = DOCKERFILE.rsplit("FROM ${PYTHON_IMAGE}", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "useradd --system --uid 10001 --gid 10001" in final
    assert "COPY --from=build /app/.venv /app/.venv" in final
    labels = set(re.findall(r"org\.opencontainers\.image\.([a-z.]+)=", final))
    assert labels == {"title", "description", "version", "revision", "created", "source", "base.name"}
    assert "/usr/local/bin/uv" not in final and "uv sync" not in final  # uv stays in the build stage


def test_the_build_context_is_only_what_the_image_needs() -> None:
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :] == [
        "*",
        "!pyproject.toml",
        "!uv.lock",
        "!libs/",
        "!services/",
        "!tools/fakefleet/",
        "**/__pycache__",
        "**/*.pyc",
        "**/.pytest_cache",
    ]


def test_the_build_stage_strips_debug_sections_as_the_size_bench_does() -> None:
    """The strip step runs after the dependencies are installed and before our sources, and is
    the very line bench/image_size.py runs, measures and checks (every extension module still
    imports, NumKong computes); it leaves auditwheel's bundled libraries alone; binutils stays in
    the build stage."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_size", REPO / "bench" / "image_size.py")
    assert spec is not None and spec.loader is not None
    image_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_size)
    strips = [i for i, line in enumerate(LINES) if line.startswith("RUN") and "strip" in line.split()]
    assert len(strips) == 1
    step = LINES[strips[0]]
    assert step == "RUN " + image_size.STRIP_DEBUG.format(venv="/app/.venv")
    assert "-not -path '*.libs/*'" in step
    deps = next(i for i, line in enumerate(LINES) if line.startswith("RUN") and "--no-install-workspace" in line)
    copies = min(i for i, line in enumerate(LINES) if line.startswith(("COPY libs", "COPY services")))
    assert deps < strips[0] < copies
    build, final = DOCKERFILE.rsplit("FROM ${PYTHON_IMAGE}", 1)
    assert "install -y --no-install-recommends binutils" in build
    assert "binutils" not in final and "strip" not in final
