"""A database session and the storage of the `settings` app home, for service tests."""

import pytest

from app.db import make_engine, make_session_factory
from app.storage import open_storage


@pytest.fixture
def session(settings):
    engine = make_engine(settings.resolved_database_url())
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def storage(settings):
    return open_storage(settings.resolved_storage_url(), settings)
