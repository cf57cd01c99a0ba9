"""Redis (the broker) restarted while a search runs, on real processes: the running search ends
as it would have, the web answers no 5xx but a 503 with a reason for work it cannot queue,
and the worker takes the next search from the restarted Redis."""

import subprocess
import time
from contextlib import contextmanager

import httpx
import pytest
import redis

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


@contextmanager
def redis_server(port: int):
    """Our own Redis (never the shared one), without persistence: a restart forgets all."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_restarted_while_a_search_runs(tmp_path, data_dir, postgres_url):
    from app.config import Settings

    port, redis_port = free_port(), free_port()
    with serving(data_dir) as photos:
        env = base_env(tmp_path, port, DATABASE_URL=postgres_url,
                       BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
                       KODIAK_SEARCH_PROVIDER="loopback", KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true",
                       KODIAK_DOWNLOAD_READ_TIMEOUT_S="30",
                       GATHER_TEST_SERVER=photos, GATHER_TEST_DATA=str(data_dir))
        settings = Settings(home=tmp_path, database_url=postgres_url)
        migrate(env, tmp_path)
        statuses: list[tuple[str, int]] = []

        def seen(answer: httpx.Response) -> httpx.Response:
            statuses.append((answer.request.url.path, answer.status_code))
            return answer

        with redis_server(redis_port) as broker, \
                process(["worker", "--queues", "gather", "--concurrency", "2"], env,
                        tmp_path / "worker.log"), \
                process(["web"], env, tmp_path / "web.log") as web:
            base_url = f"http://127.0.0.1:{port}"
            wait_healthy(base_url, web, tmp_path / "web.log")
            wait_ready(tmp_path / "worker.log")
            http, admin = admin_client(base_url)
            http.event_hooks["response"] = [lambda answer: seen(answer) and None]
            pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": ["black"]},
                            headers=admin).json()["id"]
            # 10 photos at once, 10 more after 8 s: Redis goes down and comes back between
            running = search(http, admin, pid, spec(start=0, stop=20, fast=10, slow=8))
            view = wait_job(http, admin, running["id"], until=lambda job: (
                job["detail"] or {}).get("downloaded", 0) >= 10
                or job["status"] not in ("queued", "running"))
            assert view["status"] == "running", view
            broker.kill()
            broker.wait()
            # a search sent while Redis is down: 503 with a reason, its job failed at once
            refused = http.post(f"/api/v1/projects/{pid}/searches", headers=admin,
                                json={"label": "black", "query": spec(start=20, stop=22)})
            assert refused.status_code == 503, refused.text
            assert "queue is not answering" in refused.json()["detail"]
            # everything else answers as usual meanwhile
            assert http.get("/api/v1/health").status_code == 200
            assert http.get(f"/api/v1/jobs/{running['id']}", headers=admin).status_code == 200
            assert image_count(http, admin, pid) >= 1
            assert http.get("/api/v1/projects", headers=admin).status_code == 200

            with redis_server(redis_port):
                done = wait_job(http, admin, running["id"], timeout=60)
                assert done["status"] == "succeeded", done
                assert done["result"]["added"] + done["result"]["duplicates"] == 20, done
                # the refused search stays failed, with the reason
                jobs = {job["id"]: job for job in
                        http.get(f"/api/v1/projects/{pid}/jobs", headers=admin).json()}
                failed = [job for job in jobs.values() if job["id"] != running["id"]]
                assert [job["status"] for job in failed] == ["failed"]
                assert "queue is not answering" in failed[0]["error"]
                # the worker is back on the new Redis: the next search runs
                after = search(http, admin, pid, spec(start=20, stop=26))
                assert wait_job(http, admin, after["id"], timeout=60)["status"] == "succeeded"

            assert [s for s in statuses if s[1] >= 500] == [
                (f"/api/v1/projects/{pid}/searches", 503)]
        assert store_check(settings).clean

