"""request log: prompt and reply on routing decisions; indexes for the admin filters, pruning and
the audit log

Revision ID: 0002_request_log
Revises: 0001
Create Date: 2026-12-06 12:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_request_log"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("routing_decisions", sa.Column("prompt", sa.Text(), nullable=True))
    op.add_column("routing_decisions", sa.Column("reply", sa.Text(), nullable=True))
    op.create_index(op.f("ix_routing_decisions_requested_at"), "routing_decisions", ["requested_at"])
    op.create_index(op.f("ix_audit_log_created_at"), "audit_log", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_created_at"), table_name="audit_log")
    op.drop_index(op.f("ix_routing_decisions_requested_at"), table_name="routing_decisions")
    op.drop_column("routing_decisions", "reply")
    op.drop_column("routing_decisions", "prompt")
