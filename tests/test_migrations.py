"""Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL."""

import secrets

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.cli import alembic_config
from app.db import Base, make_engine

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def assert_matches_models(url: str) -> None:
    command.upgrade(alembic_config(url), "heads")
    engine = make_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(connection).get_table_names())
    assert {"user", "project", "label", "image", "job", "model_version", "deployment"} <= tables
    command.downgrade(alembic_config(url), "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_migrations_match_models_on_sqlite(tmp_path):
    assert_matches_models(f"sqlite:///{tmp_path / 'k.db'}")


def test_migrations_match_models_on_postgres():
    name = f"kodiak_mig_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering on 127.0.0.1:5432: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        assert_matches_models(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_sqlite_rebuild_keeps_rows_and_never_reuses_ids(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    command.upgrade(alembic_config(url), "0002")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO user (id, email, password_hash, is_admin, created_at) "
            "VALUES (1, 'a@example.com', 'x', 0, '2026-01-01 00:00:00')")
        for project_id in (1, 2):
            connection.exec_driver_sql(
                "INSERT INTO project (id, owner_id, name, created_at) "
                f"VALUES ({project_id}, 1, 'p{project_id}', '2026-01-01 00:00:00')")
        connection.exec_driver_sql("INSERT INTO label (id, project_id, name, query, created_at) "
                                   "VALUES (1, 2, 'grizzly', 'grizzly', '2026-01-01 00:00:00')")
    engine.dispose()
    command.upgrade(alembic_config(url), "heads")
    engine = make_engine(url)
    with engine.begin() as connection:
        # The rebuild of `project` did not cascade into `label`.
        assert connection.exec_driver_sql("SELECT name FROM label").scalars().all() == ["grizzly"]
        connection.exec_driver_sql("DELETE FROM project WHERE id = 2")
        assert connection.exec_driver_sql("SELECT count(*) FROM label").scalar() == 0
        connection.exec_driver_sql("INSERT INTO project (owner_id, name, created_at) "
                                   "VALUES (1, 'new', '2026-01-02 00:00:00')")
        new_id = connection.exec_driver_sql(
            "SELECT id FROM project WHERE name = 'new'").scalar()
    engine.dispose()
    assert new_id == 3  # not 2 again
