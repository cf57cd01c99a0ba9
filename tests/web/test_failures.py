"""Failures a person can see answer with a reason they can act on: a model that cannot load
(503), a stored file that is gone or damaged (410), a store that fails (503), and on the
browser's forms an error page, never raw JSON."""

import json
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from app.cli import migrate
from app.models import Image
from app.services import maintenance
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings
from tests.integration.faulty import FailingStorage
from tests.serve.conftest import add_model_version, deploy, make_project
from tests.web.test_pages import sign_in

PAGE = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def photos(data_dir, label: str, n: int) -> list:
    return sorted((data_dir / "bears" / label).glob("*.jpg"))[:n]


def upload(client, headers, project_id: int, paths, label="black"):
    return client.post(f"/api/v1/projects/{project_id}/images", headers=headers,
                       data={"label": label},
                       files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])


@pytest.fixture
def project(client, admin, data_dir) -> int:
    project_id = make_project(client, admin, ["black", "grizzly"])
    assert upload(client, admin, project_id, photos(data_dir, "black", 2)).status_code == 201
    return project_id


def a_model(client, project_id: int, tmp_path, *, onnx: bytes) -> int:
    folder = tmp_path / "model"
    folder.mkdir()
    meta = {"labels": ["black", "grizzly"], "metrics": {}}
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.onnx").write_bytes(onnx)
    (folder / "weights.safetensors").write_bytes(b"\0" * 16)
    return add_model_version(client.app, project_id=project_id, model_dir=folder, meta=meta)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_model_that_cannot_load_answers_503_with_a_reason(client, admin, project, tmp_path,
                                                            data_dir, damage):
    model_id = a_model(client, project, tmp_path, onnx=b"not an onnx graph")
    if damage == "missing":
        client.app.state.storage.delete(f"models/{project}/{model_id}/model.onnx")
    deploy(client, admin, model_id, "broken", public=True)
    for _ in range(2):  # a failed load is not cached: each request tries and explains
        answer = client.post("/api/v1/predict/broken", files={
            "file": ("x.jpg", photos(data_dir, "black", 1)[0].read_bytes(), "image/jpeg")})
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert f"model {model_id}" in detail and "cannot be loaded" in detail
        assert str(tmp_path) not in detail  # no server paths
    if damage == "missing":
        answer = client.get(f"/api/v1/models/{model_id}/files/model.onnx", headers=admin)
        assert answer.status_code == 410 and "missing" in answer.json()["detail"]


def test_a_stored_image_that_is_gone_or_damaged_answers_410(client, admin, project):
    listed = client.get(f"/api/v1/projects/{project}/images", headers=admin).json()["images"]
    gone, damaged = listed[0]["id"], listed[1]["id"]
    storage, factory = client.app.state.storage, client.app.state.session_factory
    with factory() as session:
        key_of = dict(session.execute(select(Image.id, Image.storage_key)).all())
    storage.delete(key_of[gone])
    storage.put(key_of[damaged], b"this is not a JPEG any more")
    for path in (f"/api/v1/images/{gone}/file", f"/api/v1/images/{gone}/thumb?size=100"):
        answer = client.get(path, headers=admin)
        assert answer.status_code == 410, (path, answer.text)
        assert "missing" in answer.json()["detail"], answer.text
    answer = client.get(f"/api/v1/images/{damaged}/thumb?size=100", headers=admin)
    assert answer.status_code == 410 and "damaged" in answer.json()["detail"], answer.text


def test_a_store_that_fails_half_way_through_an_upload(client, admin, project, data_dir):
    """The store takes two of four files, then fails: 503 with a reason, no row and no file
    of the upload kept; the same upload succeeds once the store takes writes again."""
    writes = {"left": 2}

    def budget() -> bool:
        writes["left"] -= 1
        return writes["left"] >= 0

    storage = client.app.state.storage
    client.app.state.storage = FailingStorage(storage, budget)
    factory = client.app.state.session_factory
    with factory() as session:
        images_before = session.scalar(select(func.count()).select_from(Image))
    keys_before = dict(storage.list_keys())
    paths = photos(data_dir, "grizzly", 4)

    answer = upload(client, admin, project, paths, label="grizzly")
    assert answer.status_code == 503, answer.text
    assert "No space left on device" in answer.json()["detail"]
    assert "nothing of this request was saved" in answer.json()["detail"]
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == images_before
        report = maintenance.check(session=session, storage=storage,
                                   settings=client.app.state.settings, grace_s=0)
    assert dict(storage.list_keys()) == keys_before  # the two files written were removed
    assert report.clean, report

    writes["left"] = 100
    answer = upload(client, admin, project, paths, label="grizzly")
    assert answer.status_code == 201 and len(answer.json()["added"]) == 4, answer.text


