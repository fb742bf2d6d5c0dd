"""gpu-agent logic without Redis or a backend: settings, the host state it builds, change
detection, the manual memory budget and the metrics' label hygiene."""

from __future__ import annotations

import os
import socket

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.fixtures.gpu.fake_nvml import FakeNvml
from turnout.common.errors import ConfigError
from turnout.common.schemas.fleet import GpuProcessV1, GpuStateV1, LoadedModelV1
from turnout.gpu_agent.agent import Agent, Observation, fingerprint, process_name
from turnout.gpu_agent.gpus import GpuReading, manual_reading
from turnout.gpu_agent.metrics import GpuAgentMetrics
from turnout.gpu_agent.nvml import NvmlReader
from turnout.gpu_agent.settings import GpuAgentSettings

GiB = 2**30
TS = 1_700_000_000.0


def settings(**gpu_agent: object) -> GpuAgentSettings:
    return GpuAgentSettings.load(gpu_agent={"host": "gpu-1", **gpu_agent})


def agent(s: GpuAgentSettings | None = None, *, nvml: str | None = "h100x2") -> Agent:
    reader = NvmlReader(FakeNvml.named(nvml)) if nvml else None
    return Agent(
        s or settings(),
        redis=Redis.from_url("redis://127.0.0.1:9/0"),  # never contacted by these tests
        reader=reader,
        backend=None,
        metrics=GpuAgentMetrics.create(CollectorRegistry()),
        clock=lambda: TS,
    )


# --- settings ----------------------------------------------------------------------------------


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("TURNOUT_GPU_AGENT__HOST", "TURNOUT_BACKENDS", "TURNOUT_GPU_MEMORY_GB"):
        monkeypatch.delenv(k, raising=False)
    opts = GpuAgentSettings.load().gpu_agent
    assert (opts.host, opts.interval_s, opts.ttl_s, opts.ops_port) == (socket.gethostname(), 2.0, 10.0, 9104)
    assert (opts.backend, opts.backend_url, opts.gpu_memory_gb, opts.readers) == (None, None, None, ["auto"])


def test_nested_env_and_the_flat_memory_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_GPU_AGENT__HOST", "box-7")
    monkeypatch.setenv("TURNOUT_GPU_AGENT__INTERVAL_S", "0.5")
    monkeypatch.setenv("TURNOUT_GPU_MEMORY_GB", "96")
    s = GpuAgentSettings.load()
    assert (s.gpu_agent.host, s.gpu_agent.interval_s, s.gpu_agent.gpu_memory_gb) == ("box-7", 0.5, 96.0)
    assert s.memory_budget_bytes == 96 * GiB


def test_invalid_settings_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match=r"ttl_s \(2.0\) must be longer than interval_s \(2.0\)"):
        settings(ttl_s=2)
    with pytest.raises(ConfigError, match="'gpu9' is not a configured backend"):
        settings(backend="gpu9")
    with pytest.raises(ConfigError, match="unknown GPU readers"):
        settings(readers=["rocm-smi-9000"])


def test_which_backend_the_agent_watches() -> None:
    backends = "local:ollama=http://127.0.0.1:11434,big:openai=http://10.0.0.5:8000/v1"
    assert GpuAgentSettings.load(backends=backends, gpu_agent={"backend": "big"}).local_backend().name == "big"  # type: ignore[union-attr]
    by_url = GpuAgentSettings.load(backends=backends, gpu_agent={"backend_url": "http://127.0.0.1:11434/"})
    assert by_url.local_backend().name == "local"  # type: ignore[union-attr]
    unnamed = GpuAgentSettings.load(gpu_agent={"host": "h", "backend_url": "http://127.0.0.1:9999"}).local_backend()
    assert unnamed is not None and (unnamed.name, unnamed.url, unnamed.kind) == (
        "h-local",
        "http://127.0.0.1:9999",
        "ollama",
    )
    by_host = GpuAgentSettings.load(
        backends='[{"name": "a", "kind": "ollama", "url": "http://a:1", "host": "h"}, '
        '{"name": "b", "kind": "ollama", "url": "http://b:1", "host": "other"}]',
        gpu_agent={"host": "h"},
    )
    assert by_host.local_backend().name == "a"  # type: ignore[union-attr]
    assert GpuAgentSettings.load(backends=backends, gpu_agent={"host": "h"}).local_backend() is None


# --- the host state ----------------------------------------------------------------------------


async def test_state_carries_every_gpu_and_the_loaded_models() -> None:
    a = agent()
    obs = await a.observe()
    obs = Observation(obs.readings, obs.gpu_error, [LoadedModelV1(name="m:7b", size_bytes=5, vram_bytes=5)], True)
    state = a.build(obs)
    assert (state.host, state.ts, state.gpu_error, state.backend, state.backend_url) == ("gpu-1", TS, None, None, None)
    assert state.gpus[1].model_copy(update={"processes": []}) == GpuStateV1(
        index=1,
        uuid="GPU-a07c5e3d-12b4-4f9e-8d6c-91e2b3f4a5d6",
        name="NVIDIA H100 80GB HBM3",
        vendor="nvidia",
        memory_total_bytes=85520809984,
        memory_used_bytes=43381399552,
        memory_free_bytes=42139410432,
        utilization_pct=87.0,
        temperature_c=58.0,
        power_w=512.43,
    )
    # per-process memory as NVML gives it (None where the driver hides it); names only where
    # /proc shows the pid (the fixture's pids are not this machine's processes)
    assert [(p.pid, p.used_bytes) for p in state.gpus[1].processes] == [(4242, 41875931136), (4343, None)]
    assert state.gpus[0].processes == []
    assert state.memory_free_bytes == 85516615680 + 42139410432
    assert [m.name for m in state.loaded_models] == ["m:7b"]
    assert state.agent_version


