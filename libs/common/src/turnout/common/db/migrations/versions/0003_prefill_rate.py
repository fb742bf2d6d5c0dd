"""profiles: prefill speed (prompt tokens per second) the profiler measures

Revision ID: 0003_prefill_rate
Revises: 0002_request_log
Create Date: 2026-12-06 18:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_prefill_rate"
down_revision: str | None = "0002_request_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("profiles", sa.Column("prefill_tokens_per_s", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("profiles", "prefill_tokens_per_s")
