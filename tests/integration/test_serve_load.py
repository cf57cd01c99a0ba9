"""Load on a real `kodiak web` process while its deployment switches versions mid-run.

32 concurrent loopback clients for KODIAK_LOAD_SECONDS (default 20 s, to keep the suite in
its budget; the issue's full run is KODIAK_LOAD_SECONDS=60).
"""

import asyncio
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.cli import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, session_scope
from app.models import Deployment, ModelVersion, Project, User
from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.serve.conftest import train_bear_model

pytestmark = pytest.mark.integration
CLIENTS = 32
SECONDS = float(os.environ.get("KODIAK_LOAD_SECONDS", "20"))


@pytest.fixture(scope="session")
def bear_model(data_dir, tmp_path_factory):
    return train_bear_model(data_dir, tmp_path_factory.mktemp("bear-model"))


def record_two_versions(settings: Settings, model_dir) -> tuple[int, int]:
    """Two versions of one project (the same weights), deployed publicly as `bears` at v1."""
    engine = make_engine(settings.resolved_database_url())
    storage_root = settings.home / "storage"
    meta_labels = ["black", "grizzly", "teddy"]
    with session_scope(make_session_factory(engine)) as session:
        owner = session.query(User).filter_by(email=settings.admin_email).one()
        project = Project(name="bears", owner_id=owner.id)
        session.add(project)
        session.flush()
        ids = []
        for _ in range(2):
            model = ModelVersion(project_id=project.id, backbone="efficientnet_lite0",
                                 labels=meta_labels, metrics={}, recipe={}, storage_prefix="")
            session.add(model)
            session.flush()
            model.storage_prefix = f"models/{project.id}/{model.id}"
            shutil.copytree(model_dir, storage_root / model.storage_prefix)
            ids.append(model.id)
        session.add(Deployment(slug="bears", project_id=project.id, model_id=ids[0],
                               public=True))
    engine.dispose()
    return ids[0], ids[1]


async def hammer(base_url: str, photos: list[bytes], admin: dict, v2: int) -> tuple:
    results: list[tuple[float, int, int | None]] = []
    switched_at: list[float] = []
    deadline = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        async def client(k: int) -> None:
            i = k
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = await http.post("/api/v1/predict/bears", files={
                    "file": ("p.jpg", photos[i % len(photos)], "image/jpeg")})
                body = response.json() if response.status_code == 200 else {}
                results.append((started, response.status_code, body.get("model_id")))
                i += CLIENTS

        async def switch() -> None:
            await asyncio.sleep(SECONDS / 2)
            answer = await http.patch("/api/v1/deployments/bears", json={"model_id": v2},
                                      headers=admin)
            assert answer.status_code == 200, answer.text
            switched_at.append(time.monotonic())

        await asyncio.gather(switch(), *(client(k) for k in range(CLIENTS)))
    return results, switched_at[0]


def test_switching_versions_under_load_drops_nothing(tmp_path, postgres_url, bear_model,
                                                     data_dir):
    port = free_port()
    settings = Settings(home=tmp_path, database_url=postgres_url,
                        admin_email="admin@example.com", admin_password="admin-password-1")
    migrate(settings)
    v1, v2 = record_two_versions(settings, bear_model[0])
    env = base_env(tmp_path, port, DATABASE_URL=postgres_url, KODIAK_PREDICT_RATE_PER_S_IP="0")
    base_url = f"http://127.0.0.1:{port}"
    photos = [p.read_bytes() for label in ("black", "grizzly", "teddy")
              for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[:20]]
    with running(["web"], env, tmp_path / "web.log") as proc:
        wait_healthy(base_url, proc, tmp_path / "web.log")
        with httpx.Client(base_url=base_url, timeout=30) as http:
            login = http.post("/api/v1/session", json={"email": "admin@example.com",
                                                       "password": "admin-password-1"})
            key = http.post("/api/v1/api-keys",
                            headers={"X-CSRF-Token": login.json()["csrf_token"]})
        admin = {"Authorization": f"Bearer {key.json()['key']}"}
        # a thread of its own: Playwright's sync API may own this thread's event loop
        with ThreadPoolExecutor(1) as runner:
            results, switched_at = runner.submit(
                asyncio.run, hammer(base_url, photos, admin, v2)).result()

    statuses = [status for _, status, _ in results]
    assert not [s for s in statuses if s >= 500], "server errors under load"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {model for _, _, model in results} == {v1, v2}
    after = [model for started, _, model in results if started > switched_at]
    assert after and set(after) == {v2}, "a request sent after the switch got the old version"
    assert len(results) >= CLIENTS * 5
    print(f"{len(results)} predictions in {SECONDS:.0f} s ({len(results) / SECONDS:.0f}/s), "
          f"{len(after)} after the switch")
