"""A deployment's logged photos: listing them, each photo, and adding them to the project's
inbox (or a label) through the upload pipeline, the owner's alone."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Deployment, Image, ModelVersion, PredictionLog, utcnow
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

LABELS = ["black", "grizzly"]


@pytest.fixture
def project(client, admin):
    answer = client.post("/api/v1/projects", json={"name": "Bears", "labels": LABELS},
                         headers=admin)
    return answer.json()["id"]


def deploy(client, headers, project_id: int, slug: str) -> int:
    """A deployment of a (stored, unused) model version of the project: its id."""
    with session_scope(client.app.state.session_factory) as session:
        model = ModelVersion(project_id=project_id, backbone="efficientnet_lite0",
                             labels=LABELS, storage_prefix=f"models/{project_id}/x",
                             recipe={}, metrics={"error_rate": 0.1})
        session.add(model)
        session.flush()
        model_id = model.id
    answer = client.post(f"/api/v1/models/{model_id}/deployments",
                         json={"slug": slug, "public": False}, headers=headers)
    assert answer.status_code == 201, answer.text
    with session_scope(client.app.state.session_factory) as session:
        return session.scalar(select(Deployment.id).where(Deployment.slug == slug))


def log(client, deployment_id: int, photos, *, unknown=False, confidence=0.9,
        label="black", minutes_ago=0) -> list[int]:
    """Prediction log rows that kept these photos, as the log buffer writes them: their ids."""
    storage = client.app.state.storage
    ids = []
    with session_scope(client.app.state.session_factory) as session:
        for n, photo in enumerate(photos):
            key = f"predictions/{deployment_id}/{photo.stem}-{n}-{len(ids)}.jpg"
            storage.put(key, photo.read_bytes())
            row = PredictionLog(deployment_id=deployment_id, model_id=1, label=label,
                                confidence=confidence, unknown=unknown, latency_ms=5.0,
                                created_at=utcnow() - timedelta(minutes=minutes_ago + n),
                                image_key=key)
            session.add(row)
            session.flush()
            ids.append(row.id)
        session.add(PredictionLog(deployment_id=deployment_id, model_id=1, label=label,
                                  confidence=confidence, latency_ms=5.0))  # no photo kept
    return ids


@pytest.fixture
def photos(data_dir):
    return sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:3]


def test_logged_photos_list_newest_first_and_filter(client, admin, project, photos):
    deployment = deploy(client, admin, project, "bears")
    sure = log(client, deployment, photos[:1], confidence=0.95, minutes_ago=10)
    unsure = log(client, deployment, photos[1:2], confidence=0.5)
    unknown = log(client, deployment, photos[2:], unknown=True, confidence=0.4, minutes_ago=5)
    everything = client.get("/api/v1/deployments/bears/log", headers=admin).json()
    assert everything["total"] == 3  # the rows without a photo are not listed
    # newest first by when they were logged (not by id: the buffer writes rows in batches)
    assert [item["id"] for item in everything["items"]] == unsure + unknown + sure
    item = everything["items"][1]
    assert item["unknown"] is True and item["label"] == "black" and item["confidence"] == 0.4
    photo = client.get(item["photo_url"], headers=admin)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == photos[2].read_bytes()
    only = client.get("/api/v1/deployments/bears/log?only=unknown", headers=admin).json()
    assert [item["id"] for item in only["items"]] == unknown
    low = client.get("/api/v1/deployments/bears/log?only=low_confidence", headers=admin).json()
    assert {item["id"] for item in low["items"]} == set(unknown + unsure)
    paged = client.get("/api/v1/deployments/bears/log?limit=1&offset=1", headers=admin).json()
    assert [item["id"] for item in paged["items"]] == unknown
    assert client.get("/api/v1/deployments/bears/log?only=odd", headers=admin
                      ).status_code == 422


def test_a_deployment_without_logged_photos_lists_none(client, admin, project):
    deploy(client, admin, project, "quiet")
    answer = client.get("/api/v1/deployments/quiet/log", headers=admin)
    assert answer.status_code == 200
    assert answer.json()["total"] == 0 and answer.json()["items"] == []


def test_added_photos_reach_the_inbox_with_provenance_and_organize(client, admin, project,
                                                                    photos):
    deployment = deploy(client, admin, project, "bears")
    ids = log(client, deployment, photos[:2], unknown=True, confidence=0.3)
    again = log(client, deployment, photos[:1])  # the same photo, logged twice
    answer = client.post("/api/v1/deployments/bears/log/add", json={"ids": ids + again},
                         headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [entry["log_id"] for entry in body["added"]] == ids
    assert [entry["log_id"] for entry in body["duplicates"]] == again
    assert body["rejected"] == []
    inbox = client.get(f"/api/v1/projects/{project}/inbox", headers=admin).json()
    added_ids = {entry["image_id"] for entry in body["added"]}
    assert {item["id"] for item in inbox["items"]} == added_ids
    assert inbox["organize_job"]["status"] == "queued"  # as after an upload to the inbox
    with session_scope(client.app.state.session_factory) as session:
        images = session.query(Image).filter(Image.id.in_(added_ids)).all()
        assert {image.source for image in images} == {"prediction log"}
        assert all(image.provider == "prediction log" for image in images)
        assert all("deployment bears" in image.title and "none of these" in image.title
                   for image in images)
        assert all(image.label_id is None for image in images)
    twice = client.post("/api/v1/deployments/bears/log/add", json={"ids": ids},
                        headers=admin).json()
    assert twice["added"] == [] and len(twice["duplicates"]) == 2


def test_added_with_a_label_are_labelled(client, admin, project, photos):
    deployment = deploy(client, admin, project, "bears")
    ids = log(client, deployment, photos[:1])
    answer = client.post("/api/v1/deployments/bears/log/add",
                         json={"ids": ids, "label": "grizzly"}, headers=admin).json()
    assert [entry["label"] for entry in answer["added"]] == ["grizzly"]
    listed = client.get(f"/api/v1/projects/{project}/images?label=grizzly",
                        headers=admin).json()
    assert [image["id"] for image in listed["images"]] == [answer["added"][0]["image_id"]]


def test_ids_of_another_deployment_are_refused(client, admin, project, photos):
    first = deploy(client, admin, project, "first")
    deploy(client, admin, project, "second")
    ids = log(client, first, photos[:1])
    answer = client.post("/api/v1/deployments/second/log/add", json={"ids": ids + [10**9]},
                         headers=admin).json()
    assert answer["added"] == [] and answer["duplicates"] == []
    assert [entry["log_id"] for entry in answer["rejected"]] == ids + [10**9]
    assert all(entry["reason"] == "not a logged photo of this deployment"
               for entry in answer["rejected"])
    assert client.get(f"/api/v1/deployments/second/log/{ids[0]}/photo",
                      headers=admin).status_code == 404
    assert client.get(f"/api/v1/projects/{project}/images", headers=admin
                      ).json()["images"] == []


def test_a_stranger_gets_404(client, admin, other_user, project, photos):
    deployment = deploy(client, admin, project, "bears")
    ids = log(client, deployment, photos[:1])
    for method, path, body in (("GET", "/api/v1/deployments/bears/log", None),
                               ("GET", f"/api/v1/deployments/bears/log/{ids[0]}/photo", None),
                               ("POST", "/api/v1/deployments/bears/log/add", {"ids": ids})):
        answer = client.request(method, path, json=body, headers=other_user)
        assert answer.status_code == 404 and answer.json()["detail"], path
    assert client.get(f"/api/v1/projects/{project}/inbox", headers=admin).json()["total"] == 0


def test_bad_add_bodies_say_why(client, admin, project, photos):
    deployment = deploy(client, admin, project, "bears")
    ids = log(client, deployment, photos[:1])
    for body in ({"ids": []}, {"ids": list(range(1, 502))}, {"ids": ids, "label": " "},
                 {"ids": ids, "label": "x" * 300}, {"ids": ["a"]}, {"ids": ids, "extra": 1}):
        answer = client.post("/api/v1/deployments/bears/log/add", json=body, headers=admin)
        assert answer.status_code == 422 and answer.json()["detail"], body
    assert client.get(f"/api/v1/projects/{project}/inbox", headers=admin).json()["total"] == 0


def test_the_models_page_keeps_photos_and_offers_the_logged_photos(client, admin, project,
                                                                   photos):
    deployment = deploy(client, admin, project, "bears")
    added = client.post("/api/v1/deployments/bears/log/add", headers=admin,
                        json={"ids": log(client, deployment, photos[:1])}).json()["added"]
    client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    page = client.get(f"/projects/{project}/models")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    assert 'details class="logged" data-slug="bears"' in page.text
    assert '<script type="module" src="/static/logged.js">' in page.text
    assert "keeps no new photos" in page.text
    kept = client.post("/deployments/bears", data={"csrf_token": csrf, "log_images": "true"})
    assert kept.status_code == 200 and "photos kept" in kept.text
    assert "The photos this deployment was sent" in kept.text
    with session_scope(client.app.state.session_factory) as session:
        assert session.get(Deployment, deployment).log_images is True
    image_page = client.get(f"/projects/{project}/images/{added[0]['image_id']}")
    assert "from a deployment&#39;s logged photos" in image_page.text
    assert "deployment bears, prediction" in image_page.text
