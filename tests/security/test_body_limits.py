"""Body limits per route, enforced while the body streams in, before it is parsed; upload
routes check the caller, CSRF and the project before they read a byte of the body."""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from app.cli import migrate
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings

CHUNK = 64 * 2**10
LARGE_BODY_ROUTES = {  # (method, path) -> the setting that bounds its body
    ("POST", "/api/v1/projects/{project_id}/images"): "upload",
    ("POST", "/api/v1/projects/{project_id}/imports"): "upload",
    ("POST", "/projects/{project_id}/upload"): "upload",
    ("POST", "/projects/{project_id}/import"): "upload",
    ("POST", "/api/v1/predict/{slug}"): "predict",
    ("POST", "/api/v1/predict/{slug}/batch"): "predict",
    ("POST", "/api/v1/models/{model_id}/predict"): "predict",  # its owner tries a version
}


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "kodiak-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
              f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
              .encode() + data + b"\r\n" for name, filename, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def call(app, method: str, path: str, body: bytes, headers: dict[str, str],
         declare_length: bool = False) -> tuple[int, dict[str, str], bytes, int]:
    """Send `body` to the ASGI app in 64 KB chunks (no Content-Length unless declared):
    the status, headers, answer and how many chunks the app took."""
    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    taken = 0
    answer: dict = {"body": b""}

    async def receive():
        nonlocal taken
        if taken < len(chunks):
            taken += 1
            return {"type": "http.request", "body": chunks[taken - 1],
                    "more_body": taken < len(chunks)}
        await asyncio.sleep(3600)  # the client waits for the answer

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    sent = {k.lower(): v for k, v in headers.items()} | {"host": "testserver"}
    if declare_length:
        sent["content-length"] = str(len(body))
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
             "http_version": "1.1", "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode(), v.encode()) for k, v in sent.items()],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
    return answer["status"], answer["headers"], answer["body"], taken


@pytest.fixture
def small(tmp_path):
    """An app whose JSON/form limit is 64 KB and whose upload limit is 1 MB, signed in."""
    settings = make_settings(tmp_path, max_body_kb=64, max_upload_mb=1, max_predict_mb=1)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        headers = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        project = client.post("/api/v1/projects", json={"name": "p"}, headers=headers).json()
        yield client, headers, project["id"]


def test_only_upload_import_and_predict_routes_take_large_bodies(client):
    from fastapi.routing import iter_route_contexts

    from app.web.limits import BODY_LIMIT

    marked = {(method, route.path): route.openapi_extra[BODY_LIMIT]
              for route in iter_route_contexts(client.app.routes)
              if (getattr(route, "openapi_extra", None) or {}).get(BODY_LIMIT)
              for method in route.methods}
    assert marked == LARGE_BODY_ROUTES
    document = client.get("/api/v1/openapi.json").json()
    upload = document["paths"]["/api/v1/projects/{project_id}/images"]["post"]
    assert upload[BODY_LIMIT] == "upload"  # the OpenAPI document says which routes take more


def test_json_routes_take_small_bodies_declared_or_streamed(small):
    client, headers, pid = small
    body = json.dumps({"name": "x" * (100 * 2**10)}).encode()
    for declared in (True, False):
        status, _, answer, taken = call(client.app, "POST", "/api/v1/projects", body,
                                        {**headers, "content-type": "application/json"},
                                        declare_length=declared)
        assert status == 413
        assert json.loads(answer)["detail"] == ("request body too large "
                                                "(limit 64 KB for this route)")
        assert taken == (0 if declared else 2)  # stopped as soon as the limit was passed
    anonymous = call(client.app, "POST", "/api/v1/session", body,
                     {"content-type": "application/json"}, declare_length=True)
    assert anonymous[0] == 413  # signed in or not


