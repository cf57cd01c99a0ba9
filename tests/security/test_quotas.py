"""Quotas on expensive work, per user: gathering jobs and trainings queued or running at once
(across projects), open job event streams, and the URL list of an import."""

import asyncio

import pytest
from fastapi.testclient import TestClient

from app.cli import migrate
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings


@pytest.fixture
def quota_app(tmp_path):
    """An app with small quotas, its admin and a second user (API keys)."""
    settings = make_settings(tmp_path, max_active_searches=2, max_active_trainings=1,
                             max_event_streams=1)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        created = client.post("/api/v1/users", headers=admin,
                              json={"email": "b@example.com", "password": "b-password-1"})
        assert created.status_code == 201
        yield client, admin, api_key(client, "b@example.com", "b-password-1")


def new_project(client, headers, name: str) -> int:
    return client.post("/api/v1/projects", json={"name": name}, headers=headers).json()["id"]


def test_gathering_jobs_are_bounded_per_user_across_projects(quota_app):
    client, admin, other = quota_app
    first, second = new_project(client, admin, "a"), new_project(client, admin, "b")
    search = client.post(f"/api/v1/projects/{first}/searches", json={"label": "grizzly"},
                         headers=admin)
    assert search.status_code == 202
    assert client.post(f"/api/v1/projects/{second}/url-imports", headers=admin, json={
        "label": "black", "urls": ["https://x.example/a.jpg"]}).status_code == 202
    refused = client.post(f"/api/v1/projects/{second}/searches", json={"label": "teddy"},
                          headers=admin)
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith(
        "2 searches and URL imports of yours are already queued or running (limit 2")
    labels = client.get(f"/api/v1/projects/{second}", headers=admin).json()["labels"]
    assert [label["name"] for label in labels] == ["black"]  # the refused start left nothing
    theirs = new_project(client, other, "theirs")
    assert client.post(f"/api/v1/projects/{theirs}/searches", json={"label": "x"},
                       headers=other).status_code == 202  # another user has their own quota
    cancel = client.post(f"/api/v1/jobs/{search.json()['id']}/cancel", headers=admin)
    assert cancel.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/projects/{second}/searches", json={"label": "teddy"},
                       headers=admin).status_code == 202


def test_trainings_and_lr_sweeps_share_a_per_user_quota(quota_app, data_dir):
    client, admin, _ = quota_app
    pid = new_project(client, admin, "bears")
    for label in ("black", "grizzly"):
        files = [("files", (p.name, p.read_bytes()))
                 for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[:2]]
        client.post(f"/api/v1/projects/{pid}/images", headers=admin, data={"label": label},
                    files=files)
    assert client.post(f"/api/v1/projects/{pid}/trainings", json={},
                       headers=admin).status_code == 202
    refused = client.post(f"/api/v1/projects/{pid}/lr-find", json={}, headers=admin)
    assert refused.status_code == 429
    assert "trainings and learning-rate sweeps" in refused.json()["detail"]


def test_a_url_import_holds_at_most_1000_urls(quota_app):
    client, admin, _ = quota_app
    pid = new_project(client, admin, "urls")
    urls = [f"https://x.example/{n}.jpg" for n in range(1001)]
    answer = client.post(f"/api/v1/projects/{pid}/url-imports", headers=admin,
                         json={"label": "x", "urls": urls})
    assert answer.status_code == 422
    assert "at most 1000 items" in answer.json()["detail"][0]["msg"]


async def follow(app, job_id: int, headers: dict, answer: dict, started: asyncio.Event,
                 hang_up: asyncio.Event) -> None:
    """GET a job's event stream until `hang_up` is set (the client disconnects)."""
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            started.set()
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    path = f"/api/v1/jobs/{job_id}/events"
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode())
                         for k, v in {**headers, "host": "testserver"}.items()],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
    await app(scope, receive, send)


def test_open_event_streams_are_bounded_per_user(quota_app):
    client, admin, other = quota_app
    mine = client.post(f"/api/v1/projects/{new_project(client, admin, 'a')}/searches",
                       json={"label": "x"}, headers=admin).json()["id"]
    theirs = client.post(f"/api/v1/projects/{new_project(client, other, 'b')}/searches",
                         json={"label": "x"}, headers=other).json()["id"]
    app = client.app

    async def scenario():
        started, hang_up, first = asyncio.Event(), asyncio.Event(), {}
        stream = asyncio.create_task(follow(app, mine, admin, first, started, hang_up))
        await asyncio.wait_for(started.wait(), 10)
        assert first["status"] == 200
        second = {}
        await asyncio.wait_for(follow(app, mine, admin, second, asyncio.Event(),
                                      asyncio.Event()), 10)
        assert second["status"] == 429 and b"limit 1" in second["body"]
        their_start, their_end, their_answer = asyncio.Event(), asyncio.Event(), {}
        their_stream = asyncio.create_task(follow(app, theirs, other, their_answer,
                                                  their_start, their_end))
        await asyncio.wait_for(their_start.wait(), 10)
        assert their_answer["status"] == 200  # the limit is per user
        hang_up.set()
        their_end.set()
        await asyncio.wait_for(asyncio.gather(stream, their_stream), 10)
        assert dict(app.state.event_streams.open) == {}  # both released when they ended
        again_start, again_end, again = asyncio.Event(), asyncio.Event(), {}
        third = asyncio.create_task(follow(app, mine, admin, again, again_start, again_end))
        await asyncio.wait_for(again_start.wait(), 10)
        assert again["status"] == 200
        again_end.set()
        await asyncio.wait_for(third, 10)

    asyncio.run(scenario())
