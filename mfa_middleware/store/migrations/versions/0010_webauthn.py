"""Passkeys and security keys: one credential per webauthn method, and the ceremonies' server-side challenges.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_webauthn_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("credential_id", sa.String(1400), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sign_count", sa.BigInteger, nullable=False),
        sa.Column("transports", sa.String(200), nullable=False),
        sa.Column("aaguid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.UniqueConstraint("credential_id", name="uq_mfa_webauthn_credential"),
    )
    op.create_index("ix_mfa_webauthn_credentials_method", "mfa_webauthn_credentials", ["method_id"])
    op.create_table(
        "mfa_webauthn_challenges",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sign_in_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("challenge", sa.String(128), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.UniqueConstraint("token", name="uq_mfa_webauthn_challenge_token"),
    )
    op.create_index("ix_mfa_webauthn_challenges_attempt", "mfa_webauthn_challenges", ["method_id", "sign_in_id"])


def downgrade() -> None:
    op.drop_table("mfa_webauthn_challenges")
    op.drop_table("mfa_webauthn_credentials")
