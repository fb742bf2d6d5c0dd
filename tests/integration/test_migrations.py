import pytest
from sqlalchemy import text

from turnout.common.db.migrate import current_revision, head_revision
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
