"""Scaled out on one machine: two web processes, two train and two gather workers, all on
PostgreSQL, Redis and an S3 server (moto) on loopback, each process with its own home.

Ten jobs submitted at once through both webs run once each (the claim log lines of the four
workers, JSON with job ids, say who ran what); every image and model is in the object store
and none on a local disk; either web answers a deployment from the same model, follows a
switch made through the other at once, and the per-key rate limit holds across both.
"""

import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from app.config import Settings
from app.storage import open_storage
from tests.conftest import s3_settings
from tests.gather import cases
from tests.gather.loopback import serving
from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.integration.stack import migrate
from tests.integration.test_bear_flow import sign_in

pytestmark = pytest.mark.integration
REDIS_DB = 10
PHOTOS_PER_LABEL = 8
TRAININGS = {  # project -> labels; project "a" is trained twice (two versions to switch)
    "a": ("black", "grizzly", "teddy"),
    "b": ("black", "grizzly"),
    "c": ("grizzly", "teddy"),
}
SECOND_RECIPE = {"head_epochs": 2, "augment_views": 0}
SEARCHES = 6  # one project each: the loopback provider answers every query with one list
SEARCH_MAX = 6  # the first six case URLs: four photos, one duplicate, one truncated file
KEY_BURST = 4
METRICS_TOKEN = "scrape-me"


def wait_ready(procs: dict[str, subprocess.Popen], logs: dict[str, Path],
               timeout: float = 120) -> None:
    """Until every Celery worker has logged that it is ready to consume."""
    deadline = time.monotonic() + timeout
    waiting = set(procs)
    while waiting:
        for name in list(waiting):
            if procs[name].poll() is not None:
                pytest.fail(f"{name} exited early:\n{logs[name].read_text()[-4000:]}")
            if " ready." in logs[name].read_text(errors="replace"):
                waiting.discard(name)
        assert time.monotonic() < deadline, f"workers not ready: {sorted(waiting)}"
        time.sleep(0.3)


