"""label assist: images without a label (the inbox), stored embeddings and suggestions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 12:00:00

The inbox needs no column: it is a project's active images whose label_id is NULL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_embedding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("backbone", sa.String(length=100), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"],
                                name=op.f("fk_image_embedding_image_id_image"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"],
                                name=op.f("fk_image_embedding_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_embedding")),
        sa.UniqueConstraint("image_id", "backbone", name=op.f("uq_image_embedding_image_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_image_embedding_project_id"), "image_embedding", ["project_id"])
    op.create_table(
        "inbox_suggestion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("cluster", sa.Integer(), nullable=True),
        sa.Column("centre_distance", sa.Float(), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("labelled_distance", sa.Float(), nullable=True),
        sa.Column("informative_rank", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"],
                                name=op.f("fk_inbox_suggestion_image_id_image"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"],
                                name=op.f("fk_inbox_suggestion_project_id_project"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"],
                                name=op.f("fk_inbox_suggestion_job_id_job"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["model_id"], ["model_version.id"],
                                name=op.f("fk_inbox_suggestion_model_id_model_version"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_suggestion")),
        sa.UniqueConstraint("image_id", name=op.f("uq_inbox_suggestion_image_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_inbox_suggestion_project_id"), "inbox_suggestion", ["project_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_inbox_suggestion_project_id"), table_name="inbox_suggestion")
    op.drop_table("inbox_suggestion")
    op.drop_index(op.f("ix_image_embedding_project_id"), table_name="image_embedding")
    op.drop_table("image_embedding")
