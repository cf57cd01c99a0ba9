"""image licence: the licence a search result was published under, kept with its provenance;
image events: the label and status changes behind an image's history

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("search_result",
                              table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(sa.Column("licence", sa.String(length=100), nullable=True))
    op.create_table(
        "image_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("before", sa.String(length=200), nullable=True),
        sa.Column("after", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"],
                                name=op.f("fk_image_event_image_id_image"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_event")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_image_event_image_id"), "image_event", ["image_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_image_event_image_id"), table_name="image_event")
    op.drop_table("image_event")
    with op.batch_alter_table("search_result",
                              table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column("licence")
