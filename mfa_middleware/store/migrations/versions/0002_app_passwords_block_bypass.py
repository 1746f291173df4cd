"""App passwords; blocked users; one-time bypass.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mfa_users") as batch:
        batch.add_column(sa.Column("blocked_until", sa.Float))
        batch.add_column(sa.Column("blocked_reason", sa.String(300)))
        batch.add_column(sa.Column("bypass_until", sa.Float))
    op.create_table(
        "mfa_app_passwords",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("lookup", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("last_used_ip", sa.String(64)),
        sa.UniqueConstraint("user_id", "label", name="uq_mfa_app_passwords_label"),
    )
    op.create_index("ix_mfa_app_passwords_lookup", "mfa_app_passwords", ["user_id", "lookup"])


def downgrade() -> None:
    op.drop_table("mfa_app_passwords")
    with op.batch_alter_table("mfa_users") as batch:
        batch.drop_column("bypass_until")
        batch.drop_column("blocked_reason")
        batch.drop_column("blocked_until")
