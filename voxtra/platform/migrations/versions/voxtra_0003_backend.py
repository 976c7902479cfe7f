"""The telephony backend of each call, campaign and schedule: ``calls.backend``,
``campaigns.backend``, ``schedules.backend`` (issue 12: Twilio beside Asterisk).

Revision ``voxtra_0003_backend``, after ``voxtra_0002_campaigns``. Nullable: rows made
before this revision were all Asterisk's (read back as ``"asterisk"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "voxtra_0003_backend"
down_revision: str | Sequence[str] | None = "voxtra_0002_campaigns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("calls", "campaigns", "schedules")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("backend", sa.String(length=16), nullable=True))


def downgrade() -> None:
    for table in reversed(_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("backend")
