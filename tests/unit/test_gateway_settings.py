"""Gateway settings: defaults, nested env variables, client keys, readable errors."""

from __future__ import annotations

import pytest

from turnout.common.errors import ConfigError
from turnout.gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the repo
    for name in list(__import__("os").environ):
        if name.startswith("TURNOUT_"):
            monkeypatch.delenv(name)


def test_defaults():
    g = GatewaySettings.load().gateway
    assert (g.host, g.port, g.virtual_model, g.route_timeout_s) == ("0.0.0.0", 8080, "turnout/auto", 0.1)
    assert (g.max_body_bytes, g.list_real_models, g.api_keys, g.max_attempts, g.workers) == (4 << 20, True, None, 3, 1)


def test_nested_env_variables(monkeypatch):
    monkeypatch.setenv("TURNOUT_GATEWAY__PORT", "9000")
    monkeypatch.setenv("TURNOUT_GATEWAY__ROUTE_TIMEOUT_S", "0.05")
    monkeypatch.setenv("TURNOUT_GATEWAY__API_KEYS", '["k1", "k2"]')
    monkeypatch.setenv("TURNOUT_BACKENDS", "ollama=http://localhost:11434")
    s = GatewaySettings.load()
    assert (s.gateway.port, s.gateway.route_timeout_s) == (9000, 0.05)
    assert [k.get_secret_value() for k in s.gateway.api_keys or []] == ["k1", "k2"]
    assert [b.name for b in s.backends] == ["ollama"]


def test_comma_separated_keys_in_code():
    s = GatewaySettings.load(gateway={"api_keys": "a, b"})
    assert [k.get_secret_value() for k in s.gateway.api_keys or []] == ["a", "b"]


def test_bad_values_give_a_readable_error(monkeypatch):
    monkeypatch.setenv("TURNOUT_GATEWAY__PORT", "99999")
    with pytest.raises(ConfigError, match="TURNOUT_GATEWAY__PORT"):
        GatewaySettings.load()


def test_placeholder_client_keys_are_refused_in_prod():
    with pytest.raises(ConfigError, match="placeholder"):
        GatewaySettings.load(environment="prod", gateway={"api_keys": ["changeme"]})
