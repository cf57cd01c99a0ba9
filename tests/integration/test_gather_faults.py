"""Search jobs under faults, on real processes (PostgreSQL, Redis, `kodiak web`, gather workers
with the loopback provider): a worker killed mid-search, two searches racing for the same
photos. Nothing stored is lost, nothing is half there, and the next search goes on."""

import signal

import pytest

from app.config import Settings
from tests.gather.loopback import serving
from tests.integration.conftest import base_env, free_port, wait_healthy
from tests.integration.stack import (
    admin_client,
    image_count,
    migrate,
    process,
    search,
    spec,
    store_check,
    wait_job,
    wait_ready,
)

pytestmark = pytest.mark.integration
REDIS_DB = 9
STALE_SECONDS = 4


@pytest.fixture
def stack(tmp_path, data_dir, postgres_url, redis_url):
    """(env, base_url, settings) of a web process on a fresh database and queue; workers are
    the test's to start."""
    port = free_port()
    # every answer a little late: the two racing searches' batches land together
    with serving(data_dir, latency=0.3) as photos:
        env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url,
                       KODIAK_SEARCH_PROVIDER="loopback", KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true",
                       KODIAK_JOB_STALE_SECONDS=str(STALE_SECONDS),
                       KODIAK_DOWNLOAD_READ_TIMEOUT_S="30", KODIAK_DOWNLOAD_TOTAL_TIMEOUT_S="60",
                       GATHER_TEST_SERVER=photos, GATHER_TEST_DATA=str(data_dir))
        migrate(env, tmp_path)
        with process(["web"], env, tmp_path / "web.log") as web:
            base_url = f"http://127.0.0.1:{port}"
            wait_healthy(base_url, web, tmp_path / "web.log")
            yield env, base_url, Settings(home=tmp_path, database_url=postgres_url)


def gather_worker(env, log, *extra):
    return process(["worker", "--queues", "gather", *extra], env, log)


def test_a_worker_killed_mid_search_loses_nothing_and_the_next_search_goes_on(stack, tmp_path):
    env, base_url, settings = stack
    http, admin = admin_client(base_url)
    pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": ["black"]},
                    headers=admin).json()["id"]
    with gather_worker(env, tmp_path / "worker-1.log") as worker:
        # 12 photos answer at once, the other 18 only after 20 s: the kill comes between
        job = search(http, admin, pid, spec(start=0, stop=30, fast=12, slow=20))
        view = wait_job(http, admin, job["id"], timeout=60,
                        until=lambda job: (job["detail"] or {}).get("downloaded", 0) >= 12
                        or job["status"] not in ("queued", "running"))
        assert view["status"] == "running", view
        stored = image_count(http, admin, pid)
        assert stored > 0, view
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    failed = wait_job(http, admin, job["id"], timeout=STALE_SECONDS + 20)
    assert failed["status"] == "failed", failed
    assert "stopped responding" in failed["error"], failed
    assert image_count(http, admin, pid) == stored
    report = store_check(settings)
    assert report.missing_files == [] and report.stuck_jobs == [], report  # every row's file
    assert report.orphan_files == [], report  # and no file without its row

    with gather_worker(env, tmp_path / "worker-2.log"):
        again = search(http, admin, pid, spec(start=0, stop=16))
        done = wait_job(http, admin, again["id"], timeout=60)
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["duplicates"] >= stored, result  # the photos stored before the kill
    assert image_count(http, admin, pid) == stored + result["added"]
    assert store_check(settings).clean


def test_two_searches_racing_for_the_same_photos_both_succeed(stack, tmp_path):
    """Two workers file the same 40 photos at once: each photo is stored once, counted as
    added by one search and as a duplicate by the other; no file is left over."""
    env, base_url, settings = stack
    http, admin = admin_client(base_url)
    pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": ["black"]},
                    headers=admin).json()["id"]
    with gather_worker(env, tmp_path / "worker-1.log", "--concurrency", "1"), \
            gather_worker(env, tmp_path / "worker-2.log", "--concurrency", "1"):
        wait_ready(tmp_path / "worker-1.log", tmp_path / "worker-2.log")
        jobs = [search(http, admin, pid, spec(start=0, stop=40, name=name))
                for name in ("first", "second")]
        done = [wait_job(http, admin, job["id"], timeout=90) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded", "succeeded"], [
        job["error"] for job in done]
    results = [job["result"] for job in done]
    for result in results:
        assert result["added"] + result["duplicates"] + result["rejected"] == 40, result
        assert result["failed_downloads"] == 0, result
    added = sum(result["added"] for result in results)
    assert image_count(http, admin, pid) == added
    assert results[0]["rejected"] + added <= 40
    # every photo one search added, the other counted as a duplicate
    assert sum(result["duplicates"] for result in results) >= added
    assert store_check(settings).clean
