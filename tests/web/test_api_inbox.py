"""The inbox API's answers to bad input (4xx with a reason, nothing changed), the bulk call's
inbox flag, and imports that reach the inbox."""

import io
import zipfile

import pytest


@pytest.fixture
def project(client, admin):
    return client.post("/api/v1/projects", json={"name": "Pets", "labels": ["cat", "dog"]},
                       headers=admin).json()


def test_bad_inbox_queries_and_accepts_say_why(client, admin, project):
    pid = project["id"]
    assert client.get(f"/api/v1/projects/{pid}/inbox?order=random", headers=admin
                      ).status_code == 422
    assert client.get(f"/api/v1/projects/{pid}/inbox?limit=0", headers=admin).status_code == 422
    for body in ({"min_confidence": 1.5}, {"min_confidence": -0.1}, {}, {"min_confidence": 0.9,
                                                                         "cluster": -1}):
        answer = client.post(f"/api/v1/projects/{pid}/inbox/accept", json=body, headers=admin)
        assert answer.status_code == 422 and answer.json()["detail"], body
    empty = client.post(f"/api/v1/projects/{pid}/inbox/accept", json={"min_confidence": 0},
                        headers=admin)
    assert empty.json() == {"accepted": 0, "changed": [], "undo": {"batches": []}}
    page = client.get(f"/api/v1/projects/{pid}/inbox", headers=admin).json()
    assert page == {"total": 0, "limit": 60, "offset": 0, "items": [], "clusters": [],
                    "model_id": None, "embedded": 0, "pending": 0, "organize_job": None}


def test_bulk_inbox_flag_takes_labels_off_and_undo_puts_them_back(client, admin, project,
                                                                   data_dir):
    pid = project["id"]
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[0]
    added = client.post(f"/api/v1/projects/{pid}/images", data={"label": "cat"}, headers=admin,
                        files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
    image_id = added.json()["added"][0]["image_id"]
    both = client.post(f"/api/v1/projects/{pid}/images/bulk", headers=admin,
                       json={"image_ids": [image_id], "label": "dog", "inbox": True})
    assert both.status_code == 422 and "inbox" in both.json()["detail"]
    off = client.post(f"/api/v1/projects/{pid}/images/bulk", headers=admin,
                      json={"image_ids": [image_id], "inbox": True})
    assert off.status_code == 200 and off.json()["changed"] == [image_id]
    inbox = client.get(f"/api/v1/projects/{pid}/inbox", headers=admin).json()
    assert [item["id"] for item in inbox["items"]] == [image_id]
    for batch in off.json()["undo"]["batches"]:
        assert client.post(f"/api/v1/projects/{pid}/images/bulk", json=batch,
                           headers=admin).status_code == 200
    image = client.get(f"/api/v1/projects/{pid}/images", headers=admin).json()["images"][0]
    assert image["label"] == "cat"
    assert client.get(f"/api/v1/projects/{pid}/inbox", headers=admin).json()["total"] == 0


def test_an_import_into_the_inbox_queues_the_organize_job(client, admin, project, data_dir):
    pid = project["id"]
    photos = sorted((data_dir / "bears" / "teddy").glob("*.jpg"))[:2]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("cat/a.jpg", photos[0].read_bytes())
        archive.writestr("_unlabelled/b.jpg", photos[1].read_bytes())
    answer = client.post(f"/api/v1/projects/{pid}/imports", headers=admin,
                         files=[("file", ("pets.zip", zipped.getvalue(), "application/zip"))])
    assert answer.status_code == 201, answer.text
    inbox = client.get(f"/api/v1/projects/{pid}/inbox", headers=admin).json()
    assert inbox["total"] == 1 and inbox["organize_job"]["status"] == "queued"


def test_the_upload_form_without_a_label_fills_the_inbox_and_organizes(client, data_dir):
    from tests.web.test_pages import sign_in

    csrf = sign_in(client)
    pid = client.post("/api/v1/projects", json={"name": "Pets"},
                      headers={"X-CSRF-Token": csrf}).json()["id"]
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[3]
    answer = client.post(f"/projects/{pid}/upload", data={"csrf_token": csrf, "label": ""},
                         files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))],
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    inbox = client.get(f"/api/v1/projects/{pid}/inbox").json()
    assert inbox["total"] == 1 and inbox["organize_job"]["status"] == "queued"