def test_a_database_locked_past_the_busy_timeout_answers_503(client, admin, project):
    """Another process holds SQLite's write lock longer than this one waits: 503 and a
    reason, not a bare 500."""
    engine = client.app.state.engine
    event.listen(engine, "connect", lambda connection, _: connection.execute(
        "PRAGMA busy_timeout=200"))
    engine.dispose()  # new connections, with the short wait
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        answer = client.post(f"/api/v1/projects/{project}/labels", headers=admin,
                             json={"name": "teddy"})
        assert answer.status_code == 503, answer.text
        assert "database is busy" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "5"
    finally:
        holder.rollback()
        holder.close()
    answer = client.post(f"/api/v1/projects/{project}/labels", headers=admin,
                         json={"name": "teddy"})
    assert answer.status_code == 201, answer.text


@pytest.fixture
def csrf(client) -> str:
    return sign_in(client)


def test_forms_answer_error_pages_never_json(client, project, csrf, data_dir):
    """Each kind of failure on a form post: a service error, a queue that is down, a store
    that fails, a body too large, a malformed form, a page that does not exist."""

    def is_page(answer, status: int, text: str) -> None:
        assert answer.status_code == status, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html"), answer.text[:300]
        assert text in answer.text, answer.text

    form = {"csrf_token": csrf}
    # a service error (a duplicate label name)
    is_page(client.post(f"/projects/{project}/labels", data={**form, "name": "black"},
                        headers=PAGE), 400, "black")
    # training with one label's images only: a reason, as a page
    is_page(client.post(f"/projects/{project}/train", data=form, headers=PAGE), 400, "label")
    # a malformed number in the training form
    is_page(client.post(f"/projects/{project}/train", data={**form, "epochs": "many"},
                        headers=PAGE), 400, "epochs must be a number")
    # deploying a model that does not exist; a field that is not a number
    is_page(client.post(f"/projects/{project}/deploy",
                        data={**form, "model_id": "999", "slug": "x"}, headers=PAGE), 404, "999")
    is_page(client.post(f"/projects/{project}/deploy",
                        data={**form, "model_id": "x", "slug": "x"}, headers=PAGE), 400, "model_id")
    # a dataset import that is not a zip; a retrain of a model that does not exist; a
    # deployment that does not exist
    answer = client.post(f"/projects/{project}/import", data=form, headers=PAGE,
                         files={"file": ("data.zip", b"not a zip", "application/zip")},
                         follow_redirects=False)
    assert answer.status_code in (303, 400), answer.text  # a notice on the project page, or
    if answer.status_code == 400:                        # an error page
        is_page(answer, 400, "zip")
    is_page(client.post("/models/999/retrain", data=form, headers=PAGE), 404, "999")
    is_page(client.post("/deployments/nothing-here", data={**form, "public": "true"},
                        headers=PAGE), 404, "nothing-here")
    # the store fails during an upload form
    storage = client.app.state.storage
    client.app.state.storage = FailingStorage(storage, lambda: False)
    try:
        answer = client.post(f"/projects/{project}/upload", data={**form, "label": "grizzly"},
                             files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                    for p in photos(data_dir, "grizzly", 2)], headers=PAGE)
        is_page(answer, 503, "No space left on device")
    finally:
        client.app.state.storage = storage
    # a page that does not exist, and a method a page does not take
    is_page(client.get("/projects/12345", headers=PAGE), 404, "not found")
    is_page(client.get("/no/such/page", headers=PAGE), 404, "Not Found")
    is_page(client.put(f"/projects/{project}/labels", headers=PAGE), 405, "Method Not Allowed")
    # the API keeps answering JSON, whatever the client accepts
    answer = client.get("/api/v1/projects/12345", headers=PAGE)
    assert answer.status_code == 404 and answer.json()["detail"]


def test_a_form_post_when_the_queue_is_down_answers_a_page(tmp_path, data_dir):
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        project_id = make_project(client, headers, ["black", "grizzly"])
        for label in ("black", "grizzly"):
            assert upload(client, headers, project_id, photos(data_dir, label, 2),
                          label=label).status_code == 201
        csrf = sign_in(client)
        answer = client.post(f"/projects/{project_id}/train", data={"csrf_token": csrf},
                             headers=PAGE)
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("text/html")
        assert re.search("queue is not answering", answer.text)


def test_a_body_too_large_on_a_form_is_a_page(tmp_path):
    settings = make_settings(tmp_path, max_body_kb=1)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        csrf = sign_in(client)
        answer = client.post("/projects", data={"csrf_token": csrf, "name": "x" * 4096},
                             headers=PAGE)
        assert answer.status_code == 413
        assert answer.headers["content-type"].startswith("text/html")
        assert "too large" in answer.text
