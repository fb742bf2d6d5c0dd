"""Nothing listens beyond loopback unless the operator says so (docs/security.md)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from turnout.gateway.settings import GatewayOptions
from turnout.gpu_agent.settings import GpuAgentOptions
from turnout.profiler.settings import ProfilerOptions
from turnout.scorer.settings import ScorerOptions
from turnout.sync.settings import SyncOptions


@pytest.mark.parametrize("options", [ScorerOptions, GpuAgentOptions, ProfilerOptions, SyncOptions])
def test_every_ops_port_listens_on_loopback_by_default(options: type[BaseModel]) -> None:
    assert options().ops_host == "127.0.0.1"  # type: ignore[attr-defined]
    assert options(ops_host="0.0.0.0").ops_host == "0.0.0.0"  # type: ignore[attr-defined,call-arg]


def test_the_gateway_listens_on_loopback_by_default() -> None:
    assert GatewayOptions().host == "127.0.0.1"