def test_forms_take_small_bodies_and_answer_with_a_page(small):
    client, headers, pid = small
    body, kind = multipart({"name": "x" * (100 * 2**10)}, [])
    status, sent, answer, _ = call(client.app, "POST", "/projects", body,
                                   {"content-type": kind})
    assert status == 413 and sent["content-type"].startswith("text/html")
    assert b"limit 64 KB" in answer


def test_upload_routes_take_up_to_the_upload_limit(small, data_dir):
    client, headers, pid = small
    photo = (data_dir / "bears" / "black" / "0001.jpg").read_bytes()
    padding = b"\0" * (200 * 2**10)  # past the 64 KB of other routes, under 1 MB
    answer = client.post(f"/api/v1/projects/{pid}/images", headers=headers,
                         data={"label": "black"},
                         files=[("files", ("a.jpg", photo)), ("files", ("pad.bin", padding))])
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["added"]) == 1 and len(answer.json()["rejected"]) == 1
    body, kind = multipart({"label": "black"}, [("files", "big.jpg", b"\0" * (3 * 2**20))])
    status, _, answer, taken = call(client.app, "POST", f"/api/v1/projects/{pid}/images",
                                    body, {**headers, "content-type": kind})
    assert status == 413 and b"limit 1 MB" in answer
    assert taken == 17  # 1 MB and one more 64 KB chunk, not the 3 MB


@pytest.mark.parametrize("path", ["/api/v1/projects/{pid}/images",
                                  "/api/v1/projects/{pid}/imports"])
def test_uploads_check_the_caller_before_reading_the_body(small, path):
    client, headers, pid = small
    path = path.format(pid=pid)
    body, kind = multipart({"label": "black"}, [("files", "big.jpg", b"\0" * (512 * 2**10))])
    anonymous = call(client.app, "POST", path, body, {"content-type": kind})
    assert anonymous[0] == 401 and anonymous[3] == 0
    created = client.post("/api/v1/users", headers=headers,
                          json={"email": "b@example.com", "password": "b-password-1"})
    assert created.status_code == 201
    stranger = api_key(client, "b@example.com", "b-password-1")
    other = call(client.app, "POST", path, body, {**stranger, "content-type": kind})
    assert other[0] == 404 and other[3] == 0  # another's project: not found, body unread
    login = client.post("/api/v1/session", json={"email": ADMIN_EMAIL,
                                                 "password": ADMIN_PASSWORD})
    cookie = f"kodiak_session={login.cookies['kodiak_session']}"
    client.cookies.clear()
    no_csrf = call(client.app, "POST", path, body, {"cookie": cookie, "content-type": kind})
    assert no_csrf[0] == 403 and no_csrf[3] == 0


def test_upload_forms_check_user_project_and_origin_before_reading(small):
    client, headers, pid = small
    body, kind = multipart({"csrf_token": "x"}, [("files", "big.jpg", b"\0" * (512 * 2**10))])
    for path in (f"/projects/{pid}/upload", f"/projects/{pid}/import"):
        anonymous = call(client.app, "POST", path, body, {"content-type": kind})
        assert anonymous[0] == 303 and anonymous[1]["location"] == "/login"
        assert anonymous[3] == 0
    signed_in = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                            follow_redirects=False)
    cookie = f"kodiak_session={signed_in.cookies['kodiak_session']}"
    client.cookies.clear()
    foreign = call(client.app, "POST", f"/projects/{pid}/upload", body,
                   {"cookie": cookie, "content-type": kind, "origin": "https://evil.example"})
    assert foreign[0] == 403 and foreign[3] == 0 and b"another site" in foreign[2]
    missing = call(client.app, "POST", f"/projects/{pid + 99}/upload", body,
                   {"cookie": cookie, "content-type": kind})
    assert missing[0] == 404 and missing[3] == 0
    expired = call(client.app, "POST", f"/projects/{pid}/upload", body,
                   {"cookie": cookie, "content-type": kind})
    assert expired[0] == 400 and b"form expired" in expired[2]  # token checked once read
