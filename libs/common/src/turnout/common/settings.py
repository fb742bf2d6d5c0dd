"""Settings shared by every service.

Shared fields are flat (``TURNOUT_REDIS_URL``); each service subclasses
:class:`CommonSettings` and nests its own options (``TURNOUT_GATEWAY__PORT``). Settings are
built once in a service's ``__main__`` and passed in; nothing reads ``os.environ`` elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from turnout.common.backends.config import BackendConfig, load_backends_file, parse_backends
from turnout.common.errors import ConfigError
from turnout.common.keys import Keys
from turnout.common.links import LinkOptions

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "admin", "password"}


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TURNOUT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        secrets_dir=None,
    )

    environment: Literal["dev", "test", "prod"] = "dev"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/turnout"
    key_prefix: str = Field(default="turnout", pattern=r"^[A-Za-z0-9_.:-]+$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    backends: Annotated[list[BackendConfig], NoDecode] = Field(default_factory=list)
    backends_file: Path | None = None
    admin_key: SecretStr | None = None
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0, description="Opening a Redis connection")
    redis_command_timeout_s: float = Field(
        default=5.0, gt=0, description="A Redis command unanswered this long (past its own block time) drops the link"
    )
    redis_keepalive_s: int = Field(default=10, ge=1, le=3600, description="TCP keepalive idle time on Redis links")
    redis_backoff_max_s: float = Field(default=2.0, gt=0, description="Cap of the jittered reconnect back-off")
    migrate_on_start: bool = True

    @field_validator("backends", mode="before")
    @classmethod
    def _parse_backends(cls, v: Any) -> list[BackendConfig]:
        return parse_backends(v)

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            v = "postgresql+asyncpg://" + v.split("://", 1)[1]
        if not v.startswith("postgresql+asyncpg://"):
            raise ValueError("database_url must be a postgresql:// or postgresql+asyncpg:// URL")
        return v

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.backends_file is not None:
            if self.backends:
                raise ValueError("set TURNOUT_BACKENDS or TURNOUT_BACKENDS_FILE, not both")
            self.backends = load_backends_file(self.backends_file)
        if self.environment == "prod" and self.admin_key is not None:
            if self.admin_key.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
                raise ValueError("TURNOUT_ADMIN_KEY is a placeholder; set a real secret in prod")
        return self

    @property
    def link(self) -> LinkOptions:
        """The bounds of every Redis connection (:mod:`turnout.common.links`)."""
        return LinkOptions(
            connect_timeout_s=self.redis_connect_timeout_s,
            command_timeout_s=self.redis_command_timeout_s,
            keepalive_idle_s=self.redis_keepalive_s,
            backoff_max_s=self.redis_backoff_max_s,
        )

    @property
    def keys(self) -> Keys:
        """Redis key builders under this deployment's ``key_prefix``."""
        return Keys(self.key_prefix)

    @property
    def sync_database_url(self) -> str:
        """The same database for tools that speak psycopg-less plain asyncpg DSNs."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def backend(self, name: str) -> BackendConfig | None:
        """The configured backend called ``name``, or None."""
        return next((b for b in self.backends if b.name == name), None)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build settings, turning validation errors into one readable :class:`ConfigError`.

        ``TURNOUT_SECRETS_DIR`` names a directory of secret files, one per setting, as Kubernetes
        mounts a Secret: ``turnout_admin_key``, ``turnout_gateway__api_keys`` … (file name = the
        variable's name, any case). Environment variables win over files."""
        secrets_dir = os.environ.get("TURNOUT_SECRETS_DIR")
        if secrets_dir and "_secrets_dir" not in overrides:
            if not Path(secrets_dir).is_dir():
                raise ConfigError(f"invalid configuration: TURNOUT_SECRETS_DIR {secrets_dir!r} is not a directory")
            overrides["_secrets_dir"] = secrets_dir
        try:
            return cls(**overrides)
        except (ValidationError, ConfigError, ValueError) as exc:
            raise ConfigError(_describe(exc)) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors():
            loc = "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  TURNOUT_{loc}: {err['msg']}" if loc else f"  {err['msg']}")
        return "invalid configuration:\n" + "\n".join(lines)
    return f"invalid configuration: {exc}"
