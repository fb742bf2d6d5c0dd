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
    assert (g.host, g.port, g.virtual_model, g.route_timeout_s) == ("127.0.0.1", 8080, "turnout/auto", 0.1)
    assert (g.cors_allow_origins, g.admin_allow_cidrs, g.metrics_port) == ([], [], None)
    assert (g.max_n, g.max_messages, g.prestop_delay_s, g.drain_grace_s) == (8, 1000, 5.0, 60.0)
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
        GatewaySettings.load(environment="prod", admin_key="a-real-admin-key", gateway={"api_keys": ["changeme"]})


def test_prod_refuses_to_start_without_an_admin_key():
    with pytest.raises(ConfigError, match="TURNOUT_ADMIN_KEY is not set"):
        GatewaySettings.load(environment="prod")
    assert GatewaySettings.load(environment="prod", admin_key="a-real-admin-key").admin_key is not None
    assert GatewaySettings.load(environment="dev").admin_key is None


def test_secrets_come_from_files_in_the_secrets_dir(monkeypatch, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "turnout_admin_key").write_text("admin-from-file\n")
    monkeypatch.setenv("TURNOUT_SECRETS_DIR", str(secrets))
    s = GatewaySettings.load(environment="prod")
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "admin-from-file"
    monkeypatch.setenv("TURNOUT_ADMIN_KEY", "from-env")
    assert GatewaySettings.load().admin_key.get_secret_value() == "from-env"  # type: ignore[union-attr]


def test_a_missing_secrets_dir_is_a_readable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TURNOUT_SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="is not a directory"):
        GatewaySettings.load()


def test_hashed_client_keys_must_be_sha256_hex():
    digest = "sha256:" + "ab" * 32
    s = GatewaySettings.load(gateway={"api_keys": [digest, "plain-key"]})
    assert [k.get_secret_value() for k in s.gateway.api_keys or []] == [digest, "plain-key"]
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        GatewaySettings.load(gateway={"api_keys": ["sha256:xyz"]})


def test_lists_from_comma_separated_env_values(monkeypatch):
    monkeypatch.setenv("TURNOUT_GATEWAY__CORS_ALLOW_ORIGINS", '["https://app.example"]')
    monkeypatch.setenv("TURNOUT_GATEWAY__ADMIN_ALLOW_CIDRS", '["10.0.0.0/8", "127.0.0.1/32"]')
    g = GatewaySettings.load().gateway
    assert g.cors_allow_origins == ["https://app.example"]
    assert [str(n) for n in g.admin_allow_cidrs] == ["10.0.0.0/8", "127.0.0.1/32"]
