"""Gathering fixtures: settings that allow loopback downloads, a loopback photo server."""

import pytest

from app.cli import migrate
from app.db import make_engine, make_session_factory
from app.storage import open_storage
from tests.conftest import make_settings
from tests.gather.cases import SETTINGS
from tests.gather.loopback import serving


@pytest.fixture
def settings(tmp_path):
    settings = make_settings(tmp_path, **SETTINGS)
    migrate(settings)
    return settings


@pytest.fixture
def factory(settings):
    engine = make_engine(settings.resolved_database_url())
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def storage(settings):
    return open_storage(settings.resolved_storage_url(), settings)


@pytest.fixture
def photo_server(data_dir):
    stats: dict = {}
    with serving(data_dir, stats=stats) as base:
        yield base, stats
