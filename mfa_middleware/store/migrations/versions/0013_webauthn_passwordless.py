"""Passwordless sign-in with a passkey: the ceremonies asked for on the forms sign-in page, bound to the browser.

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_webauthn_logins",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("binding", sa.String(64), nullable=False),
        sa.Column("challenge", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.UniqueConstraint("challenge", name="uq_mfa_webauthn_login_challenge"),
    )
    op.create_index("ix_mfa_webauthn_logins_binding", "mfa_webauthn_logins", ["binding"])


def downgrade() -> None:
    op.drop_table("mfa_webauthn_logins")
