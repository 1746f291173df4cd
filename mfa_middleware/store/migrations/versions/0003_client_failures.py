"""Failed attempts per client address.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_client_failures",
        sa.Column("client_ip", sa.String(64), primary_key=True),
        sa.Column("failed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_failed_at", sa.Float, nullable=False),
        sa.Column("locked_until", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("mfa_client_failures")
