"""Revocations looked up by user: every step of a sign-in checks for a revocation since its primary step.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_mfa_revocations_user", "mfa_revocations", ["username", "not_before"])


def downgrade() -> None:
    op.drop_index("ix_mfa_revocations_user", table_name="mfa_revocations")
