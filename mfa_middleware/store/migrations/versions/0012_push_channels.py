"""Push channels: a device's Web Push subscription or webhook URL (SecretBox-encrypted JSON; the endpoint and keys
are capabilities), used only to wake the device (docs/push-protocol.md, "Push channels").

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mfa_push_devices") as batch:
        batch.add_column(sa.Column("channel", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mfa_push_devices") as batch:
        batch.drop_column("channel")
