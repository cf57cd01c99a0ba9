"""SQLite under contention, on the processes `kodiak run` starts (the web, a gather worker and
a train worker, on SQLite and the filesystem broker; the gather worker with the loopback
provider): a training, a search, uploads and relabels from several clients at once. Zero 5xx,
and "database is locked" in no answer, no job error and no process log."""

import random
import threading
import time

import httpx
import pytest

from tests.gather.loopback import serving
from tests.integration.conftest import base_env, free_port, wait_healthy
from tests.integration.stack import (
    admin_client,
    migrate,
    process,
    search,
    spec,
    wait_ready,
)

pytestmark = pytest.mark.integration
LABELS = ("black", "grizzly", "teddy")
CLIENTS = 3
LOCKED = "database is locked"


def test_sqlite_under_a_training_a_search_uploads_and_relabels(tmp_path, data_dir):
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "gather", "train")}
    with serving(data_dir) as photos:
        env = base_env(tmp_path, port, KODIAK_SEARCH_PROVIDER="loopback",
                       KODIAK_ALLOW_LOOPBACK_DOWNLOADS="true", KODIAK_WORKER_THREADS="1",
                       GATHER_TEST_SERVER=photos, GATHER_TEST_DATA=str(data_dir))
        migrate(env, tmp_path)
        with process(["web"], env, logs["web"], module="app.cli") as web, \
                process(["worker", "--queues", "gather"], env, logs["gather"]), \
                process(["worker", "--queues", "train"], env, logs["train"], module="app.cli"):
            base_url = f"http://127.0.0.1:{port}"
            wait_healthy(base_url, web, logs["web"])
            wait_ready(logs["gather"], logs["train"])
            http, admin = admin_client(base_url)
            pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": list(LABELS)},
                            headers=admin).json()["id"]
            for label in LABELS:
                paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[:8]
                added = http.post(f"/api/v1/projects/{pid}/images", headers=admin,
                                  data={"label": label},
                                  files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                         for p in paths])
                assert added.status_code == 201, added.text
            training = http.post(f"/api/v1/projects/{pid}/trainings", headers=admin,
                                 json={"augment_views": 0})
            assert training.status_code == 202, training.text
            searching = search(http, admin, pid, spec(labels=["black"], start=40, stop=70))
            jobs = [training.json()["id"], searching["id"]]
            answers, stop = [], threading.Event()
            pool = [p for label in LABELS
                    for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[6:30]]

            def client(seed: int) -> None:
                rng = random.Random(seed)
                with httpx.Client(base_url=base_url, headers=admin, timeout=60) as mine:
                    while not stop.wait(0.2):  # people pause; the workers get CPU too
                        answers.append(act(mine, rng, pid, pool, jobs))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            try:
                deadline = time.monotonic() + 150
                phases = []  # the training's messages over time, for a failure's message
                while not all(http.get(f"/api/v1/jobs/{job}", headers=admin).json()["status"]
                              in ("succeeded", "failed", "cancelled") for job in jobs):
                    assert time.monotonic() < deadline, "the jobs did not end in 150 s"
                    msg = http.get(f"/api/v1/jobs/{jobs[0]}", headers=admin).json()["message"]
                    if not phases or phases[-1][1] != msg[:40]:
                        phases.append((round(time.monotonic() - deadline + 150, 1), msg[:40]))
                    time.sleep(0.5)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)
            ended = [http.get(f"/api/v1/jobs/{job}", headers=admin).json() for job in jobs]
    bad = [a for a in answers if a[1] >= 500 or LOCKED in a[2]]
    counts = {}
    for operation, status, _ in answers:
        counts[(operation, status)] = counts.get((operation, status), 0) + 1
    assert len(answers) > 50, counts
    assert bad == [], (bad[:5], counts)
    assert [job["status"] for job in ended] == ["succeeded", "succeeded"], (
        [job["error"] for job in ended], phases)
    for name, log in logs.items():
        assert LOCKED not in log.read_text(errors="replace"), (name, _around(log, LOCKED))


def act(http: httpx.Client, rng: random.Random, pid: int, pool: list, jobs: list
        ) -> tuple[str, int, str]:
    """One thing a person does: upload a photo (many are already there), relabel one, list,
    or look at a job. (operation, status, body)"""
    operation = rng.choices(["upload", "relabel", "list", "job"], weights=[3, 3, 2, 2])[0]
    if operation == "upload":
        path = rng.choice(pool)
        answer = http.post(f"/api/v1/projects/{pid}/images", data={"label": path.parent.name},
                           files=[("files", (path.name, path.read_bytes(), "image/jpeg"))])
    elif operation == "relabel":
        images = http.get(f"/api/v1/projects/{pid}/images",
                          params={"limit": 50, "offset": rng.randrange(0, 30)})
        if images.status_code != 200 or not images.json()["images"]:
            return operation, images.status_code, images.text
        image = rng.choice(images.json()["images"])
        answer = http.patch(f"/api/v1/images/{image['id']}",
                            json={"label": rng.choice(LABELS)})
    elif operation == "list":
        answer = http.get(f"/api/v1/projects/{pid}/images", params={"limit": 100})
    else:
        answer = http.get(f"/api/v1/jobs/{rng.choice(jobs)}")
    return operation, answer.status_code, answer.text[:2000]


def _around(log, text: str) -> str:
    content = log.read_text(errors="replace")
    at = content.index(text)
    return content[max(0, at - 3000):at + 500]
