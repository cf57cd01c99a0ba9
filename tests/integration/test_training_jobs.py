"""A training job on real processes survives quiet steps and never stays "running" after its
worker is killed: PostgreSQL, Redis and a `kodiak worker` subprocess."""

import signal
import time

import httpx
import pytest

from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.integration.test_bear_flow import sign_in

pytestmark = pytest.mark.integration
REDIS_DB = 14
LABELS = ("black", "grizzly", "teddy")
STALE_SECONDS = 6


def test_killed_worker_leaves_the_job_failed_not_running(tmp_path, data_dir, postgres_url,
                                                         redis_url):
    port = free_port()
    env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url,
                   KODIAK_JOB_STALE_SECONDS=str(STALE_SECONDS), KODIAK_WORKER_THREADS="1")
    with running(["migrate"], env, tmp_path / "migrate.log") as migrate:
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    with running(["worker", "--queues", "train"], env, tmp_path / "worker.log") as worker, \
            running(["web"], env, tmp_path / "web.log") as web, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        wait_healthy(str(http.base_url).rstrip("/"), web, tmp_path / "web.log")
        admin = sign_in(http, "admin@example.com", "admin-password-1")
        pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": list(LABELS)},
                        headers=admin).json()["id"]
        for label in LABELS:
            paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[::10]
            http.post(f"/api/v1/projects/{pid}/images", headers=admin, data={"label": label},
                      files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])
        job = http.post(f"/api/v1/projects/{pid}/trainings", headers=admin,
                        json={"epochs": 20, "augment_views": 1, "batch_size": 16}).json()

        def poll() -> dict:
            return http.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()

        deadline = time.monotonic() + 180
        while (view := poll())["status"] == "queued" or view["progress"] == 0:
            assert view["status"] in ("queued", "running"), (view["error"], view["message"])
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        # healthy: longer than the stale window, with quiet steps, and still running
        healthy_until = time.monotonic() + 2 * STALE_SECONDS
        while time.monotonic() < healthy_until:
            assert poll()["status"] == "running"
            time.sleep(0.5)

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        killed = time.monotonic()
        while (view := poll())["status"] == "running":
            assert time.monotonic() - killed < STALE_SECONDS + 10, view
            time.sleep(0.5)
        assert view["status"] == "failed", view
        assert "stopped responding" in view["error"]
        assert view["result"] is None
