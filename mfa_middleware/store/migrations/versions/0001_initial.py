"""Initial schema: users, methods, revocations, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("email", sa.String(320)),
        sa.Column("display_name", sa.String(200)),
        sa.Column("groups", sa.Text, nullable=False, server_default=""),
        sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("state", sa.String(16), nullable=False, server_default="enabled"),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("failed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_failed_at", sa.Float),
        sa.Column("locked_until", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mfa_methods",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("secret", sa.LargeBinary),
        sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_step", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
    )
    op.create_index("ix_mfa_methods_user", "mfa_methods", ["user_id"])
    op.create_table(
        "mfa_revocations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_mfa_revocations_created", "mfa_revocations", ["created_at"])
    op.create_table(
        "mfa_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("username", sa.String(128)),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(300)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_mfa_audit_user_at", "mfa_audit", ["username", "at"])
    op.create_index("ix_mfa_audit_at", "mfa_audit", ["at"])


def downgrade() -> None:
    op.drop_table("mfa_audit")
    op.drop_table("mfa_revocations")
    op.drop_table("mfa_methods")
    op.drop_table("mfa_users")
