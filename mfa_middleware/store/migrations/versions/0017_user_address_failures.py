"""Regulation: each user's failures per client address, so a success from an address clears only its own.

Revision ID: 0017
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_user_address_failures",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("client_ip", sa.String(64), primary_key=True),
        sa.Column("failed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_failed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mfa_user_address_failures")
