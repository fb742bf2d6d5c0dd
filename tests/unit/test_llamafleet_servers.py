"""turnout.llamafleet.servers: command lines, environment, backend strings, start failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from turnout.common.backends.config import BackendKind, parse_backends
from turnout.llamafleet.errors import ServerError
from turnout.llamafleet.install import LlamaHome, Runtime
from turnout.llamafleet.models import RAND_6M, SMOLLM2
from turnout.llamafleet.servers import FLEETS, LlamaFleet, LlamaServer, Member, server_env

RUNTIME = Runtime(python=Path("/venv/bin/python"), version="0.3.36", wheel=Path("/w.whl"))


def server(tmp_path: Path, member: Member, port: int) -> LlamaServer:
    return LlamaServer(RUNTIME, member, tmp_path / "m.gguf", log_dir=tmp_path, port=port)


def test_argv_serves_the_alias_on_the_port_queueing_requests_without_all_logits(tmp_path: Path) -> None:
    s = server(tmp_path, Member("llama-tiny", RAND_6M, n_ctx=512, n_threads=2), 4242)
    argv = s.argv()
    assert argv[:3] == ["/venv/bin/python", "-m", "llama_cpp.server"]
    opts = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert opts == {
        "--model": str(tmp_path / "m.gguf"),
        "--model_alias": "rand-llama:6m-f32",
        "--host": "127.0.0.1",
        "--port": "4242",
        "--n_ctx": "512",
        "--n_threads": "2",
        "--n_threads_batch": "2",
        "--interrupt_requests": "false",
        "--logits_all": "false",  # else every prompt token's logits are kept (n_ctx x vocab floats)
    }
    assert s.url == "http://127.0.0.1:4242/v1"
    assert s.backend_entry == "llama-tiny:openai=http://127.0.0.1:4242/v1"


def test_a_llama_server_binary_gets_its_own_flags_with_the_layers_offloaded(tmp_path: Path) -> None:
    member = Member("gpu-8b", RAND_6M, n_ctx=4096, n_threads=4, n_gpu_layers=99)
    s = LlamaServer(None, member, tmp_path / "m.gguf", log_dir=tmp_path, port=4343, binary=Path("/opt/llama-server"))
    argv = s.argv()
    assert argv[0] == "/opt/llama-server"
    assert dict(zip(argv[1::2], argv[2::2], strict=True)) == {
        "-m": str(tmp_path / "m.gguf"),
        "-a": "rand-llama:6m-f32",
        "--host": "127.0.0.1",
        "--port": "4343",
        "-c": "4096",
        "-t": "4",
        "-ngl": "99",
    }
    py = server(tmp_path, member, 4344).argv()  # the Python server offloads too when asked
    assert py[-2:] == ["--n_gpu_layers", "99"]
    with pytest.raises(ValueError, match="runtime or a llama-server binary"):
        LlamaServer(None, member, tmp_path / "m.gguf", log_dir=tmp_path)


def test_server_env_drops_what_llama_cpp_server_would_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("HOST", "PORT", "MODEL", "N_CTX", "TURNOUT_BACKENDS"):
        monkeypatch.setenv(k, "x")
    env = server_env()
    assert not {"HOST", "PORT", "MODEL", "N_CTX", "TURNOUT_BACKENDS"} & env.keys()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in env


def test_backends_value_is_a_valid_turnout_backends_string(tmp_path: Path) -> None:
    fleet = LlamaFleet(FLEETS["default"], home=LlamaHome(tmp_path, (tmp_path,), tmp_path))
    for i, m in enumerate(fleet.members):
        fleet.servers[m.backend] = server(tmp_path, m, 5000 + i)
    configs = parse_backends(fleet.backends_value)
    assert [(c.name, c.kind, c.url) for c in configs] == [
        ("llama-smol", BackendKind.OPENAI, "http://127.0.0.1:5000/v1"),
        ("llama-tiny", BackendKind.OPENAI, "http://127.0.0.1:5001/v1"),
        ("llama-big", BackendKind.OPENAI, "http://127.0.0.1:5002/v1"),
    ]
    info = fleet.describe()
    assert info["ports"] == {"llama-smol": 5000, "llama-tiny": 5001, "llama-big": 5002}
    assert [s["model"] for s in info["servers"]] == [
        "smollm2:135m-instruct-q4_1",
        "rand-llama:6m-f32",
        "rand-llama:600m-q4_1",
    ]


def test_e2e_fleet_has_two_replicas_of_smollm2() -> None:
    smol = [m.backend for m in FLEETS["e2e"] if m.model == SMOLLM2]
    assert smol == ["llama-smol", "llama-smol-b"]


def test_backend_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        LlamaFleet([Member("a", RAND_6M), Member("a", SMOLLM2)])


def test_a_server_that_exits_while_starting_reports_its_log(tmp_path: Path) -> None:
    # this interpreter has no llama_cpp: the server process dies at once
    runtime = Runtime(python=Path(sys.executable), version="none", wheel=Path("/w.whl"))
    s = LlamaServer(runtime, Member("llama-tiny", RAND_6M), tmp_path / "m.gguf", log_dir=tmp_path)
    s.start()
    try:
        with pytest.raises(ServerError, match=r"(?s)exited with code 1 while starting.*No module named 'llama_cpp'"):
            s.wait_ready(timeout=30)
    finally:
        s.stop()
    assert not s.alive
