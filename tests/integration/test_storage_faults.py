"""The store failing half way through its writes, on real processes (the embedded default:
SQLite, the filesystem broker, a local folder; `kodiak web` and a gather worker whose store
runs out of space when the test says so): an upload answers 503 with a reason and keeps
nothing, a search fails with a reason and keeps what it filed before, no row points at a
missing file, no file is left without its row; once the store takes writes again, both work
and what was kept counts as duplicates."""

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


def test_a_store_that_fails_half_way(tmp_path, data_dir):
    port = free_port()
    writes_left = tmp_path / "writes-left"
    photos = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:6]
    with serving(data_dir) as server:
        env = base_env(tmp_path, port, KODIAK_SEARCH_PROVIDER="loopback",
                       KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true", GATHER_TEST_SERVER=server,
                       GATHER_TEST_DATA=str(data_dir), FAULT_WRITES_FILE=str(writes_left))
        settings = Settings(home=tmp_path)
        migrate(env, tmp_path)
        with process(["worker", "--queues", "gather"], env, tmp_path / "worker.log"), \
                process(["web"], env, tmp_path / "web.log") as web:
            base_url = f"http://127.0.0.1:{port}"
            wait_healthy(base_url, web, tmp_path / "web.log")
            wait_ready(tmp_path / "worker.log")
            http, admin = admin_client(base_url)
            pid = http.post("/api/v1/projects", json={"name": "Bears",
                                                      "labels": ["black", "grizzly"]},
                            headers=admin).json()["id"]

            def upload():
                return http.post(f"/api/v1/projects/{pid}/images", headers=admin,
                                 data={"label": "grizzly"},
                                 files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                        for p in photos])

            # an upload of six photos: the store takes three, then is full
            writes_left.write_text("3")
            refused = upload()
            assert refused.status_code == 503, refused.text
            assert "No space left on device" in refused.json()["detail"]
            assert image_count(http, admin, pid) == 0
            assert store_check(settings).clean

            # a search of 30 photos in two batches (10 answer at once, 20 a second later):
            # the store takes the first batch and fills up during the second
            writes_left.write_text("12")
            job = search(http, admin, pid, spec(start=0, stop=30, fast=10, slow=1))
            failed = wait_job(http, admin, job["id"])
            assert failed["status"] == "failed", failed
            assert "the file store failed (No space left on device)" in failed["error"], failed
            kept = image_count(http, admin, pid)
            assert 0 < kept == failed["result"]["added"] <= 10, failed
            report = store_check(settings)
            assert report.clean, report  # every row's file is there, no file without a row

            # the store takes writes again: the same search and the upload go through
            writes_left.write_text("")
            again = wait_job(http, admin, search(http, admin, pid, spec(start=0, stop=30))["id"])
            assert again["status"] == "succeeded", again
            assert again["result"]["duplicates"] >= kept, again
            assert upload().status_code == 201
            assert image_count(http, admin, pid) == kept + again["result"]["added"] + 6
        assert store_check(settings).clean