def log_entries(log: Path) -> list[dict]:
    """The JSON lines of a process's log (Celery's banner and the like are not JSON)."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return entries


def claims(log: Path) -> list[int]:
    """Ids of the jobs this worker claimed (and so ran)."""
    return [entry["job_id"] for entry in log_entries(log)
            if entry.get("logger") == "app.services.jobs"
            and entry["message"].endswith("claimed; running it here")]


def photos(data_dir: Path, label: str, offset: int) -> list[tuple[str, tuple]]:
    paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[offset:offset + PHOTOS_PER_LABEL]
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_ten_jobs_on_two_webs_and_four_workers_over_s3(tmp_path, data_dir, postgres_url,
                                                       redis_url, s3_store):
    started = time.monotonic()
    homes = {name: tmp_path / name for name in
             ("migrate", "web1", "web2", "train1", "train2", "gather1", "gather2")}
    logs = {name: tmp_path / f"{name}.log" for name in homes}
    ports = {"web1": free_port(), "web2": free_port()}
    s3 = s3_settings(s3_store.endpoint)
    with serving(data_dir) as photo_server, ExitStack() as stack:
        def env(name: str) -> dict[str, str]:
            return base_env(
                homes[name], ports.get(name, 0),
                DATABASE_URL=postgres_url, BROKER_URL=redis_url, STORAGE_URL=s3_store.url,
                KODIAK_S3_ENDPOINT_URL=s3["s3_endpoint_url"], KODIAK_S3_REGION=s3["s3_region"],
                AWS_ACCESS_KEY_ID=s3["aws_access_key_id"],
                AWS_SECRET_ACCESS_KEY=s3["aws_secret_access_key"],
                KODIAK_LOG_FORMAT="json", KODIAK_WORKER_THREADS="1",
                KODIAK_MAX_ACTIVE_SEARCHES="10", KODIAK_MAX_ACTIVE_TRAININGS="10",
                KODIAK_PREDICT_RATE_PER_S_KEY="0.1", KODIAK_PREDICT_BURST_KEY=str(KEY_BURST),
                KODIAK_METRICS_TOKEN=METRICS_TOKEN,
                KODIAK_SEARCH_PROVIDER="loopback", GATHER_TEST_SERVER=photo_server,
                KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true",
                **{f"KODIAK_{k.upper()}": str(v) for k, v in cases.SETTINGS.items()
                   if k != "allow_loopback_downloads"})

        migrate(env("migrate"), homes["migrate"])
        procs = {}
        for name in ("train1", "train2"):
            procs[name] = stack.enter_context(running(
                ["worker", "--queues", "train"], env(name), logs[name]))
        for name in ("gather1", "gather2"):
            procs[name] = stack.enter_context(running(
                ["--queues", "gather"], env(name), logs[name], module="tests.gather.worker"))
        for name in ("web1", "web2"):
            procs[name] = stack.enter_context(running(["web"], env(name), logs[name]))
        webs = [stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{ports[name]}",
                                                 timeout=60)) for name in ("web1", "web2")]
        for name, http in zip(("web1", "web2"), webs, strict=True):
            wait_healthy(str(http.base_url).rstrip("/"), procs[name], logs[name])
        wait_ready({n: procs[n] for n in procs if not n.startswith("web")}, logs)
        ready_s = time.monotonic() - started

        admin = sign_in(webs[0], "admin@example.com", "admin-password-1")
        projects = {}
        for i, (name, labels) in enumerate(TRAININGS.items()):
            http = webs[i % 2]
            pid = http.post("/api/v1/projects", json={"name": f"Train {name}",
                                                      "labels": list(labels)},
                            headers=admin).json()["id"]
            projects[name] = pid
            for j, label in enumerate(labels):
                added = webs[(i + j) % 2].post(f"/api/v1/projects/{pid}/images", headers=admin,
                                               data={"label": label},
                                               files=photos(data_dir, label, 8 * i))
                assert added.status_code == 201 and len(added.json()["added"]) == \
                    PHOTOS_PER_LABEL, added.text
        search_projects = []
        for i in range(SEARCHES):
            search_projects.append(webs[i % 2].post(
                "/api/v1/projects", json={"name": f"Search {i}", "labels": ["bear"]},
                headers=admin).json()["id"])

        # Ten jobs at once, through both webs in turn.
        submissions = [("/trainings", projects[name], {}) for name in TRAININGS]
        submissions.insert(1, ("/trainings", projects["a"], SECOND_RECIPE))
        submissions += [("/searches", pid, {"label": "bear", "query": "bear",
                                            "max_images": SEARCH_MAX})
                        for pid in search_projects]
        jobs = []
        submitted = time.monotonic()
        for i, (path, pid, body) in enumerate(submissions):
            answer = webs[i % 2].post(f"/api/v1/projects/{pid}{path}", json=body,
                                      headers=admin)
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json())
        assert len(jobs) == 10
        views = {}
        while len(views) < len(jobs):
            assert time.monotonic() - submitted < 300, (views, [j["id"] for j in jobs])
            time.sleep(0.5)
            for i, job in enumerate(jobs):
                if job["id"] not in views:
                    view = webs[i % 2].get(f"/api/v1/jobs/{job['id']}", headers=admin).json()
                    if view["status"] not in ("queued", "running"):
                        views[job["id"]] = view
        jobs_s = time.monotonic() - submitted
        for view in views.values():
            assert view["status"] == "succeeded", view
            assert view["started_at"] and view["finished_at"]
        trainings = [views[j["id"]] for j in jobs if j["kind"] == "training"]
        searches = [views[j["id"]] for j in jobs if j["kind"] == "search"]
        assert len(trainings) == 4 and len(searches) == 6
        for view in searches:
            assert (view["result"]["added"], view["result"]["duplicates"],
                    view["result"]["rejected"]) == (4, 1, 1), view["result"]

        # Each job ran exactly once, on a worker of its kind, and both of each kind worked.
        claimed = {name: claims(logs[name]) for name in ("train1", "train2", "gather1",
                                                          "gather2")}
        runs = [job_id for ids in claimed.values() for job_id in ids]
        assert sorted(runs) == sorted(j["id"] for j in jobs), claimed
        for kind, workers in (("training", ("train1", "train2")),
                              ("search", ("gather1", "gather2"))):
            ids = {j["id"] for j in jobs if j["kind"] == kind}
            assert {i for w in workers for i in claimed[w]} == ids, claimed
            assert all(claimed[w] for w in workers), f"a {kind} worker ran nothing: {claimed}"

        # Every image and model file is in the object store, none on a local disk.
        store = open_storage(s3_store.url, Settings(home=tmp_path / "lister", **s3))
        keys = [key for key, _ in store.list_keys()]
        for pid in [*projects.values(), *search_projects]:
            total = webs[0].get(f"/api/v1/projects/{pid}/images?limit=1",
                                headers=admin).json()["total"]
            stored = [k for k in keys if k.startswith(f"images/{pid}/")]
            assert total > 0 and len(stored) == total, (pid, total, stored)
        model_ids = [view["result"]["model_id"] for view in trainings]
        for name, pid in projects.items():  # models/<project>/<folder of one version>/<file>
            folders = {}
            for key in keys:
                if key.startswith(f"models/{pid}/"):
                    folder, _, file = key.rpartition("/")
                    folders.setdefault(folder, set()).add(file)
            models = webs[1].get(f"/api/v1/projects/{pid}/models", headers=admin).json()
            assert len(folders) == len(models) == (2 if name == "a" else 1), folders
            for files in folders.values():
                assert files >= {"weights.safetensors", "model.json", "model.onnx"}, folders
        for name, home in homes.items():
            local = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
            outside = [p for p in local if not p.startswith("cache/s3/")]
            assert outside == [], f"{name} keeps files outside its S3 cache: {outside}"
            assert not (home / "storage").exists()

        # One deployment, the same answers through either web; a switch seen by both at once.
        first, second = model_ids[0], model_ids[1]  # project a: default recipe, then the other
        deployed = webs[0].post(f"/api/v1/models/{first}/deployments", headers=admin,
                                json={"slug": "scaled", "public": True})
        assert deployed.status_code == 201, deployed.text
        sample = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[-1].read_bytes()

        def predict(http: httpx.Client, headers: dict | None = None) -> httpx.Response:
            return http.post("/api/v1/predict/scaled", headers=headers or {},
                             files={"file": ("x.jpg", sample, "image/jpeg")})

        def answers() -> list[dict]:
            out = []
            for http in webs:
                answer = predict(http)
                assert answer.status_code == 200, answer.text
                out.append(answer.json())
            return out

        one, two = answers()
        assert one["model_id"] == two["model_id"] == first
        assert one["probabilities"] == pytest.approx(two["probabilities"], abs=1e-6)
        for model_id, via, seen_by in ((second, 0, 1), (first, 1, 0)):
            moved = webs[via].patch("/api/v1/deployments/scaled", headers=admin,
                                    json={"model_id": model_id})
            assert moved.status_code == 200, moved.text
            assert predict(webs[seen_by]).json()["model_id"] == model_id
            assert predict(webs[via]).json()["model_id"] == model_id
        assert answers()[0]["probabilities"] == pytest.approx(one["probabilities"], abs=1e-6)

        # One key's bucket is shared by both webs (in Redis): the burst, then 429.
        key = sign_in(webs[1], "admin@example.com", "admin-password-1")
        statuses, retry_after = [], []
        for i in range(KEY_BURST + 2):
            answer = predict(webs[i % 2], key)
            statuses.append(answer.status_code)
            retry_after.append(answer.headers.get("Retry-After"))
        assert statuses == [200] * KEY_BURST + [429, 429], statuses
        assert all(int(seconds) >= 1 for seconds in retry_after[KEY_BURST:]), retry_after

        # Each replica is scraped on its own; both count the same jobs (read from the database).
        for http in webs:
            scraped = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200
            assert 'kodiak_jobs{kind="training",status="succeeded"} 4.0' in scraped.text
    print(f"\nscale out: ready in {ready_s:.0f} s, ten jobs in {jobs_s:.0f} s, "
          f"claims {claimed}, total {time.monotonic() - started:.0f} s")


def test_sigterm_lets_a_train_worker_finish_its_job_first(tmp_path, data_dir, postgres_url,
                                                           redis_url):
    """Celery's warm shutdown: the running training ends as succeeded, then the worker exits
    0; the job queued behind it stays in the queue for the next worker."""
    port = free_port()
    env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url,
                   KODIAK_WORKER_THREADS="1", KODIAK_LOG_FORMAT="json")
    migrate(env, tmp_path)
    log = tmp_path / "worker.log"
    with running(["worker", "--queues", "train"], env, log) as worker, \
            running(["web"], env, tmp_path / "web.log") as web, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        wait_healthy(str(http.base_url).rstrip("/"), web, tmp_path / "web.log")
        wait_ready({"worker": worker}, {"worker": log})
        admin = sign_in(http, "admin@example.com", "admin-password-1")
        pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": ["black", "teddy"]},
                        headers=admin).json()["id"]
        for label in ("black", "teddy"):
            http.post(f"/api/v1/projects/{pid}/images", headers=admin, data={"label": label},
                      files=photos(data_dir, label, 0))
        running_job, queued_job = (
            http.post(f"/api/v1/projects/{pid}/trainings", json={}, headers=admin).json()
            for _ in range(2))

        def view(job: dict) -> dict:
            return http.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()

        deadline = time.monotonic() + 120
        while view(running_job)["status"] == "queued":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        worker.terminate()  # SIGTERM, as `docker stop` sends
        terminated = time.monotonic()
        assert view(running_job)["status"] == "running"
        assert worker.wait(timeout=300) == 0, log.read_text()[-3000:]
        drained_s = time.monotonic() - terminated
        finished = view(running_job)
        assert finished["status"] == "succeeded", finished
        assert view(queued_job)["status"] == "queued"
        text = log.read_text()
        assert "Warm shutdown" in text
        assert claims(log) == [running_job["id"]]
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen("train") == 1  # the queued job's message, for the next worker
    assert not broker.hlen("unacked")  # the finished job's message was acknowledged
    print(f"\nwarm shutdown: the running training finished {drained_s:.0f} s after SIGTERM")
