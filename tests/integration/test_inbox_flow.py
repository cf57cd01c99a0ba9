"""Label assist on real processes: photos uploaded without a label reach the inbox, the
organize job they start runs on a `kodiak worker` (Redis broker, PostgreSQL), and the inbox
then answers with its groups and similar images."""

import time

import httpx
import pytest

from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.integration.test_bear_flow import sign_in

pytestmark = pytest.mark.integration
REDIS_DB = 13
LABELS = ("black", "grizzly", "teddy")


def test_unlabelled_upload_is_organized_by_a_worker(tmp_path, data_dir, postgres_url,
                                                    redis_url):
    port = free_port()
    env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url,
                   KODIAK_WORKER_THREADS="1")
    with running(["migrate"], env, tmp_path / "migrate.log") as migrate:
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    with running(["worker", "--queues", "train"], env, tmp_path / "worker.log"), \
            running(["web"], env, tmp_path / "web.log") as web, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        wait_healthy(str(http.base_url).rstrip("/"), web, tmp_path / "web.log")
        admin = sign_in(http, "admin@example.com", "admin-password-1")
        pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": list(LABELS)},
                        headers=admin).json()["id"]
        paths = [p for label in LABELS
                 for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[::25]]
        added = http.post(f"/api/v1/projects/{pid}/images", headers=admin, files=[
            ("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])
        assert added.status_code == 201, added.text
        ids = [entry["image_id"] for entry in added.json()["added"]]
        assert len(ids) == len(paths)

        deadline = time.monotonic() + 300
        while True:
            page = http.get(f"/api/v1/projects/{pid}/inbox?limit=100", headers=admin).json()
            job = page["organize_job"]
            assert job is not None and job["status"] in ("queued", "running", "succeeded"), job
            if job["status"] == "succeeded":
                break
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        assert page["embedded"] == page["total"] == len(ids) and page["pending"] == 0
        assert sum(c["size"] for c in page["clusters"]) == len(ids) >= 2 * len(LABELS)
        assert all(item["cluster"] is not None for item in page["items"])

        similar = http.get(f"/api/v1/images/{ids[0]}/similar?limit=5", headers=admin).json()
        distances = [item["distance"] for item in similar["items"]]
        assert len(distances) == 5 and distances == sorted(distances)
