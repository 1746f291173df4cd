"""Push approval: registration tokens, devices (public keys), sign-in requests and used nonces of the device
protocol (docs/push-protocol.md).

Revision ID: 0011
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_push_registrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float),
        sa.UniqueConstraint("token_digest", name="uq_mfa_push_registrations_token"),
    )
    op.create_table(
        "mfa_push_devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float),
        sa.UniqueConstraint("account_id", name="uq_mfa_push_devices_account"),
        sa.UniqueConstraint("method_id", name="uq_mfa_push_devices_method"),
    )
    op.create_table(
        "mfa_push_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("public_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method_id", sa.Integer, sa.ForeignKey("mfa_methods.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("mfa_push_devices.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("sign_in_id", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("choices", sa.String(16), nullable=False),
        sa.Column("site", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("answered_at", sa.Float),
        sa.UniqueConstraint("public_id", name="uq_mfa_push_requests_public_id"),
    )
    op.create_index("ix_mfa_push_requests_attempt", "mfa_push_requests", ["method_id", "sign_in_id"])
    op.create_index("ix_mfa_push_requests_user", "mfa_push_requests", ["user_id", "created_at"])
    op.create_index("ix_mfa_push_requests_device", "mfa_push_requests", ["device_id", "status"])
    op.create_table(
        "mfa_push_nonces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("mfa_push_devices.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.UniqueConstraint("device_id", "nonce", name="uq_mfa_push_nonces"),
    )
    op.create_index("ix_mfa_push_nonces_expiry", "mfa_push_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_table("mfa_push_nonces")
    op.drop_table("mfa_push_requests")
    op.drop_table("mfa_push_devices")
    op.drop_table("mfa_push_registrations")
