"""OATH hardware tokens: the inventory imported by `mfa-admin tokens import`.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
# on its own.
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_oath_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="SET NULL")),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("digits", sa.Integer, nullable=False),
        sa.Column("period", sa.Integer),
        sa.Column("counter", sa.BigInteger),
        sa.Column("last_step", sa.BigInteger),
        sa.Column("manufacturer", sa.String(100)),
        sa.Column("model", sa.String(100)),
        sa.Column("imported_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="SET NULL")),
        sa.UniqueConstraint("serial", name="uq_mfa_oath_tokens_serial"),
        sa.UniqueConstraint("method_id", name="uq_mfa_oath_tokens_method"),
    )
    op.create_index("ix_mfa_oath_tokens_user", "mfa_oath_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_mfa_oath_tokens_user", table_name="mfa_oath_tokens")
    op.drop_table("mfa_oath_tokens")
