"""image reviewed_at: the review queue remembers what a person kept

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("image") as batch_op:
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column("reviewed_at")
