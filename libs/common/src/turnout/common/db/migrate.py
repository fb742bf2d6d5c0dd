"""Run or check migrations from code: services call :func:`upgrade` (or :func:`wait_for_head`) at start.

``python -m turnout.common.db.migrate [upgrade|check|current]`` does the same from a shell.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from turnout.common.db.session import DB_UNAVAILABLE

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    """An Alembic config for our migrations against ``database_url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    head = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://x/y")).get_current_head()
    assert head is not None
    return head


async def upgrade(database_url: str) -> None:
    """Migrate to head. Runs alembic in a thread (its env.py runs its own event loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None before the first migration)."""
    engine = create_async_engine(database_url, connect_args={"timeout": 5})
    try:
        async with engine.connect() as conn:

            def _rev(sync: Connection) -> str | None:
                return MigrationContext.configure(sync).get_current_revision()

            return await conn.run_sync(_rev)
    finally:
        await engine.dispose()


async def wait_for_head(database_url: str, *, timeout_s: float = 60.0) -> None:
    """Wait until another service has migrated the schema to our head (or fail clearly)."""
    want = head_revision()
    deadline = time.monotonic() + timeout_s
    last: str | None = None
    while True:
        try:
            last = await current_revision(database_url)
            if last == want:
                return
        except DB_UNAVAILABLE as exc:  # connection refused while Postgres starts
            last = f"error: {exc}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"database schema is at {last!r}, expected {want!r}; run `make migrate`")
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """``python -m turnout.common.db.migrate [upgrade|current|check]``; returns the exit status."""
    from turnout.common.settings import CommonSettings

    args = argv if argv is not None else sys.argv[1:]
    action = args[0] if args else "upgrade"
    url = CommonSettings.load().database_url
    if action == "upgrade":
        asyncio.run(upgrade(url))
    elif action == "current":
        print(asyncio.run(current_revision(url)))  # noqa: T201
    elif action == "check":
        asyncio.run(wait_for_head(url, timeout_s=0))
    else:
        print(f"unknown action {action!r}; use upgrade, current or check", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
