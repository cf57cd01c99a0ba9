"""Shared fixtures: the photo data folder, an app on SQLite in tmp_path, signed-in clients."""

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import migrate
from app.config import Settings
from app.web.main import create_app

REPO = Path(__file__).resolve().parents[1]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"


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


def make_settings(home: Path, **overrides) -> Settings:
    values = {
        "home": home,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "database_url": f"sqlite:///{home / 'kodiak.db'}",
        "broker_url": "memory://",
        "storage_url": f"file://{home / 'storage'}",
    }
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
