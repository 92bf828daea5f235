"""The call of the model that classified a job: its batch size and how long it waited (dynamic batching).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("batch_wait", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("batch_wait")
        batch.drop_column("batch_size")
