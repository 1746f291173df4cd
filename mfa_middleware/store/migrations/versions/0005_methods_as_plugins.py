"""Methods as plugins: a default method, per-method data, backup codes, one-time code challenges.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mfa_methods") as batch:
        batch.add_column(sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("detail", sa.LargeBinary))
    op.create_table(
        "mfa_backup_codes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("lookup", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float),
    )
    op.create_index("ix_mfa_backup_codes_lookup", "mfa_backup_codes", ["user_id", "lookup"])
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sign_in_id", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float),
    )
    op.create_index("ix_mfa_challenges_attempt", "mfa_challenges", ["method_id", "sign_in_id"])
    op.create_index("ix_mfa_challenges_user_at", "mfa_challenges", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_table("mfa_challenges")
    op.drop_table("mfa_backup_codes")
    with op.batch_alter_table("mfa_methods") as batch:
        batch.drop_column("detail")
        batch.drop_column("is_default")
