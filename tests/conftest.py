"""Shared fixtures: the photo data folder, an app on SQLite in tmp_path, signed-in clients,
an S3 server (moto) on loopback.

`KODIAK_TEST_STORAGE=s3` (`make test-s3`) puts the storage of every app the tests make on
that S3 server instead of a folder.
"""

import atexit
import os
import socket
import uuid
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient

from app.cli import migrate
from app.config import Settings
from app.web.main import create_app

REPO = Path(__file__).resolve().parents[1]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
S3_TEST_RUN = os.environ.get("KODIAK_TEST_STORAGE", "local") == "s3"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`../shared/data` (or KODIAK_DATA_DIR): a failure under CI, a visible skip elsewhere."""
    path = Path(os.environ.get("KODIAK_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    if not (path / "bears").is_dir():
        message = f"test photos not found at {path} (set KODIAK_DATA_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class S3Store(NamedTuple):
    """A fresh place on the loopback S3 server: `url` for STORAGE_URL, `endpoint` to reach it."""

    url: str
    endpoint: str
    bucket: str


@cache
def s3_endpoint() -> str:
    """The URL of an S3 server (moto) on loopback, started on first use for this test run."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    atexit.register(server.stop)
    return f"http://127.0.0.1:{port}"


def s3_settings(endpoint: str) -> dict:
    """Settings that reach the test S3 server (moto takes any credentials)."""
    return {"s3_endpoint_url": endpoint, "s3_region": "us-east-1",
            "aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret"}


@cache
def _s3_admin():
    from app.storage import s3_client

    return s3_client(Settings(**s3_settings(s3_endpoint())))


def new_s3_store() -> S3Store:
    """A new bucket on the test S3 server, and a prefix in it."""
    bucket = f"kodiak-test-{uuid.uuid4().hex[:12]}"
    _s3_admin().create_bucket(Bucket=bucket)
    return S3Store(url=f"s3://{bucket}/kodiak", endpoint=s3_endpoint(), bucket=bucket)


@pytest.fixture
def s3_store() -> S3Store:
    return new_s3_store()


def s3_env(settings: Settings) -> dict[str, str]:
    """Environment variables giving a `kodiak` process the S3 settings of `settings`."""
    if not settings.s3_endpoint_url:
        return {}
    return {"KODIAK_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "KODIAK_S3_REGION": settings.s3_region or "us-east-1",
            "AWS_ACCESS_KEY_ID": settings.aws_access_key_id or "",
            "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value()
            if settings.aws_secret_access_key else ""}


def make_settings(home: Path, **overrides) -> Settings:
    values = {
        "home": home,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "database_url": f"sqlite:///{home / 'kodiak.db'}",
        "broker_url": "memory://",
        "storage_url": f"file://{home / 'storage'}",
    }
    if S3_TEST_RUN:
        store = new_s3_store()
        values.update(storage_url=store.url, **s3_settings(store.endpoint))
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    migrate(settings)
    return settings


@pytest.fixture
def client(settings: Settings) -> TestClient:
    with TestClient(create_app(settings)) as client:
        yield client


def api_key(client: TestClient, email: str, password: str) -> dict[str, str]:
    """Authorization headers for a fresh API key of this user."""
    login = client.post("/api/v1/session", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    csrf = login.json()["csrf_token"]
    key = client.post("/api/v1/api-keys", headers={"X-CSRF-Token": csrf})
    assert key.status_code == 201, key.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {key.json()['key']}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def other_user(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    created = client.post(
        "/api/v1/users", json={"email": "other@example.com", "password": "other-password"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return api_key(client, "other@example.com", "other-password")


def pytest_collection_modifyitems(items) -> None:
    """Tests under tests/browser and tests/integration carry their folder's mark, so
    `-m "not integration and not browser"` (make test-s3) selects by folder."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for mark in ("browser", "integration"):
            if mark in parts:
                item.add_marker(getattr(pytest.mark, mark))
