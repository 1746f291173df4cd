"""PostgreSQL: every statement that writes revocation rows also sends ``NOTIFY mfa_revocations`` (an empty
payload), so the other servers' revocation caches read the new rows at once instead of at their next poll
(``mfa_middleware/store/notify.py``). SQLite: nothing (every process polls).

Why a trigger and not a ``pg_notify`` call next to each ``INSERT`` in the store's code:

- ``NOTIFY`` inside the writing transaction is delivered when, and only if, that transaction commits; a trigger
  is part of the statement, so this holds by construction, for every writer: the pages, ``mfa-admin`` in its
  own process, the fraud-report block, code written later, and an operator's own SQL alike.
- The payload is empty and the same for every row: PostgreSQL delivers one notification per transaction
  (identical notifications in one transaction fold into one), and a listener never learns anything from it
  but "look now". Listeners read the rows themselves, from the table, as the poll does.

Revision ID: 0014
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: the channel the store's writers notify and each process's revocation listener listens on
CHANNEL = "mfa_revocations"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE OR REPLACE FUNCTION mfa_revocations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$""")
    op.execute("""
        CREATE TRIGGER mfa_revocations_notify AFTER INSERT ON mfa_revocations
        FOR EACH STATEMENT EXECUTE FUNCTION mfa_revocations_notify()""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS mfa_revocations_notify ON mfa_revocations")
    op.execute("DROP FUNCTION IF EXISTS mfa_revocations_notify()")
