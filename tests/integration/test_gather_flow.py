"""A search job on a real Celery worker (Redis, PostgreSQL) against a loopback photo server."""

import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO
from tests.gather import cases
from tests.gather.loopback import serving
from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.integration.test_bear_flow import sign_in

pytestmark = pytest.mark.integration
REDIS_DB = 12


def test_search_job_on_a_celery_worker(tmp_path, data_dir, postgres_url, redis_url):
    port = free_port()
    with serving(data_dir) as photos:
        env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url,
                       KODIAK_SEARCH_PROVIDER="loopback", GATHER_TEST_SERVER=photos,
                       KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true",
                       **{f"KODIAK_{k.upper()}": str(v) for k, v in cases.SETTINGS.items()
                          if k != "allow_loopback_downloads"})
        with running(["migrate"], env, tmp_path / "migrate.log") as migrate:
            assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tests.gather.worker", "--queues", "gather"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            with running(["web"], env, tmp_path / "web.log") as web:
                base_url = f"http://127.0.0.1:{port}"
                wait_healthy(base_url, web, tmp_path / "web.log")
                run_search(base_url, photos)
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def run_search(base_url: str, photos: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        admin = sign_in(http, "admin@example.com", "admin-password-1")
        pid = http.post("/api/v1/projects", json={"name": "Bears"}, headers=admin).json()["id"]
        answer = http.post(f"/api/v1/projects/{pid}/searches",
                           json={"label": "black", "query": "black bear"}, headers=admin)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["kind"] == "search" and job["status"] == "queued"
        seen, started = [], time.monotonic()
        while job["status"] in ("queued", "running"):
            assert time.monotonic() - started < 120, job
            time.sleep(0.1)
            job = http.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()
            seen.append((job["progress"], (job["detail"] or {}).get("downloaded")))
        assert job["status"] == "succeeded", job
        assert any(0 < p < 1 for p, _ in seen), seen
        assert len({d for _, d in seen if d is not None}) >= 2, seen  # counters moved
        result = job["result"]
        assert result["added"] == len(cases.GOOD) and result["duplicates"] == 1
        assert result["rejected"] == len(cases.REJECTED)
        assert result["failed_downloads"] == len(cases.FAILED)
        assert result["reasons"] == cases.expected_reasons()

        images = http.get(f"/api/v1/projects/{pid}/images?limit=1000", headers=admin).json()
        assert images["total"] == len(cases.GOOD)
        # The same photo at two URLs is stored once, under whichever arrived first.
        stored = {image["image_url"][len(photos):].removesuffix("?copy=1")
                  for image in images["images"]}
        assert stored == set(cases.GOOD)
        for image in images["images"]:
            assert image["source"] == "search" and image["provider"] == "loopback"
            assert image["query"] == "black bear" and image["label"] == "black"
            assert image["page_url"].startswith("https://pages.example/")

        results = http.get(f"/api/v1/projects/{pid}/search-results",
                           params={"job_id": job["id"]}, headers=admin).json()["results"]
        by_path = {row["image_url"][len(photos):]: row for row in results}
        assert len(results) == len(cases.paths())
        for path, reason in {**cases.REJECTED, **cases.FAILED}.items():
            assert by_path[path]["reason"].startswith(reason), by_path[path]