async def test_no_driver_publishes_no_gpus_and_says_why() -> None:
    a = agent(nvml="no-driver")
    state = a.build(await a.observe())
    assert (state.gpus, state.gpu_error) == ([], "NVML: Driver Not Loaded")


async def test_a_gpu_without_memory_info_is_left_out_and_named() -> None:
    a = agent(nvml="gb10-unified")
    state = a.build(await a.observe())
    assert state.gpus == []
    assert state.gpu_error is not None
    assert "GPU 0 (NVIDIA GB10) reports no memory" in state.gpu_error and "TURNOUT_GPU_MEMORY_GB" in state.gpu_error


async def test_manual_budget_replaces_the_readers() -> None:
    a = agent(settings(gpu_memory_gb=64), nvml=None)
    obs = await a.observe()
    assert obs.readings == [manual_reading(64 * GiB, 0)]
    loaded = [LoadedModelV1(name="x", vram_bytes=10 * GiB), LoadedModelV1(name="y", vram_bytes=6 * GiB)]
    state = a.build(Observation([manual_reading(64 * GiB, 16 * GiB)], None, loaded, True))
    assert (state.gpus[0].vendor, state.gpus[0].memory_used_bytes, state.gpus[0].memory_free_bytes) == (
        "manual",
        16 * GiB,
        48 * GiB,
    )


def test_fingerprint_ignores_time_and_telemetry_but_not_memory_or_models() -> None:
    a = agent()
    gpu = GpuReading(index=0, uuid="u", memory_total_bytes=100, memory_used_bytes=10, memory_free_bytes=90)
    base = a.build(Observation([gpu], None, [], True))
    noisy = base.model_copy(
        update={
            "ts": TS + 5,
            "gpus": [
                base.gpus[0].model_copy(update={"utilization_pct": 99.0, "temperature_c": 80.0, "power_w": 300.0})
            ],
        }
    )
    assert fingerprint(noisy) == fingerprint(base)
    fuller = base.model_copy(update={"gpus": [base.gpus[0].model_copy(update={"memory_used_bytes": 50})]})
    assert fingerprint(fuller) != fingerprint(base)
    loaded = base.model_copy(update={"loaded_models": [LoadedModelV1(name="m")]})
    assert fingerprint(loaded) != fingerprint(base)
    down = base.model_copy(update={"backend_ok": False})
    assert fingerprint(down) != fingerprint(base)
    growing = base.model_copy(
        update={"gpus": [base.gpus[0].model_copy(update={"processes": [GpuProcessV1(pid=1, used_bytes=5)]})]}
    )
    assert fingerprint(growing) == fingerprint(base)  # KV caches grow; used memory tells the change


def test_process_names_come_from_proc_where_visible(tmp_path) -> None:
    assert process_name(os.getpid()) is not None
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "comm").write_text("llama-server\n")
    assert process_name(77, proc=tmp_path) == "llama-server"
    assert process_name(78, proc=tmp_path) is None


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_follow_the_readings_and_drop_what_disappears() -> None:
    registry = CollectorRegistry()
    m = GpuAgentMetrics.create(registry)
    g0 = GpuReading(0, "u0", "A", "nvidia", 100, 10, 90, 0.5, 40.0, 100.0)
    g1 = GpuReading(1, "u1", "B", "nvidia", 200, 20, 180, 0.25, 50.0, 200.0)
    m.observe("h", [g0, g1], [LoadedModelV1(name="a", vram_bytes=7), LoadedModelV1(name="b", vram_bytes=9)], True)
    labels = {"host": "h", "gpu": "1", "uuid": "u1", "vendor": "nvidia"}
    assert registry.get_sample_value("turnout_gpu_memory_used_bytes", labels) == 20
    assert registry.get_sample_value("turnout_gpu_utilization_ratio", labels) == 0.25
    assert registry.get_sample_value("turnout_gpu_power_watts", labels) == 200
    assert registry.get_sample_value("turnout_gpu_agent_loaded_model_vram_bytes", {"host": "h", "model": "b"}) == 9
    assert registry.get_sample_value("turnout_gpu_agent_backend_up", {"host": "h"}) == 1
    assert registry.get_sample_value("turnout_gpu_agent_publishes_total", {"outcome": "error"}) == 0

    no_power = GpuReading(0, "u0", "A", "nvidia", 100, 30, 70, 0.5, 40.0, None)
    m.observe("h", [no_power], [LoadedModelV1(name="a", vram_bytes=7)], False)
    assert registry.get_sample_value("turnout_gpu_memory_used_bytes", labels) is None
    g0_labels = {**labels, "gpu": "0", "uuid": "u0"}
    assert registry.get_sample_value("turnout_gpu_memory_used_bytes", g0_labels) == 30
    assert registry.get_sample_value("turnout_gpu_power_watts", g0_labels) is None
    assert registry.get_sample_value("turnout_gpu_agent_loaded_model_vram_bytes", {"host": "h", "model": "b"}) is None
    assert registry.get_sample_value("turnout_gpu_agent_gpus", {"host": "h"}) == 1
    assert registry.get_sample_value("turnout_gpu_agent_backend_up", {"host": "h"}) == 0
