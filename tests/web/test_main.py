"""App-wide guards: body limits per route, frame and sniffing headers, queue failures."""

from fastapi.testclient import TestClient

from app.cli import migrate
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings


def test_predictions_have_a_smaller_body_limit_than_uploads(tmp_path):
    settings = make_settings(tmp_path, max_upload_mb=8, max_predict_mb=1)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        body = b"\0" * (2 * 2**20)
        predict = client.post("/api/v1/predict/anything", files={"file": ("x.jpg", body)})
        assert predict.status_code == 413 and "1 MB" in predict.json()["detail"]
        pid = client.post("/api/v1/projects", json={"name": "p"}, headers=headers).json()["id"]
        upload = client.post(f"/api/v1/projects/{pid}/images", headers=headers,
                             data={"label": "x"}, files=[("files", ("x.jpg", body))])
        assert upload.status_code == 201  # under the upload limit: answered per file
        assert upload.json()["rejected"][0]["reason"]


def test_pages_cannot_be_framed_but_the_demo_can(client):
    assert client.get("/login").headers["x-frame-options"] == "DENY"
    assert client.get("/api/v1/health").headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in client.get("/demo/none").headers


def test_a_queue_that_does_not_answer_fails_the_job_with_503(tmp_path, data_dir):
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        pid = client.post("/api/v1/projects", json={"name": "p"}, headers=headers).json()["id"]
        for label in ("black", "grizzly"):
            files = [("files", (p.name, p.read_bytes())) for p in
                     sorted((data_dir / "bears" / label).glob("*.jpg"))[:2]]
            client.post(f"/api/v1/projects/{pid}/images", headers=headers,
                        data={"label": label}, files=files)
        answer = client.post(f"/api/v1/projects/{pid}/trainings", json={}, headers=headers)
        assert answer.status_code == 503
        assert "queue is not answering" in answer.json()["detail"]
        jobs = client.get(f"/api/v1/projects/{pid}/jobs", headers=headers).json()
        assert [job["status"] for job in jobs] == ["failed"]
