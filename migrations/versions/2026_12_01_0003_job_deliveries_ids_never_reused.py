"""job deliveries for the sweeper; SQLite ids never reused (AUTOINCREMENT)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Parents before children, so each rebuilt table's foreign keys find their target.
TABLES = ["user", "user_session", "api_key", "project", "label", "image", "job",
          "model_version", "deployment", "search_result", "image_prediction", "prediction_log"]


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deliveries", sa.Integer(), server_default="0",
                                      nullable=False))
    _set_sqlite_autoincrement(True)


def downgrade() -> None:
    _set_sqlite_autoincrement(False)
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("deliveries")
        batch_op.drop_column("enqueued_at")


def _set_sqlite_autoincrement(on: bool) -> None:
    """SQLite keeps AUTOINCREMENT in the table definition: rebuild each table (rows kept; the
    environment turns foreign keys off while migrating, so no cascade fires)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": on}):
            pass
