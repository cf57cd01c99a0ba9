"""The bear flow end to end on real processes: upload, train on a worker, deploy, predict."""

import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import base_env, free_port, running, wait_healthy

pytestmark = pytest.mark.integration
LABELS = ("black", "grizzly", "teddy")


def split_bears(data_dir: Path) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Every fifth photo of each label held back for predictions; the rest for training."""
    train, held = {}, []
    for label in LABELS:
        paths = sorted((data_dir / "bears" / label).glob("*.jpg"))
        train[label] = [p for i, p in enumerate(paths) if i % 5 != 0]
        held += [(p, label) for i, p in enumerate(paths) if i % 5 == 0]
    return train, held


def sign_in(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    login = http.post("/api/v1/session", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    key = http.post("/api/v1/api-keys", headers={"X-CSRF-Token": login.json()["csrf_token"]})
    http.cookies.clear()
    return {"Authorization": f"Bearer {key.json()['key']}"}


def run_bear_flow(base_url: str, data_dir: Path, *, epochs: int) -> dict:
    train, held = split_bears(data_dir)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        admin = sign_in(http, "admin@example.com", "admin-password-1")
        project = http.post("/api/v1/projects", json={"name": "Bears", "labels": list(LABELS)},
                            headers=admin).json()
        pid = project["id"]
        for label, paths in train.items():
            for start in range(0, len(paths), 60):
                batch = paths[start:start + 60]
                answer = http.post(
                    f"/api/v1/projects/{pid}/images", headers=admin, data={"label": label},
                    files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch],
                )
                assert answer.status_code == 201, answer.text
                body = answer.json()
                assert body["rejected"] == [], body["rejected"]
                assert len(body["added"]) + len(body["duplicates"]) == len(batch)
        counts = http.get(f"/api/v1/projects/{pid}", headers=admin).json()["image_counts"]
        assert sum(counts.values()) >= 0.98 * sum(len(p) for p in train.values())

        started = time.monotonic()
        job = http.post(f"/api/v1/projects/{pid}/trainings", json={"epochs": epochs},
                        headers=admin)
        assert job.status_code == 202, job.text
        job = job.json()
        seen = set()
        while job["status"] in ("queued", "running"):
            assert time.monotonic() - started < 900, job
            time.sleep(1)
            job = http.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()
            seen.add(job["progress"])
        train_seconds = time.monotonic() - started
        assert job["status"] == "succeeded", job
        assert any(0 < p < 1 for p in seen), seen

        model = http.get(f"/api/v1/models/{job['result']['model_id']}", headers=admin).json()
        assert model["labels"] == sorted(LABELS) or set(model["labels"]) == set(LABELS)
        matrix = model["metrics"]["confusion_matrix"]
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
        assert model["metrics"]["error_rate"] <= 0.1
        onnx = http.get(model["files"]["model.onnx"], headers=admin)
        assert onnx.status_code == 200 and len(onnx.content) > 1_000_000

        deployed = http.post(f"/api/v1/models/{model['id']}/deployments",
                             json={"slug": "bears", "public": False}, headers=admin)
        assert deployed.status_code == 201, deployed.text
        predict_url = "/api/v1/predict/bears"
        right = 0
        for path, label in held:
            answer = http.post(predict_url, headers=admin,
                               files={"file": (path.name, path.read_bytes(), "image/jpeg")})
            assert answer.status_code == 200, answer.text
            right += answer.json()["label"] == label
        accuracy = right / len(held)
        assert accuracy >= 0.95, accuracy

        demo = http.get("/demo/bears")
        assert demo.status_code == 404  # private, and this client is not signed in

        created = http.post("/api/v1/users", headers=admin,
                            json={"email": "second@example.com", "password": "second-password"})
        assert created.status_code == 201
        other = sign_in(http, "second@example.com", "second-password")
        assert http.get(f"/api/v1/projects/{pid}", headers=other).status_code == 404
        assert http.get(f"/api/v1/models/{model['id']}", headers=other).status_code == 404
        sample = held[0][0].read_bytes()
        assert http.post(predict_url, headers=other,
                         files={"file": ("x.jpg", sample)}).status_code == 404
        assert http.post(predict_url, files={"file": ("x.jpg", sample)}).status_code == 404
        return {"accuracy": accuracy, "train_seconds": train_seconds,
                "error_rate": model["metrics"]["error_rate"], "held_back": len(held)}


def test_flow_on_postgres_redis_and_a_celery_worker(tmp_path, data_dir, postgres_url,
                                                    redis_url):
    port = free_port()
    env = base_env(tmp_path, port, DATABASE_URL=postgres_url, BROKER_URL=redis_url)
    with running(["migrate"], env, tmp_path / "migrate.log") as migrate:
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    with running(["worker", "--queues", "train"], env, tmp_path / "worker.log"), \
            running(["web"], env, tmp_path / "web.log") as web:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, web, tmp_path / "web.log")
        figures = run_bear_flow(base_url, data_dir, epochs=1)
    print(f"\npostgres+redis flow: {figures}")


def test_flow_on_embedded_defaults_started_like_make_run(tmp_path, data_dir):
    port = free_port()
    env = base_env(tmp_path / "var", port)
    with running(["run"], env, tmp_path / "run.log") as server:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, server, tmp_path / "run.log")
        figures = run_bear_flow(base_url, data_dir, epochs=0)
    db = tmp_path / "var" / "kodiak.db"
    assert db.is_file()
    print(f"\nembedded flow: {figures}")
