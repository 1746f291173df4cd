"""Phone methods: the sends counted by the SMS-pumping and toll-fraud caps, and fraud reports.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_phone_sends",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number_key", sa.String(64), nullable=False),
        sa.Column("country", sa.String(4), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_mfa_phone_sends_user_at", "mfa_phone_sends", ["user_id", "at"])
    op.create_index("ix_mfa_phone_sends_number_at", "mfa_phone_sends", ["number_key", "at"])
    op.create_index("ix_mfa_phone_sends_country_at", "mfa_phone_sends", ["country", "at"])
    op.create_table(
        "mfa_fraud_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("mfa_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("method_kind", sa.String(32), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("user_agent", sa.String(300)),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("blocked_until", sa.Float),
        sa.Column("notified", sa.String(300), nullable=False, server_default=""),
        sa.UniqueConstraint("reference", name="uq_mfa_fraud_reports_reference"),
    )
    op.create_index("ix_mfa_fraud_reports_at", "mfa_fraud_reports", ["at"])
    op.create_index("ix_mfa_fraud_reports_user_at", "mfa_fraud_reports", ["username", "at"])


def downgrade() -> None:
    op.drop_table("mfa_fraud_reports")
    op.drop_table("mfa_phone_sends")
