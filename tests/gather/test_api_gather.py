"""Gathering endpoints: start jobs (202), validation, ownership, results and duplicates."""

import pytest
from sqlalchemy import select

from app.db import make_engine, make_session_factory
from app.models import Job
from app.services import gather_pipeline, search
from tests.gather.test_gather_pipeline import ListProvider


@pytest.fixture
def project(client, admin):
    return client.post("/api/v1/projects", json={"name": "Bears"}, headers=admin).json()


def test_search_and_url_import_start_jobs(client, admin, project, settings):
    pid = project["id"]
    answer = client.post(f"/api/v1/projects/{pid}/searches",
                         json={"label": "grizzly", "max_images": 20}, headers=admin)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["kind"] == "search" and job["status"] == "queued"
    assert job["params"]["query"] == "grizzly" and job["params"]["provider"] == "duckduckgo"
    labels = client.get(f"/api/v1/projects/{pid}", headers=admin).json()["labels"]
    assert [label["name"] for label in labels] == ["grizzly"]
    answer = client.post(f"/api/v1/projects/{pid}/url-imports",
                         json={"label": "black", "urls": ["https://x.example/a.jpg"]},
                         headers=admin)
    assert answer.status_code == 202 and answer.json()["kind"] == "url_import"
    third = client.post(f"/api/v1/projects/{pid}/searches", json={"label": "teddy"},
                        headers=admin)
    assert third.status_code == 202
    assert client.post(f"/api/v1/projects/{pid}/searches", json={"label": "teddy"},
                       headers=admin).status_code == 429  # at most 3 at once per user


@pytest.mark.parametrize(("path", "body", "status"), [
    ("searches", {"label": "x", "provider": "bing"}, 422),
    ("searches", {"label": "x", "max_images": 5000}, 422),
    ("searches", {}, 422),  # no label (the inbox) needs a query
    ("url-imports", {"label": "x", "urls": []}, 422),
    ("url-imports", {"label": "x", "urls": ["file:///etc/passwd"]}, 422),
])
def test_bad_requests_are_422(client, admin, project, path, body, status):
    answer = client.post(f"/api/v1/projects/{project['id']}/{path}", json=body, headers=admin)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]


def test_other_users_cannot_search_or_read(client, admin, other_user, project):
    pid = project["id"]
    assert client.post(f"/api/v1/projects/{pid}/searches", json={"label": "x"},
                       headers=other_user).status_code == 404
    assert client.get(f"/api/v1/projects/{pid}/duplicates",
                      headers=other_user).status_code == 404
    assert client.get(f"/api/v1/projects/{pid}/search-results", params={"job_id": 1},
                      headers=other_user).status_code == 404


def test_results_and_duplicates_after_a_job(client, admin, project, settings, storage,
                                            photo_server, monkeypatch):
    base, _ = photo_server
    hits = [search.Hit(image_url=f"{base}/photo/bears/black/0001.jpg", title="bear"),
            search.Hit(image_url=f"{base}/missing/x.jpg")]
    monkeypatch.setitem(search.PROVIDERS, "loopback", lambda s: ListProvider(hits))
    pid = project["id"]
    job = client.post(f"/api/v1/projects/{pid}/searches",
                      json={"label": "black", "provider": "loopback"}, headers=admin).json()
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                  job_id=job["id"])
    with factory() as session:
        assert session.scalars(select(Job)).one().status == "succeeded"
    rows = client.get(f"/api/v1/projects/{pid}/search-results", params={"job_id": job["id"]},
                      headers=admin).json()["results"]
    assert [(r["status"], r["reason"]) for r in rows] == [("added", None),
                                                          ("failed", "HTTP 404")]
    assert rows[0]["title"] == "bear" and rows[0]["image_id"]
    assert client.get(f"/api/v1/projects/{pid}/duplicates",
                      headers=admin).json() == {"groups": []}
    assert client.get(f"/api/v1/projects/{pid}/search-results", params={"job_id": 999},
                      headers=admin).status_code == 404
