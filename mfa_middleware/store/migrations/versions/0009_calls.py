"""Phone calls: one row per call of the voice method, with its one-time callback id's digest and its status.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sign_in_id", sa.String(64), nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("answered_at", sa.Float),
        sa.UniqueConstraint("token_digest", name="uq_mfa_calls_token"),
    )
    op.create_index("ix_mfa_calls_attempt", "mfa_calls", ["method_id", "sign_in_id"])


def downgrade() -> None:
    op.drop_table("mfa_calls")
