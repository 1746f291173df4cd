"""Sessions made: one row per session cookie issued, for the security info page's "active sessions".

Revision ID: 0015
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(300)),
        sa.Column("methods", sa.String(200), nullable=False, server_default=""),
        sa.Column("ended_at", sa.Float),
        sa.UniqueConstraint("sid", name="uq_mfa_sessions_sid"),
    )
    op.create_index("ix_mfa_sessions_user", "mfa_sessions", ["user_id", "expires_at"])


def downgrade() -> None:
    op.drop_table("mfa_sessions")
