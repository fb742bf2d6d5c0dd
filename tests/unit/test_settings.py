"""Settings: ``TURNOUT_`` env vars, nested ``__`` options, backends in three forms, readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from turnout.common.backends.config import BackendKind
from turnout.common.errors import ConfigError
from turnout.common.settings import CommonSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TURNOUT_* from the outside, and no .env in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("TURNOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class _GatewayOptions(BaseModel):
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = 1_000_000


class _ServiceSettings(CommonSettings):
    gateway: _GatewayOptions = Field(default_factory=_GatewayOptions)


def test_defaults_point_at_local_redis_and_postgres() -> None:
    s = CommonSettings.load()
    assert s.environment == "dev"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/turnout"
    assert s.key_prefix == "turnout"
    assert s.backends == []
    assert s.model_fields_set == set()


def test_flat_fields_come_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("TURNOUT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("TURNOUT_LOG_JSON", "false")
    monkeypatch.setenv("TURNOUT_KEY_PREFIX", "stack-b")
    monkeypatch.setenv("TURNOUT_MIGRATE_ON_START", "0")
    s = CommonSettings.load()
    assert (s.redis_url, s.log_level, s.log_json, s.key_prefix, s.migrate_on_start) == (
        "redis://cache:6380/2",
        "DEBUG",
        False,
        "stack-b",
        False,
    )
    assert s.keys.rpc_queue("scorer.route", 1) == "stack-b:rpc:scorer.route:v1"


def test_nested_service_options_use_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_GATEWAY__PORT", "9000")
    monkeypatch.setenv("TURNOUT_REDIS_URL", "redis://elsewhere:6379/0")
    s = _ServiceSettings.load()
    assert s.gateway.port == 9000
    assert s.gateway.max_body_bytes == 1_000_000
    assert s.redis_url == "redis://elsewhere:6379/0"


def test_invalid_nested_option_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_GATEWAY__PORT", "99999")
    with pytest.raises(ConfigError) as exc:
        _ServiceSettings.load()
    assert str(exc.value) == (
        "invalid configuration:\n  TURNOUT_GATEWAY__PORT: Input should be less than or equal to 65535"
    )


def test_every_invalid_value_is_listed_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("TURNOUT_DB_CONNECT_TIMEOUT_S", "-1")
    monkeypatch.setenv("TURNOUT_KEY_PREFIX", "has space")
    with pytest.raises(ConfigError) as exc:
        CommonSettings.load()
    assert str(exc.value).splitlines() == [
        "invalid configuration:",
        "  TURNOUT_KEY_PREFIX: String should match pattern '^[A-Za-z0-9_.:-]+$'",
        "  TURNOUT_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        "  TURNOUT_DB_CONNECT_TIMEOUT_S: Input should be greater than 0",
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/sy", "postgresql+asyncpg://u:p@db:5432/sy"),
        ("postgres://u@db/sy", "postgresql+asyncpg://u@db/sy"),
        ("postgresql+asyncpg://u@db/sy", "postgresql+asyncpg://u@db/sy"),
    ],
)
def test_database_url_is_normalised_to_asyncpg(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("TURNOUT_DATABASE_URL", given)
    s = CommonSettings.load()
    assert s.database_url == expected
    assert s.sync_database_url == expected.replace("+asyncpg", "")


def test_non_postgres_database_url_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_DATABASE_URL", "mysql://db/sy")
    with pytest.raises(ConfigError, match="TURNOUT_DATABASE_URL: Value error, database_url must be a postgresql"):
        CommonSettings.load()


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TURNOUT_KEY_PREFIX=from-dotenv\nTURNOUT_LOG_LEVEL=WARNING\n")
    s = CommonSettings.load()
    assert (s.key_prefix, s.log_level) == ("from-dotenv", "WARNING")


def test_env_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TURNOUT_KEY_PREFIX=from-dotenv\n")
    monkeypatch.setenv("TURNOUT_KEY_PREFIX", "from-env")
    assert CommonSettings.load().key_prefix == "from-env"


# --- backends ---------------------------------------------------------------------------


def test_backends_compact_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TURNOUT_BACKENDS",
        "ollama=http://localhost:11434/, gpu2:ollama=http://10.0.0.2:11434,ollama=http://10.0.0.3:11434,"
        "openai=http://vllm:8000/v1",
    )
    s = CommonSettings.load()
    assert [(b.name, b.kind, b.url) for b in s.backends] == [
        ("ollama", BackendKind.OLLAMA, "http://localhost:11434"),
        ("gpu2", BackendKind.OLLAMA, "http://10.0.0.2:11434"),
        ("ollama2", BackendKind.OLLAMA, "http://10.0.0.3:11434"),
        ("openai", BackendKind.OPENAI, "http://vllm:8000/v1"),
    ]
    assert s.backend("gpu2") is s.backends[1]
    assert s.backend("nope") is None


def test_backends_json_form_carries_keys_globs_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TURNOUT_BACKENDS",
        '[{"name": "cloud", "kind": "openai", "url": "https://api.example.com/v1", "api_key": "sk-abcdef123456",'
        ' "include": ["gpt-4o*"], "prefix": "cloud/"}]',
    )
    (b,) = CommonSettings.load().backends
    assert (b.name, b.include, b.prefix, b.openai_base) == (
        "cloud",
        ("gpt-4o*",),
        "cloud/",
        "https://api.example.com/v1",
    )
    assert b.api_key is not None and b.api_key.get_secret_value() == "sk-abcdef123456"
    assert "sk-abcdef" not in repr(b)


def test_backends_yaml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "backends.yaml"
    f.write_text(
        "backends:\n"
        "  - name: local\n    kind: ollama\n    url: http://localhost:11434\n    exclude: ['*embed*']\n"
        "  - name: llamacpp\n    kind: openai\n    url: http://gpu1:8081\n    host: gpu1\n"
    )
    monkeypatch.setenv("TURNOUT_BACKENDS_FILE", str(f))
    s = CommonSettings.load()
    assert [(b.name, b.kind, b.exclude, b.host) for b in s.backends] == [
        ("local", BackendKind.OLLAMA, ("*embed*",), None),
        ("llamacpp", BackendKind.OPENAI, (), "gpu1"),
    ]
    assert s.backends[1].openai_base == "http://gpu1:8081/v1"


def test_backends_env_and_file_together_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("backends: []\n")
    monkeypatch.setenv("TURNOUT_BACKENDS", "ollama=http://a:1")
    monkeypatch.setenv("TURNOUT_BACKENDS_FILE", str(f))
    with pytest.raises(ConfigError, match="set TURNOUT_BACKENDS or TURNOUT_BACKENDS_FILE, not both"):
        CommonSettings.load()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vllm=http://a:1", "TURNOUT_BACKENDS: Value error, backend entry 'vllm=http://a:1': kind must be one of"),
        ("ollama", "TURNOUT_BACKENDS: Value error, backend entry 'ollama' is not of the form [name:]kind=url"),
        ("ollama=localhost:11434", "backend url must start with http:// or https://"),
        ("a:ollama=http://x,a:openai=http://y", "two backends are named 'a'; names must be unique"),
        ("[{broken", "TURNOUT_BACKENDS: Value error, TURNOUT_BACKENDS is not valid JSON"),
        ('[{"name": "x", "kind": "ollama", "url": "http://a", "colour": "red"}]', "Extra inputs are not permitted"),
    ],
)
def test_invalid_backends_give_a_readable_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("TURNOUT_BACKENDS", value)
    with pytest.raises(ConfigError) as exc:
        CommonSettings.load()
    assert str(exc.value).startswith("invalid configuration:")
    assert message in str(exc.value)


def test_missing_backends_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TURNOUT_BACKENDS_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"invalid configuration: cannot read backends file .*nope\.yaml"):
        CommonSettings.load()


def test_placeholder_admin_key_is_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_ENVIRONMENT", "prod")
    monkeypatch.setenv("TURNOUT_ADMIN_KEY", "changeme")
    with pytest.raises(ConfigError, match="TURNOUT_ADMIN_KEY is a placeholder"):
        CommonSettings.load()
    monkeypatch.setenv("TURNOUT_ENVIRONMENT", "dev")
    assert CommonSettings.load().admin_key is not None


def test_admin_key_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_ADMIN_KEY", "s3cr3t-admin-key")
    s = CommonSettings.load()
    assert "s3cr3t" not in repr(s)
    assert "s3cr3t" not in s.model_dump_json()
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "s3cr3t-admin-key"


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_KEY_PREFIX", "from-env")
    assert CommonSettings.load(key_prefix="explicit").key_prefix == "explicit"
