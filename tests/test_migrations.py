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
