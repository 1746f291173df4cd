"""Audit rows carry the request id of the request that wrote them (the same id as the structured log lines of that
request: mfa_middleware.logs).

Revision ID: 0018
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mfa_audit") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mfa_audit") as batch:
        batch.drop_column("request_id")
