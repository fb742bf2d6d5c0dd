import asyncio

import pytest
from alembic import command
from sqlalchemy import text

from turnout.common.db.migrate import alembic_config, current_revision, head_revision, upgrade
from turnout.common.db.session import engine_scope

pytestmark = pytest.mark.integration

TABLES = {
    "backends",
    "models",
    "deployments",
    "profiles",
    "benchmarks",
    "feedback",
    "routing_decisions",
    "audit_log",
    "dead_letters",
}


async def test_first_migration_creates_the_schema_at_head(database_url):
    assert await current_revision(database_url) == head_revision()
    async with engine_scope(database_url) as engine, engine.connect() as conn:
        rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        assert TABLES <= {r[0] for r in rows}


async def columns(url: str, table: str) -> set[str]:
    async with engine_scope(url) as engine, engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"), {"t": table}
        )
        return {r[0] for r in rows}


async def test_the_prefill_rate_migration_downgrades_and_upgrades_cleanly(db: str) -> None:
    assert "prefill_tokens_per_s" in await columns(db, "profiles")
    await asyncio.to_thread(command.downgrade, alembic_config(db), "0002_request_log")
    assert await current_revision(db) == "0002_request_log"
    cols = await columns(db, "profiles")
    assert "prefill_tokens_per_s" not in cols and {"ttft_ms", "tokens_per_s"} <= cols
    await upgrade(db)
    assert await current_revision(db) == head_revision() == "0003_prefill_rate"
    assert "prefill_tokens_per_s" in await columns(db, "profiles")


async def test_every_migration_downgrades_to_nothing_and_back(db: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(db), "base")
    assert await current_revision(db) is None
    await upgrade(db)
    assert await current_revision(db) == head_revision()
    assert "prefill_tokens_per_s" in await columns(db, "profiles")
